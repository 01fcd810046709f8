"""cgroup v1 statistics, as runc shims report a task's metrics, decoded for ctr's output.

A task's metric is an ``io.containerd.cgroups.v1.Metrics`` message (from
containerd's cgroups library).  We do not ship its generated code for one
command, so :data:`SCHEMA` names its fields -- number, name, kind, in the
order the proto declares them -- and :func:`decode` reads the wire format
by it into dicts shaped as Go's ``encoding/json`` writes the message with
``omitempty`` (zero numbers, empty strings and lists left out; a message
that is present kept, even empty), so ``--format json`` prints what ctr
prints.  Input is one metrics message from the daemon; decoding is linear
in its size and never recurses deeper than the schema.
"""

from __future__ import annotations

from typing import Any

from pycontainerd import errdefs

__all__ = ["SCHEMA", "TYPE_URL", "decode", "table_rows"]

TYPE_URL = "io.containerd.cgroups.v1.Metrics"

# kind: "u64" (varint), "str", a message name; a leading "*" marks a repeated field.
_Field = tuple[int, str, str]
_MEMORY_COUNTERS = [
    "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pg_pg_in", "pg_pg_out",
    "pg_fault", "pg_maj_fault", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "hierarchical_memory_limit", "hierarchical_swap_limit",
]

SCHEMA: dict[str, tuple[_Field, ...]] = {
    "Metrics": (
        (1, "hugetlb", "*HugetlbStat"),
        (2, "pids", "PidsStat"),
        (3, "cpu", "CPUStat"),
        (4, "memory", "MemoryStat"),
        (5, "blkio", "BlkIOStat"),
        (6, "rdma", "RdmaStat"),
        (7, "network", "*NetworkStat"),
        (8, "cgroup_stats", "CgroupStats"),
        (9, "memory_oom_control", "MemoryOomControl"),
    ),
    "HugetlbStat": ((1, "usage", "u64"), (2, "max", "u64"), (3, "failcnt", "u64"),
                    (4, "pagesize", "str")),
    "PidsStat": ((1, "current", "u64"), (2, "limit", "u64")),
    "CPUStat": ((1, "usage", "CPUUsage"), (2, "throttling", "Throttle")),
    "CPUUsage": ((1, "total", "u64"), (2, "kernel", "u64"), (3, "user", "u64"),
                 (4, "per_cpu", "*u64")),
    "Throttle": ((1, "periods", "u64"), (2, "throttled_periods", "u64"),
                 (3, "throttled_time", "u64")),
    "MemoryStat": (
        *((i + 1, name, "u64") for i, name in enumerate(_MEMORY_COUNTERS)),
        *((i + 18, f"total_{name}", "u64") for i, name in enumerate(_MEMORY_COUNTERS[:15])),
        (33, "usage", "MemoryEntry"),
        (34, "swap", "MemoryEntry"),
        (35, "kernel", "MemoryEntry"),
        (36, "kernel_tcp", "MemoryEntry"),
    ),
    "MemoryEntry": ((1, "limit", "u64"), (2, "usage", "u64"), (3, "max", "u64"),
                    (4, "failcnt", "u64")),
    "MemoryOomControl": ((1, "oom_kill_disable", "u64"), (2, "under_oom", "u64"),
                         (3, "oom_kill", "u64")),
    "BlkIOStat": tuple(
        (i + 1, name, "*BlkIOEntry")
        for i, name in enumerate(
            [
                "io_service_bytes_recursive", "io_serviced_recursive", "io_queued_recursive",
                "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
                "io_time_recursive", "sectors_recursive",
            ]
        )
    ),
    "BlkIOEntry": ((1, "op", "str"), (2, "device", "str"), (3, "major", "u64"),
                   (4, "minor", "u64"), (5, "value", "u64")),
    "RdmaStat": ((1, "current", "*RdmaEntry"), (2, "limit", "*RdmaEntry")),
    "RdmaEntry": ((1, "device", "str"), (2, "hca_handles", "u64"), (3, "hca_objects", "u64")),
    "NetworkStat": (
        (1, "name", "str"),
        *((i + 2, name, "u64") for i, name in enumerate(
            [
                "rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "tx_bytes", "tx_packets",
                "tx_errors", "tx_dropped",
            ]
        )),
    ),
    "CgroupStats": tuple(
        (i + 1, name, "u64")
        for i, name in enumerate(
            ["nr_sleeping", "nr_running", "nr_stopped", "nr_uninterruptible", "nr_io_wait"]
        )
    ),
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise errdefs.InvalidArgument("metrics: malformed varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _raw_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, pos = _varint(data, pos)
        elif wire_type == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            value, pos = int.from_bytes(data[pos : pos + width], "little"), pos + width
        else:
            raise errdefs.InvalidArgument(f"metrics: unexpected wire type {wire_type}")
        out.append((number, value))
    return out


def _packed(value: int | bytes) -> list[int]:
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        number, pos = _varint(value, pos)
        out.append(number)
    return out


def decode(data: bytes, message: str = "Metrics") -> dict[str, Any]:
    """The message as Go's JSON of it (see the module doc)."""
    fields = {number: (name, kind) for number, name, kind in SCHEMA[message]}
    values: dict[str, Any] = {}
    for number, value in _raw_fields(data):
        if number not in fields:
            continue  # a newer field: Go would keep it too, but we cannot name it
        name, kind = fields[number]
        repeated = kind.startswith("*")
        kind = kind.lstrip("*")
        if kind == "u64":
            if repeated:
                values.setdefault(name, []).extend(_packed(value))
            elif isinstance(value, int):
                values[name] = value
        elif kind == "str":
            values[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else ""
        elif isinstance(value, bytes):
            decoded = decode(value, kind)
            if repeated:
                values.setdefault(name, []).append(decoded)
            else:
                values[name] = decoded
    # Go's field order and omitempty.
    return {
        name: values[name]
        for _, name, _ in SCHEMA[message]
        if name in values and values[name] not in (0, "", [])
    }


def table_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """ctr's ``printCgroupMetricsTable``: (metric, value) rows."""
    rows: list[tuple[str, str]] = []
    memory = metrics.get("memory")
    if memory is not None:
        usage = memory.get("usage") or {}
        rows += [
            ("memory.usage_in_bytes", str(usage.get("usage", 0))),
            ("memory.limit_in_bytes", str(usage.get("limit", 0))),
            ("memory.stat.cache", str(memory.get("total_cache", 0))),
        ]
    cpu = metrics.get("cpu")
    if cpu is not None:
        usage = cpu.get("usage") or {}
        per_cpu = " ".join(str(n) for n in usage.get("per_cpu", []))
        rows += [("cpuacct.usage", str(usage.get("total", 0))),
                 ("cpuacct.usage_percpu", f"[{per_cpu}]")]
    pids = metrics.get("pids")
    if pids is not None:
        rows += [("pids.current", str(pids.get("current", 0))),
                 ("pids.limit", str(pids.get("limit", 0)))]
    return rows
