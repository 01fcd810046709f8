"""The OCI runtime spec a container runs with, as containerd generates it.

:func:`generate` starts from :func:`default_spec` (containerd 1.6's default
Linux spec, :mod:`pycontainerd.oci.defaults`) and applies options in order
(:mod:`pycontainerd.oci.opts`, :mod:`~pycontainerd.oci.resources`,
:mod:`~pycontainerd.oci.security` and the default seccomp profile of
:mod:`~pycontainerd.oci.seccomp`, all re-exported here, so
``from pycontainerd.oci import spec as oci`` gives ``oci.generate``,
``oci.with_env``...).

A spec travels as a ``google.protobuf.Any`` whose type URL is
:data:`TYPE_URL` and whose value is the spec's JSON (:func:`to_any`),
with its fields in the order Go's runtime-spec structs declare them and
map keys sorted, as Go's ``encoding/json`` writes it: byte for byte what
containerd's client stores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import any_pb2

from pycontainerd.oci.defaults import (
    DEFAULT_UNIX_ENV,
    MASKED_PATHS,
    READONLY_PATHS,
    VERSION,
    Spec,
    SpecOpt,
    default_mounts,
    default_spec,
    default_unix_devices,
)

# The options are this module's API too (callers write ``oci.with_env``).
from pycontainerd.oci.opts import *  # noqa: F403
from pycontainerd.oci.opts import __all__ as _opts_all
from pycontainerd.oci.resources import *  # noqa: F403
from pycontainerd.oci.resources import __all__ as _resources_all
from pycontainerd.oci.seccomp import with_default_seccomp
from pycontainerd.oci.security import *  # noqa: F403
from pycontainerd.oci.security import __all__ as _security_all

__all__ = [
    "DEFAULT_UNIX_ENV",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "TYPE_URL",
    "VERSION",
    "Spec",
    "SpecOpt",
    "canonical",
    "default_mounts",
    "default_spec",
    "default_unix_devices",
    "from_any",
    "generate",
    "to_any",
    "to_json",
    "with_default_seccomp",
    *_opts_all,
    *_resources_all,
    *_security_all,
]

TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


def generate(namespace: str, id: str, *opts: SpecOpt) -> Spec:
    """The default spec with ``opts`` applied in order, fields in Go's order."""
    spec = default_spec(namespace, id)
    for opt in opts:
        opt(spec)
    return canonical(spec)


# Go's encoding/json escapes these inside strings (HTML safety, and the two
# JavaScript line separators); none can occur outside a string in JSON, so
# replacing them in the whole text touches strings only.
_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def to_json(spec: Mapping[str, Any]) -> bytes:
    """The spec's JSON as Go's ``json.Marshal`` writes it (see the module doc)."""
    text = json.dumps(canonical(spec), separators=(",", ":"), ensure_ascii=False)
    return text.translate(_GO_ESCAPES).encode()


def to_any(spec: Mapping[str, Any]) -> any_pb2.Any:
    """Pack a spec the way containerd stores it: JSON under :data:`TYPE_URL`."""
    return any_pb2.Any(type_url=TYPE_URL, value=to_json(spec))


def from_any(value: any_pb2.Any) -> Spec:
    decoded: Spec = json.loads(value.value)
    return decoded


# --------------------------------------------------------------------------
# Field order: runtime-spec 1.0.2's Go structs.  Each entry names the
# fields of one struct in declaration order, and the struct each field holds
# (a list's items for a list).  Unknown fields keep their place after the
# known ones; ``None`` marks a map, whose keys Go sorts.

_Shape = tuple[tuple[str, ...], Mapping[str, str]]

_SHAPES: dict[str, _Shape] = {
    "spec": (
        (
            "ociVersion",
            "process",
            "root",
            "hostname",
            "mounts",
            "hooks",
            "annotations",
            "linux",
            "solaris",
            "windows",
            "vm",
        ),
        {
            "process": "process",
            "root": "root",
            "mounts": "mount",
            "annotations": "map",
            "linux": "linux",
            "hooks": "hooks",
        },
    ),
    "process": (
        (
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
            "apparmorProfile",
            "oomScoreAdj",
            "selinuxLabel",
        ),
        {"consoleSize": "box", "user": "user", "capabilities": "caps", "rlimits": "rlimit"},
    ),
    "box": (("height", "width"), {}),
    "user": (("uid", "gid", "umask", "additionalGids", "username"), {}),
    "caps": (("bounding", "effective", "inheritable", "permitted", "ambient"), {}),
    "rlimit": (("type", "hard", "soft"), {}),
    "root": (("path", "readonly"), {}),
    "mount": (("destination", "type", "source", "options"), {}),
    "hooks": (
        ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"),
        {
            k: "hook"
            for k in (
                "prestart",
                "createRuntime",
                "createContainer",
                "startContainer",
                "poststart",
                "poststop",
            )
        },
    ),
    "hook": (("path", "args", "env", "timeout"), {}),
    "linux": (
        (
            "uidMappings",
            "gidMappings",
            "sysctl",
            "resources",
            "cgroupsPath",
            "namespaces",
            "devices",
            "seccomp",
            "rootfsPropagation",
            "maskedPaths",
            "readonlyPaths",
            "mountLabel",
            "intelRdt",
            "personality",
        ),
        {
            "uidMappings": "idmap",
            "gidMappings": "idmap",
            "sysctl": "map",
            "resources": "resources",
            "namespaces": "namespace",
            "devices": "device",
            "seccomp": "seccomp",
            "intelRdt": "rdt",
        },
    ),
    "idmap": (("containerID", "hostID", "size"), {}),
    "namespace": (("type", "path"), {}),
    "device": (("path", "type", "major", "minor", "fileMode", "uid", "gid"), {}),
    "resources": (
        (
            "devices",
            "memory",
            "cpu",
            "pids",
            "blockIO",
            "hugepageLimits",
            "network",
            "rdma",
            "unified",
        ),
        {"devices": "devcg", "memory": "memory", "cpu": "cpu", "pids": "pids", "unified": "map"},
    ),
    "devcg": (("allow", "type", "major", "minor", "access"), {}),
    "memory": (
        (
            "limit",
            "reservation",
            "swap",
            "kernel",
            "kernelTCP",
            "swappiness",
            "disableOOMKiller",
            "useHierarchy",
        ),
        {},
    ),
    "cpu": (("shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems"), {}),
    "pids": (("limit",), {}),
    "rdt": (("closID", "l3CacheSchema", "memBwSchema"), {}),
    "seccomp": (
        (
            "defaultAction",
            "defaultErrnoRet",
            "architectures",
            "flags",
            "listenerPath",
            "listenerMetadata",
            "syscalls",
        ),
        {"syscalls": "syscall"},
    ),
    "syscall": (("names", "action", "errnoRet", "args"), {"args": "scarg"}),
    "scarg": (("index", "value", "valueTwo", "op"), {}),
}


def _ordered(value: Any, shape: str) -> Any:
    if isinstance(value, list):
        return [_ordered(item, shape) for item in value]
    if not isinstance(value, dict):
        return value
    if shape == "map":
        return {key: value[key] for key in sorted(value)}
    fields, children = _SHAPES[shape]
    known = [key for key in fields if key in value]
    rest = [key for key in value if key not in fields]
    return {
        key: _ordered(value[key], children[key]) if key in children else value[key]
        for key in known + rest
    }


def canonical(spec: Mapping[str, Any]) -> Spec:
    """A copy of ``spec`` with its fields in Go's order (see the module doc)."""
    result: Spec = _ordered(dict(spec), "spec")
    return result
