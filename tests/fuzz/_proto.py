"""Random protobuf messages for every method the daemon's API declares.

Methods come from the generated API's file descriptors (every service under
``pycontainerd.api.services``, and ``grpc.health.v1``), so a method added
to a proto is fuzzed without anyone listing it.  Messages are built field
by field from their descriptors: strings lean on values the daemon knows
(namespaces, digests of content it holds, filter strings, media types,
label keys that drive garbage collection) so requests reach past the first
validation; everything else is random within its wire type.

Mounts are defanged (:func:`defang`): the daemon runs as root and mounts
what a Diff request names, so a random request must never name a real
filesystem, a host path or a bind of one.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import string
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor as pbd
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import strategies as st

import pycontainerd.api.services
from tests.fuzz._filters import filter_strings, filter_texts

__all__ = ["Method", "decodes_in_containerd", "defang", "messages", "methods"]

FD = pbd.FieldDescriptor


@dataclass(frozen=True)
class Method:
    """One RPC: ``/package.Service/Name`` and its request type."""

    path: str
    request: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming


def _modules() -> list[Any]:
    mods = []
    for info in pkgutil.walk_packages(
        pycontainerd.api.services.__path__, pycontainerd.api.services.__name__ + "."
    ):
        if info.name.endswith("_pb2"):
            mods.append(importlib.import_module(info.name))
    mods.append(importlib.import_module("grpc_health.v1.health_pb2"))
    # Types an Any may carry: events, runc options, the shim's own.
    for name in ("container", "content", "image", "namespace", "snapshot", "task"):
        importlib.import_module(f"pycontainerd.api.events.{name}_pb2")
    importlib.import_module("pycontainerd.api.runtime.v2.runc.options.oci_pb2")
    return mods


def methods() -> list[Method]:
    """Every method of every service the API declares, sorted by path."""
    out = []
    for mod in _modules():
        for service in mod.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                out.append(
                    Method(
                        f"/{service.full_name}/{m.name}",
                        message_factory.GetMessageClass(m.input_type),
                        m.client_streaming,
                        m.server_streaming,
                    )
                )
    return sorted(out, key=lambda m: m.path)


# -- values ------------------------------------------------------------------------------

#: Digests of blobs the fuzz writes into the daemon first (see KNOWN_BLOBS),
#: so that requests naming content sometimes find it.
KNOWN_BLOBS = [b"", b"hello", b"{}", b'{"schemaVersion":2,"manifests":[]}']
KNOWN_DIGESTS = ["sha256:" + hashlib.sha256(b).hexdigest() for b in KNOWN_BLOBS]

NAMES = st.sampled_from(
    ["default", "fuzz", "k8s.io", "a", "x-1", "moby", "", "-bad", "a/b", "..", "x" * 77, "Bad_NS"]
)
DIGESTS = st.sampled_from(
    [
        *KNOWN_DIGESTS,
        "sha256:" + "0" * 64,
        "sha256:abc",
        "md5:" + "0" * 32,
        "",
        "sha256:" + "A" * 64,
    ]
)
MEDIA_TYPES = st.sampled_from(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "",
        "text/plain",
    ]
)
LABEL_KEYS = st.sampled_from(
    [
        "containerd.io/gc.root",
        "containerd.io/gc.expire",
        "containerd.io/gc.flat",
        "containerd.io/gc.ref.content.l.0",
        "containerd.io/gc.ref.content.m.0",
        "containerd.io/gc.ref.snapshot.overlayfs",
        "containerd.io/gc.ref.snapshot.native",
        "containerd.io/uncompressed",
        "containerd.io/distribution.source.docker.io",
        "a",
        "",
        "k" * 5000,
    ]
)
LABEL_VALUES = st.sampled_from(
    [*KNOWN_DIGESTS, "2000-01-01T00:00:00Z", "fuzz", "default", "", "x" * 5000, "1"]
)
TOPICS = st.sampled_from(
    ["/tasks/exit", "/containers/create", "/test/event", "", "no-slash", "/", "/a//b", "/a/-b"]
)
TYPE_URLS = [
    "containerd.events.TaskExit",
    "containerd.events.ContainerCreate",
    "containerd.events.NamespaceCreate",
    "containerd.events.ImageCreate",
    "containerd.events.ContentDelete",
    "containerd.events.SnapshotPrepare",
    "containerd.runc.v1.Options",
    "types.containerd.io/opencontainers/runtime-spec/1/Spec",
    "type.googleapis.com/google.protobuf.Empty",
    "",
    "nope",
]
SNAPSHOTTERS = st.sampled_from(["overlayfs", "native", "", "nope", "../x"])
RUNTIMES = st.sampled_from(["io.containerd.runc.v2", "io.containerd.pyrunc.v2", "", "x"])
PATHS = st.sampled_from(["labels", "labels.a", "image", "runtime", "spec", "annotations", "x", ""])

TEXT = st.text(max_size=24)
IDENTIFIER_FIELDS = {
    "id",
    "name",
    "key",
    "parent",
    "ref",
    "snapshot_key",
    "container_id",
    "exec_id",
    "lease",
    "lease_id",
    "namespace",
    "image",
    "ids",
}


def _string_for(field: FD) -> st.SearchStrategy[str]:
    name = field.name
    parent = field.containing_type.full_name if field.containing_type else ""
    if "digest" in name:
        return DIGESTS | TEXT
    if name in ("filters", "filter"):
        return filter_strings | filter_texts
    if "media_type" in name or name == "mediatype":
        return MEDIA_TYPES | TEXT
    if name == "topic":
        return TOPICS | TEXT
    if name == "type_url":
        return st.sampled_from(TYPE_URLS) | TEXT
    if name == "snapshotter":
        return SNAPSHOTTERS | TEXT
    if name == "paths":
        return PATHS | TEXT
    if parent.endswith("Runtime") and name == "name":
        return RUNTIMES | TEXT
    if name in ("uuid", "version", "revision"):
        return TEXT
    if name in IDENTIFIER_FIELDS or name.endswith("_id") or name.endswith("_key"):
        return NAMES | TEXT
    return TEXT | NAMES


_INTS = {
    FD.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    FD.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    FD.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1),
    FD.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    FD.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1),
    FD.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    FD.TYPE_UINT32: (0, (1 << 32) - 1),
    FD.TYPE_FIXED32: (0, (1 << 32) - 1),
    FD.TYPE_UINT64: (0, (1 << 64) - 1),
    FD.TYPE_FIXED64: (0, (1 << 64) - 1),
}


def _scalar(field: FD) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FD.TYPE_STRING:
        return _string_for(field)
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=64) | st.sampled_from(KNOWN_BLOBS)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t in _INTS:
        lo, hi = _INTS[t]
        edges = [v for v in (0, 1, -1, 4096, lo, hi, 1 << 31, 1 << 62) if lo <= v <= hi]
        return (
            st.sampled_from(edges) | st.integers(max(lo, -5), min(hi, 5000)) | st.integers(lo, hi)
        )
    if t == FD.TYPE_FLOAT:
        return st.floats(width=32)
    if t == FD.TYPE_DOUBLE:
        return st.floats()
    if t == FD.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        # Open enums: a number no value names is legal on the wire.
        return st.sampled_from(known) | st.integers(-(1 << 31), (1 << 31) - 1)
    raise TypeError(f"unhandled field type {t} of {field.full_name}")


_MAX_DEPTH = 3
_cache: dict[tuple[str, int], st.SearchStrategy[Message]] = {}


def messages(desc: pbd.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of type ``desc`` with random fields (sub-messages up to a depth)."""
    key = (desc.full_name, depth)
    if key not in _cache:
        _cache[key] = _build(desc, depth)
    return _cache[key]


