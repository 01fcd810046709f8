"""The OCI runtime spec a container runs with, as containerd generates it.

:func:`default_spec` is containerd 1.6's default Linux spec (what
``oci.WithDefaultSpec()`` builds): root user, the default capability set, the
standard /proc /dev /sys mounts, the default device cgroup rules, masked and
read-only paths, and new pid/ipc/uts/mount/network namespaces.  Options are
plain functions that change the spec in place (``with_process_args("sh")``),
composed by :func:`generate`.

A spec travels as a ``google.protobuf.Any`` whose type URL is
:data:`TYPE_URL` and whose value is the spec's JSON (:func:`to_any`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import any_pb2

__all__ = [
    "TYPE_URL",
    "VERSION",
    "SpecOpt",
    "default_spec",
    "from_any",
    "generate",
    "to_any",
    "with_add_capabilities",
    "with_annotations",
    "with_drop_capabilities",
    "with_env",
    "with_host_hosts_file",
    "with_host_namespace",
    "with_host_resolvconf",
    "with_memory_limit",
    "with_new_privileges",
    "with_process_args",
    "with_process_cwd",
    "with_readonly_rootfs",
    "with_root_path",
    "with_tty",
]

TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
#: The runtime-spec version containerd 1.6 writes.
VERSION = "1.0.2-dev"

Spec = dict[str, Any]
SpecOpt = Callable[[Spec], None]

_DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# (type, major, minor): null, zero, full, tty, random, urandom, tty0..., ptmx.
_DEFAULT_DEVICES: tuple[tuple[int, int | None], ...] = (
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

_MASKED_PATHS = (
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

_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def _mount(destination: str, type: str, source: str, options: Sequence[str]) -> dict[str, Any]:
    return {"destination": destination, "type": type, "source": source, "options": list(options)}


def _default_mounts() -> list[dict[str, Any]]:
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        _mount(
            "/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
        ),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        _mount("/run", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
    ]


def _default_devices() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for major, minor in _DEFAULT_DEVICES:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major}
        if minor is not None:
            rule["minor"] = minor
        rule["access"] = "rwm"
        rules.append(rule)
    return rules


def default_spec(namespace: str, id: str) -> Spec:
    """containerd's default Linux spec for container ``id`` in ``namespace``."""
    return {
        "ociVersion": VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {
                "bounding": list(_DEFAULT_CAPS),
                "effective": list(_DEFAULT_CAPS),
                "permitted": list(_DEFAULT_CAPS),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "mounts": _default_mounts(),
        "linux": {
            "resources": {"devices": _default_devices()},
            "cgroupsPath": f"/{namespace}/{id}",
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": list(_MASKED_PATHS),
            "readonlyPaths": list(_READONLY_PATHS),
        },
    }


def generate(namespace: str, id: str, *opts: SpecOpt) -> Spec:
    """The default spec with ``opts`` applied in order."""
    spec = default_spec(namespace, id)
    for opt in opts:
        opt(spec)
    return spec


def to_any(spec: Mapping[str, Any]) -> any_pb2.Any:
    """Pack a spec the way containerd stores it: JSON under :data:`TYPE_URL`."""
    return any_pb2.Any(type_url=TYPE_URL, value=json.dumps(spec, separators=(",", ":")).encode())


def from_any(value: any_pb2.Any) -> Spec:
    decoded: Spec = json.loads(value.value)
    return decoded


# --------------------------------------------------------------------------
# Options


def _process(spec: Spec) -> dict[str, Any]:
    process: dict[str, Any] = spec.setdefault("process", {})
    return process


def _ordered_process(spec: Spec, key: str, value: Any) -> None:
    """Set a process field keeping runtime-spec's field order (terminal first...)."""
    order = (
        "terminal",
        "consoleSize",
        "user",
        "args",
        "commandLine",
        "env",
        "cwd",
        "capabilities",
        "rlimits",
        "noNewPrivileges",
    )
    process = _process(spec)
    process[key] = value
    known = [k for k in order if k in process]
    rest = [k for k in process if k not in order]
    spec["process"] = {k: process[k] for k in known + rest}


def with_process_args(*args: str) -> SpecOpt:
    return lambda spec: _ordered_process(spec, "args", list(args))


def with_process_cwd(cwd: str) -> SpecOpt:
    return lambda spec: _ordered_process(spec, "cwd", cwd)


def with_env(env: Iterable[str]) -> SpecOpt:
    """Add ``KEY=value`` entries, replacing entries with the same key."""
    items = list(env)

    def opt(spec: Spec) -> None:
        if not items:
            return
        current: list[str] = list(_process(spec).get("env") or [])
        for item in items:
            key = item.split("=", 1)[0]
            current = [e for e in current if e.split("=", 1)[0] != key]
            current.append(item)
        _ordered_process(spec, "env", current)

    return opt


def with_tty(spec: Spec) -> None:
    """Give the process a terminal (and ``TERM=xterm``)."""
    _ordered_process(spec, "terminal", True)
    with_env(["TERM=xterm"])(spec)


def with_root_path(path: str) -> SpecOpt:
    def opt(spec: Spec) -> None:
        root = spec.setdefault("root", {})
        root["path"] = path

    return opt


def with_readonly_rootfs(spec: Spec) -> None:
    spec.setdefault("root", {})["readonly"] = True


def with_annotations(annotations: Mapping[str, str]) -> SpecOpt:
    def opt(spec: Spec) -> None:
        if not annotations:
            return
        current = spec.get("annotations") or {}
        current.update(annotations)
        items = list(spec.items())
        if "annotations" not in spec:
            # runtime-spec puts annotations after mounts, before linux.
            at = next((i for i, (k, _) in enumerate(items) if k == "linux"), len(items))
            items.insert(at, ("annotations", current))
            spec.clear()
            spec.update(items)
        else:
            spec["annotations"] = current

    return opt


def with_host_namespace(kind: str) -> SpecOpt:
    """Share the host's namespace of ``kind`` (``network``, ``pid``...)."""

    def opt(spec: Spec) -> None:
        linux = spec.setdefault("linux", {})
        linux["namespaces"] = [n for n in linux.get("namespaces", []) if n.get("type") != kind]

    return opt


def with_host_hosts_file(spec: Spec) -> None:
    spec.setdefault("mounts", []).append(
        _mount("/etc/hosts", "bind", "/etc/hosts", ["rbind", "ro"])
    )


def with_host_resolvconf(spec: Spec) -> None:
    spec.setdefault("mounts", []).append(
        _mount("/etc/resolv.conf", "bind", "/etc/resolv.conf", ["rbind", "ro"])
    )


def with_new_privileges(spec: Spec) -> None:
    """Let the process gain privileges (drops ``noNewPrivileges``)."""
    _process(spec).pop("noNewPrivileges", None)


def with_memory_limit(limit: int) -> SpecOpt:
    def opt(spec: Spec) -> None:
        resources = spec.setdefault("linux", {}).setdefault("resources", {})
        resources.setdefault("memory", {})["limit"] = limit

    return opt


def _caps(spec: Spec) -> dict[str, list[str]]:
    caps: dict[str, list[str]] = _process(spec).setdefault("capabilities", {})
    return caps


def with_add_capabilities(names: Iterable[str]) -> SpecOpt:
    wanted = list(names)

    def opt(spec: Spec) -> None:
        caps = _caps(spec)
        for key in ("bounding", "effective", "permitted"):
            current = caps.setdefault(key, [])
            current.extend(c for c in wanted if c not in current)

    return opt


def with_drop_capabilities(names: Iterable[str]) -> SpecOpt:
    dropped = set(names)

    def opt(spec: Spec) -> None:
        caps = _caps(spec)
        for key in ("bounding", "effective", "permitted"):
            caps[key] = [c for c in caps.get(key, []) if c not in dropped]

    return opt
