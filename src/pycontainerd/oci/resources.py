"""Spec options for cgroups and resources: the cgroup path, memory, CPU,
pids, rlimits, and devices (nodes in ``linux.devices``, rules in the device
cgroup).  See :mod:`pycontainerd.oci.opts` for how options work."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pycontainerd import errdefs
from pycontainerd.oci import devices as _devices
from pycontainerd.oci._sections import (
    cpu_section,
    linux_section,
    memory_section,
    process_section,
    resources_section,
    set_or_drop,
)
from pycontainerd.oci.defaults import Spec, SpecOpt, default_unix_devices

__all__ = [
    "CPU_PERIOD",
    "Rlimit",
    "with_all_devices_allowed",
    "with_cgroup",
    "with_cpu_cfs",
    "with_cpu_shares",
    "with_cpus",
    "with_cpuset_cpus",
    "with_cpuset_mems",
    "with_default_unix_devices",
    "with_devices",
    "with_host_devices",
    "with_linux_device",
    "with_linux_devices",
    "with_memory_limit",
    "with_memory_swap",
    "with_parent_cgroup_devices",
    "with_pids_limit",
    "with_rlimits",
]

#: The CFS period ctr's ``--cpus`` uses, in microseconds.
CPU_PERIOD = 100_000


def with_cgroup(path: str) -> SpecOpt:
    """Use the cgroup ``path`` (the default is ``/<namespace>/<id>``; ``""``
    leaves it to the runtime)."""
    return lambda spec: set_or_drop(linux_section(spec), "cgroupsPath", path)


def with_memory_limit(limit: int) -> SpecOpt:
    """Limit memory to ``limit`` bytes."""

    def opt(spec: Spec) -> None:
        if "linux" in spec:
            # Go stores int64(limit) of a uint64: it wraps.
            memory_section(spec)["limit"] = limit - (1 << 64) if limit >= 1 << 63 else limit

    return opt


def with_memory_swap(swap: int) -> SpecOpt:
    """Limit memory plus swap to ``swap`` bytes (-1: unlimited)."""

    def opt(spec: Spec) -> None:
        memory_section(spec)["swap"] = swap

    return opt


def with_pids_limit(limit: int) -> SpecOpt:
    """Limit the number of processes."""

    def opt(spec: Spec) -> None:
        resources_section(spec)["pids"] = {"limit": limit}

    return opt


def with_cpu_shares(shares: int) -> SpecOpt:
    """Set the CPU shares (relative weight; the kernel's default is 1024)."""

    def opt(spec: Spec) -> None:
        cpu_section(spec)["shares"] = shares

    return opt


def with_cpu_cfs(quota: int, period: int) -> SpecOpt:
    """Set the CFS quota and period, in microseconds (containerd's ``WithCPUCFS``)."""

    def opt(spec: Spec) -> None:
        cpu = cpu_section(spec)
        cpu["quota"], cpu["period"] = quota, period

    return opt


def with_cpus(cpus: float) -> SpecOpt:
    """At most ``cpus`` CPUs' worth of time: quota ``cpus * 100000`` over a
    100000µs period, as ctr's ``--cpus``."""
    if not math.isfinite(cpus) or cpus <= 0:
        raise errdefs.InvalidArgument(f"cpus must be a positive number, not {cpus!r}")
    # Go's int64(cpus * 100000.0) truncates toward zero.
    return with_cpu_cfs(int(cpus * float(CPU_PERIOD)), CPU_PERIOD)


def with_cpuset_cpus(cpus: str) -> SpecOpt:
    """Run on these CPUs (``"0-2,4"``; containerd's ``WithCPUs``)."""
    return lambda spec: set_or_drop(cpu_section(spec), "cpus", cpus)


def with_cpuset_mems(mems: str) -> SpecOpt:
    """Use these memory nodes (containerd's ``WithCPUsMems``)."""
    return lambda spec: set_or_drop(cpu_section(spec), "mems", mems)


@dataclass(frozen=True, slots=True)
class Rlimit:
    """A resource limit: ``type`` is ``RLIMIT_NOFILE``, ``RLIMIT_NPROC``..."""

    type: str
    hard: int
    soft: int


def with_rlimits(*rlimits: Rlimit) -> SpecOpt:
    """Set resource limits, replacing the one of the same type (the default
    spec has ``RLIMIT_NOFILE`` 1024)."""
    for r in rlimits:
        if not r.type.startswith("RLIMIT_") or r.soft > r.hard or r.soft < 0:
            raise errdefs.InvalidArgument(f"invalid rlimit {r.type} soft={r.soft} hard={r.hard}")

    def opt(spec: Spec) -> None:
        process = process_section(spec)
        current = [dict(r) for r in process.get("rlimits") or []]
        for r in rlimits:
            entry = {"type": r.type, "hard": r.hard, "soft": r.soft}
            at = next((i for i, c in enumerate(current) if c.get("type") == r.type), None)
            if at is None:
                current.append(entry)
            else:
                current[at] = entry
        set_or_drop(process, "rlimits", current)

    return opt


# --------------------------------------------------------------------------
# Devices


def _device_rule(device: Mapping[str, Any], access: str) -> dict[str, Any]:
    return {
        "allow": True,
        "type": device["type"],
        "major": device["major"],
        "minor": device["minor"],
        "access": access,
    }


def with_default_unix_devices(spec: Spec) -> None:
    """Allow null, zero, full, random, urandom, tty, console, pts and ptmx."""
    resources = resources_section(spec)
    resources["devices"] = [*(resources.get("devices") or []), *default_unix_devices()]


def with_all_devices_allowed(spec: Spec) -> None:
    """Let the container read, write and create any device node."""
    resources_section(spec)["devices"] = [{"allow": True, "access": "rwm"}]


def with_parent_cgroup_devices(spec: Spec) -> None:
    """Inherit the parent cgroup's device rules (none of our own)."""
    resources_section(spec).pop("devices", None)


def with_host_devices(spec: Spec) -> None:
    """Create every device node of the host's /dev in the container (the
    cgroup rules still decide which may be used)."""
    linux = linux_section(spec)
    set_or_drop(linux, "devices", [*(linux.get("devices") or []), *_devices.host_devices()])


def with_linux_devices(devices: Iterable[Mapping[str, Any]]) -> SpecOpt:
    """Add device nodes (``{path, type, major, minor, fileMode, uid, gid}``),
    without cgroup rules."""
    added = [dict(d) for d in devices]

    def opt(spec: Spec) -> None:
        linux = linux_section(spec)
        set_or_drop(linux, "devices", [*(linux.get("devices") or []), *added])

    return opt


def with_linux_device(path: str, permissions: str = "rwm") -> SpecOpt:
    """Add the host's device ``path`` and allow it in the device cgroup
    (containerd's ``WithLinuxDevice``)."""

    def opt(spec: Spec) -> None:
        device = _devices.device_from_path(path)
        linux = linux_section(spec)
        linux["devices"] = [*(linux.get("devices") or []), device]
        resources = resources_section(spec)
        resources["devices"] = [
            *(resources.get("devices") or []),
            _device_rule(device, permissions),
        ]

    return opt


def with_devices(device_path: str, container_path: str = "", permissions: str = "rwm") -> SpecOpt:
    """Add the device at ``device_path`` — or every device under it, if a
    directory — at ``container_path`` (default: the same path), allowed in
    the device cgroup with ``permissions`` (containerd's ``WithDevices``,
    ctr's ``--device``)."""

    def opt(spec: Spec) -> None:
        found = _devices.devices(device_path, container_path)
        if not found:
            return
        linux = linux_section(spec)
        linux["devices"] = [*(linux.get("devices") or []), *found]
        resources = resources_section(spec)
        resources["devices"] = [
            *(resources.get("devices") or []),
            *(_device_rule(d, permissions) for d in found),
        ]

    return opt