def _any(depth: int) -> st.SearchStrategy[Message]:
    from google.protobuf import any_pb2, symbol_database

    def packed(url: str) -> st.SearchStrategy[bytes]:
        name = url.removeprefix("type.googleapis.com/")
        try:
            cls = symbol_database.Default().GetSymbol(name)
        except KeyError:
            return st.binary(max_size=64)
        if depth >= _MAX_DEPTH:
            return st.just(b"")
        return messages(cls.DESCRIPTOR, depth + 1).map(lambda m: m.SerializeToString()) | st.binary(
            max_size=32
        )

    urls = st.sampled_from(TYPE_URLS) | TEXT
    return urls.flatmap(
        lambda url: packed(url).map(lambda value: any_pb2.Any(type_url=url, value=value))
    )


def _timestamp() -> st.SearchStrategy[Message]:
    from google.protobuf import timestamp_pb2

    return st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.sampled_from([0, 1_600_000_000, -62135596801, 253402300800, -(1 << 63)])
        | st.integers(-(1 << 63), (1 << 63) - 1),
        nanos=st.sampled_from([0, 999_999_999, 1_000_000_000, -1])
        | st.integers(-(1 << 31), (1 << 31) - 1),
    )


def _build(desc: pbd.Descriptor, depth: int) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(desc)
    if desc.full_name == "google.protobuf.Any":
        return _any(depth)
    if desc.full_name == "google.protobuf.Timestamp":
        return _timestamp()
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
            if key_field.name == "key" and field.name in ("labels", "annotations"):
                keys: st.SearchStrategy[Any] = LABEL_KEYS | TEXT
                values: st.SearchStrategy[Any] = (
                    LABEL_VALUES | TEXT
                    if value_field.type == FD.TYPE_STRING
                    else _value(value_field, depth)
                )
            else:
                keys, values = _scalar(key_field), _value(value_field, depth)
            fields[field.name] = st.dictionaries(keys, values, max_size=3)
        elif field.is_repeated:
            if sub is not None and depth >= _MAX_DEPTH:
                continue
            fields[field.name] = st.lists(_value(field, depth), max_size=3)
        else:
            if sub is not None and depth >= _MAX_DEPTH:
                continue
            fields[field.name] = _value(field, depth)

    def make(values: dict[str, Any]) -> Message:
        msg = cls()
        for name, value in values.items():
            field = desc.fields_by_name[name]
            sub = field.message_type
            if sub is not None and sub.GetOptions().map_entry:
                target = getattr(msg, name)
                for k, v in value.items():
                    if sub.fields_by_name["value"].message_type is not None:
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif field.is_repeated:
                getattr(msg, name).extend(value)
            elif sub is not None:
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries({}, optional=fields).map(make)


