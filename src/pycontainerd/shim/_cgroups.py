"""A container's cgroup: its statistics and its OOM notifications.

The cgroup is found from the init process's ``/proc/<pid>/cgroup`` (as the
Go shim's ``cgroups.PidPath``).  With a unified hierarchy (``/sys/fs/cgroup``
is cgroup2) the statistics are ``io.containerd.cgroups.v2.Metrics`` and an
OOM kill shows as a rising ``oom_kill`` in ``memory.events`` (watched with
inotify); otherwise (v1, or hybrid) they are
``io.containerd.cgroups.v1.Metrics`` and the kernel signals an OOM on an
eventfd registered in ``cgroup.event_control`` against
``memory.oom_control``.  Files that a kernel lacks read as zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from collections.abc import Callable

from google.protobuf.message import Message

from pycontainerd.api.cgroups.v1 import metrics_pb2 as v1
from pycontainerd.api.cgroups.v2 import metrics_pb2 as v2

__all__ = ["Cgroup", "unified"]

_ROOT = "/sys/fs/cgroup"
_USER_HZ = os.sysconf("SC_CLK_TCK")
_NS = 1_000_000_000


def unified() -> bool:
    return os.path.exists(f"{_ROOT}/cgroup.controllers")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _int(path: str) -> int:
    text = _read(path).strip()
    if not text or text == "max":
        return 0
    try:
        return int(text.split()[0])
    except ValueError:
        return 0


def _keyed(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _read(path).splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


class Cgroup:
    """The cgroup of a container, resolved once from its init's pid."""

    def __init__(self, pid: int) -> None:
        self.v2 = unified()
        self.paths: dict[str, str] = {}
        for line in _read(f"/proc/{pid}/cgroup").splitlines():
            hid, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if self.v2 and hid == "0":
                self.paths[""] = f"{_ROOT}{path}"
            elif not self.v2 and controllers:
                for name in controllers.split(","):
                    name = name.removeprefix("name=")
                    for mount in (controllers, name):
                        if os.path.isdir(f"{_ROOT}/{mount}"):
                            self.paths[name] = f"{_ROOT}/{mount}{path}"
                            break
        self._oom_cleanup: Callable[[], None] | None = None

    def _v1(self, controller: str, name: str) -> str:
        return f"{self.paths.get(controller, '/nonexistent')}/{name}"

    def stats(self) -> Message:
        return self._stats_v2() if self.v2 else self._stats_v1()

    def _stats_v1(self) -> v1.Metrics:
        m = v1.Metrics()
        f = self._v1
        m.pids.current = _int(f("pids", "pids.current"))
        m.pids.limit = _int(f("pids", "pids.max"))
        m.cpu.usage.total = _int(f("cpuacct", "cpuacct.usage"))
        m.cpu.usage.per_cpu.extend(
            int(x) for x in _read(f("cpuacct", "cpuacct.usage_percpu")).split() if x.isdigit()
        )
        ticks = _keyed(f("cpuacct", "cpuacct.stat"))
        m.cpu.usage.user = ticks.get("user", 0) * _NS // _USER_HZ
        m.cpu.usage.kernel = ticks.get("system", 0) * _NS // _USER_HZ
        throttle = _keyed(f("cpu", "cpu.stat"))
        m.cpu.throttling.periods = throttle.get("nr_periods", 0)
        m.cpu.throttling.throttled_periods = throttle.get("nr_throttled", 0)
        m.cpu.throttling.throttled_time = throttle.get("throttled_time", 0)
        stat = _keyed(f("memory", "memory.stat"))
        names = {
            "pgpgin": "pg_pg_in",
            "pgpgout": "pg_pg_out",
            "pgfault": "pg_fault",
            "pgmajfault": "pg_maj_fault",
            "hierarchical_memsw_limit": "hierarchical_swap_limit",
            "total_pgpgin": "total_pg_pg_in",
            "total_pgpgout": "total_pg_pg_out",
            "total_pgfault": "total_pg_fault",
            "total_pgmajfault": "total_pg_maj_fault",
        }
        fields = {fd.name for fd in v1.MemoryStat.DESCRIPTOR.fields}
        for key, value in stat.items():
            name = names.get(key, key)
            if name in fields and name not in ("usage", "swap", "kernel", "kernel_tcp"):
                setattr(m.memory, name, value)
        for entry, prefix in (
            (m.memory.usage, "memory"),
            (m.memory.swap, "memory.memsw"),
            (m.memory.kernel, "memory.kmem"),
            (m.memory.kernel_tcp, "memory.kmem.tcp"),
        ):
            entry.usage = _int(f("memory", f"{prefix}.usage_in_bytes"))
            entry.limit = _int(f("memory", f"{prefix}.limit_in_bytes"))
            entry.max = _int(f("memory", f"{prefix}.max_usage_in_bytes"))
            entry.failcnt = _int(f("memory", f"{prefix}.failcnt"))
        oom = _keyed(f("memory", "memory.oom_control"))
        m.memory_oom_control.oom_kill_disable = oom.get("oom_kill_disable", 0)
        m.memory_oom_control.under_oom = oom.get("under_oom", 0)
        m.memory_oom_control.oom_kill = oom.get("oom_kill", 0)
        # Present even with no entries, as containerd's cgroups package sends
        # it: dockerd reports a missing message's lists as null, not [].
        m.blkio.SetInParent()
        for field, name in (
            (m.blkio.io_service_bytes_recursive, "io_service_bytes_recursive"),
            (m.blkio.io_serviced_recursive, "io_serviced_recursive"),
        ):
            text = _read(f("blkio", f"blkio.{name}")) or _read(
                f("blkio", f"blkio.throttle.{name.removesuffix('_recursive')}")
            )
            for line in text.splitlines():
                parts = line.split()
                if len(parts) == 3 and ":" in parts[0]:
                    major, _, minor = parts[0].partition(":")
                    with contextlib.suppress(ValueError):
                        field.add(
                            op=parts[1], major=int(major), minor=int(minor), value=int(parts[2])
                        )
        return m

    def _stats_v2(self) -> v2.Metrics:
        m = v2.Metrics()
        base = self.paths.get("", "/nonexistent")
        m.pids.current = _int(f"{base}/pids.current")
        m.pids.limit = _int(f"{base}/pids.max")
        cpu = _keyed(f"{base}/cpu.stat")
        for name in (
            "usage_usec",
            "user_usec",
            "system_usec",
            "nr_periods",
            "nr_throttled",
            "throttled_usec",
        ):
            setattr(m.cpu, name, cpu.get(name, 0))
        fields = {fd.name for fd in v2.MemoryStat.DESCRIPTOR.fields}
        for key, value in _keyed(f"{base}/memory.stat").items():
            if key in fields:
                setattr(m.memory, key, value)
        m.memory.usage = _int(f"{base}/memory.current")
        m.memory.usage_limit = _int(f"{base}/memory.max")
        m.memory.swap_usage = _int(f"{base}/memory.swap.current")
        m.memory.swap_limit = _int(f"{base}/memory.swap.max")
        m.memory.max_usage = _int(f"{base}/memory.peak")
        m.memory.swap_max_usage = _int(f"{base}/memory.swap.peak")
        events = _keyed(f"{base}/memory.events")
        for name in ("low", "high", "max", "oom", "oom_kill"):
            setattr(m.memory_events, name, events.get(name, 0))
        m.io.SetInParent()  # present even when empty, as blkio in v1
        for line in _read(f"{base}/io.stat").splitlines():
            parts = line.split()
            if not parts or ":" not in parts[0]:
                continue
            major, _, minor = parts[0].partition(":")
            entry = m.io.usage.add(major=int(major), minor=int(minor))
            for pair in parts[1:]:
                key, _, count = pair.partition("=")
                if key in ("rbytes", "wbytes", "rios", "wios") and count.isdigit():
                    setattr(entry, key, int(count))
        return m

    # --- OOM ------------------------------------------------------------------------------------

    def watch_oom(self, on_oom: Callable[[], None]) -> None:
        """Call ``on_oom`` on each OOM kill in the cgroup until :meth:`close`."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            if self.v2:
                self._watch_v2(loop, on_oom)
            elif "memory" in self.paths:
                self._watch_v1(loop, on_oom)

    def _watch_v1(self, loop: asyncio.AbstractEventLoop, on_oom: Callable[[], None]) -> None:
        path = self.paths["memory"]
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            control = os.open(f"{path}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                with open(f"{path}/cgroup.event_control", "w") as f:
                    f.write(f"{efd} {control}")
            finally:
                os.close(control)
        except BaseException:
            os.close(efd)
            raise

        def readable() -> None:
            try:
                os.eventfd_read(efd)
            except OSError:
                return
            # The eventfd also fires when the cgroup goes away.
            if not os.path.exists(path):
                self.close()
                return
            on_oom()

        loop.add_reader(efd, readable)

        def cleanup() -> None:
            loop.remove_reader(efd)
            os.close(efd)

        self._oom_cleanup = cleanup

    def _watch_v2(self, loop: asyncio.AbstractEventLoop, on_oom: Callable[[], None]) -> None:
        events = f"{self.paths['']}/memory.events"
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        in_modify = 0x2
        if libc.inotify_add_watch(fd, events.encode(), in_modify) < 0:
            os.close(fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {events}")
        seen = _keyed(events).get("oom_kill", 0)

        def readable() -> None:
            nonlocal seen
            with contextlib.suppress(OSError):
                while os.read(fd, 4096):
                    pass
            if not os.path.exists(events):
                self.close()
                return
            count = _keyed(events).get("oom_kill", 0)
            if count > seen:
                seen = count
                on_oom()

        loop.add_reader(fd, readable)

        def cleanup() -> None:
            loop.remove_reader(fd)
            os.close(fd)

        self._oom_cleanup = cleanup

    def close(self) -> None:
        cleanup, self._oom_cleanup = self._oom_cleanup, None
        if cleanup is not None:
            cleanup()
