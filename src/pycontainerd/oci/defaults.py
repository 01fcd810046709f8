"""containerd 1.6's default Linux spec, and the spec's types.

A spec is the runtime-spec JSON as a dict (``Spec``); an option is a
function that changes one in place (``SpecOpt``).  :func:`default_spec` is
what ``oci.WithDefaultSpec()`` then ``oci.WithDefaultUnixDevices`` build
(``populateDefaultUnixSpec``; ctr and the client apply both): root user in
``/``, the default capabilities in the bounding, effective and permitted
sets, ``RLIMIT_NOFILE`` 1024, no new privileges, the standard /proc /dev
/sys /run mounts, new pid/ipc/uts/mount/network namespaces, masked and
read-only /proc paths, the cgroup ``/<namespace>/<id>``, and a device
cgroup that denies everything but the few devices every container needs.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from typing import Any

from pycontainerd.oci import caps

__all__ = [
    "DEFAULT_UNIX_ENV",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "VERSION",
    "Spec",
    "SpecOpt",
    "default_mounts",
    "default_spec",
    "default_unix_devices",
]

Spec = dict[str, Any]
SpecOpt = Callable[[Spec], None]

#: The runtime-spec version containerd 1.6 writes.
VERSION = "1.0.2-dev"

#: The environment a process gets when the image config names none.
DEFAULT_UNIX_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)

READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_NAMESPACES = ("pid", "ipc", "uts", "mount", "network")

# (major, minor) of the character devices every container may use
# (containerd's WithDefaultUnixDevices): null, random, full, tty, zero,
# urandom, console, every pts (minor None: all of them), ptmx.
_UNIX_DEVICES: tuple[tuple[int, int | None], ...] = (
    (1, 3),
    (1, 8),
    (1, 7),
    (5, 0),
    (1, 5),
    (1, 9),
    (5, 1),
    (136, None),
    (5, 2),
)


def mount(destination: str, type: str, source: str, options: Sequence[str]) -> dict[str, Any]:
    """One ``mounts`` entry."""
    return {"destination": destination, "type": type, "source": source, "options": list(options)}


def default_mounts() -> list[dict[str, Any]]:
    """containerd's ``defaultMounts`` (oci/mounts.go)."""
    return [
        mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        mount(
            "/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
        ),
        mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        mount("/run", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
    ]


def default_unix_devices() -> list[dict[str, Any]]:
    """The device cgroup rules ``WithDefaultUnixDevices`` appends."""
    rules: list[dict[str, Any]] = []
    for major, minor in _UNIX_DEVICES:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major}
        if minor is not None:
            rule["minor"] = minor
        rule["access"] = "rwm"
        rules.append(rule)
    return rules


def default_spec(namespace: str, id: str) -> Spec:
    """containerd's default Linux spec for container ``id`` in ``namespace``,
    with the default device rules (``WithDefaultSpec``, ``WithDefaultUnixDevices``)."""
    return {
        "ociVersion": VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {
                "bounding": list(caps.DEFAULT),
                "effective": list(caps.DEFAULT),
                "permitted": list(caps.DEFAULT),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "mounts": default_mounts(),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}, *default_unix_devices()]},
            # Go's filepath.Join("/", ns, id), which cleans the result.
            "cgroupsPath": "/" + posixpath.normpath(f"/{namespace}/{id}").lstrip("/"),
            "namespaces": [{"type": t} for t in _NAMESPACES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