def _value(field: FD, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return st.deferred(lambda: messages(field.message_type, depth + 1))
    return _scalar(field)


# -- making random requests safe for the host -------------------------------------------------

#: Mount types a random request may keep: they reach no host data.
_SAFE_MOUNT_TYPES = {"tmpfs", "overlay", "bind", "none", ""}
_SAFE_CHARS = set(string.ascii_letters + string.digits + "._-")


def _defang_path(path: str) -> str:
    return "/nonexistent-fuzz/" + "".join(c if c in _SAFE_CHARS else "_" for c in path)[:40]


def defang(msg: Message) -> Message:
    """``msg`` with every ``containerd.types.Mount`` in it made harmless.

    A mount keeps its shape (type, option names) but every path in it names
    something under ``/nonexistent-fuzz``, and a type that could reach host
    data (proc, sysfs, devices, a block filesystem) becomes an unknown one:
    the daemon then fails the mount, which is the path worth fuzzing.
    """
    for field, value in msg.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        items = value if field.is_repeated else [value]
        for item in items:
            if field.message_type.full_name == "containerd.types.Mount":
                if item.type not in _SAFE_MOUNT_TYPES:
                    item.type = "fuzz-" + item.type
                item.source = _defang_path(item.source)
                options = []
                for opt in item.options:
                    key, eq, val = opt.partition("=")
                    if eq and ("dir" in key or "/" in val):
                        val = ":".join(_defang_path(v) for v in val.split(":"))
                    options.append(key + eq + val)
                del item.options[:]
                item.options.extend(options)
            else:
                defang(item)
    return msg


# -- what containerd could decode -------------------------------------------------------------

_FIRST_SECOND = -62135596800  # 0001-01-01T00:00:00Z
_END_SECOND = 253402300800  # 10000-01-01T00:00:00Z


def decodes_in_containerd(msg: Message) -> bool:
    """Whether containerd 1.6 decodes ``msg``: it reads every Timestamp as a Go
    time (gogoproto's stdtime), refusing years outside 1..9999 and nanos
    outside [0, 1e9) as bytes it cannot unmarshal (INTERNAL)."""
    if msg.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        ts: Any = msg
        return _FIRST_SECOND <= ts.seconds < _END_SECOND and 0 <= ts.nanos < 1_000_000_000
    for field, value in msg.ListFields():
        sub = field.message_type
        if sub is None:
            continue
        if sub.GetOptions().map_entry:
            items = list(value.values()) if sub.fields_by_name["value"].message_type else []
        else:
            items = list(value) if field.is_repeated else [value]
        if not all(decodes_in_containerd(item) for item in items):
            return False
    return True
