"""Container messages <-> :class:`pycontainerd.containers.Container`.

Listings take a shortcut: :func:`encode_raw` writes a
:class:`~pycontainerd.containers.RawContainer` straight to the bytes of a
``Container`` message, embedding its stored ``Any`` values as they are, and
:func:`list_message` / :func:`list_response` frame those bytes as the
``ListStream`` and ``List`` responses.  The containers service sends them
pre-serialized; a spec is never decoded to be listed.
"""

from __future__ import annotations

from collections.abc import Iterable

from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.containers import Container, RawContainer, RuntimeInfo
from pycontainerd.wire import _protowire as w
from pycontainerd.wire._time import from_timestamp, to_timestamp

__all__ = ["encode_raw", "from_pb", "list_message", "list_response", "to_pb"]


def to_pb(c: Container) -> pb.Container:
    msg = pb.Container(
        id=c.id,
        labels=c.labels,
        image=c.image,
        runtime=pb.Container.Runtime(name=c.runtime.name, options=c.runtime.options),
        spec=c.spec,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        created_at=to_timestamp(c.created_at),
        updated_at=to_timestamp(c.updated_at),
    )
    if c.extensions:
        for name, ext in c.extensions.items():
            msg.extensions[name].CopyFrom(ext)
    return msg


def from_pb(msg: pb.Container) -> Container:
    runtime = msg.runtime
    return Container(
        id=msg.id,
        labels=dict(msg.labels),
        image=msg.image,
        runtime=RuntimeInfo(
            name=runtime.name, options=runtime.options if runtime.HasField("options") else None
        ),
        spec=msg.spec if msg.HasField("spec") else None,
        snapshotter=msg.snapshotter,
        snapshot_key=msg.snapshot_key,
        created_at=from_timestamp(msg.created_at),
        updated_at=from_timestamp(msg.updated_at),
        extensions=dict(msg.extensions),
    )


# Field keys, numbered as the generated descriptors say (map entries are
# always key = 1, value = 2).
_C = pb.Container.DESCRIPTOR.fields_by_name
_ID, _LABELS, _IMAGE, _RUNTIME, _SPEC, _SNAPSHOTTER, _SNAPSHOT_KEY = (
    w.key(_C[name].number)
    for name in ("id", "labels", "image", "runtime", "spec", "snapshotter", "snapshot_key")
)
_CREATED_AT, _UPDATED_AT, _EXTENSIONS = (
    w.key(_C[name].number) for name in ("created_at", "updated_at", "extensions")
)
_R = pb.Container.Runtime.DESCRIPTOR.fields_by_name
_RUNTIME_NAME, _RUNTIME_OPTIONS = w.key(_R["name"].number), w.key(_R["options"].number)
_ENTRY_KEY, _ENTRY_VALUE = w.key(1), w.key(2)
_STREAMED = w.key(pb.ListContainerMessage.DESCRIPTOR.fields_by_name["container"].number)
_LISTED = w.key(pb.ListContainersResponse.DESCRIPTOR.fields_by_name["containers"].number)


def encode_raw(c: RawContainer) -> bytes:
    """The serialized ``Container`` message for ``c``: what ``to_pb`` gives, pre-encoded."""
    runtime = w.string(_RUNTIME_NAME, c.runtime_name)
    if c.runtime_options is not None:
        runtime += w.delimited(_RUNTIME_OPTIONS, c.runtime_options)
    parts = [w.string(_ID, c.id)]
    if c.labels:
        for name, value in c.labels.items():
            entry = w.string(_ENTRY_KEY, name) + w.string(_ENTRY_VALUE, value)
            parts.append(w.delimited(_LABELS, entry))
    parts += (
        w.string(_IMAGE, c.image),
        w.delimited(_RUNTIME, runtime),
        b"" if c.spec is None else w.delimited(_SPEC, c.spec),
        w.string(_SNAPSHOTTER, c.snapshotter),
        w.string(_SNAPSHOT_KEY, c.snapshot_key),
        w.timestamp(_CREATED_AT, c.created_at),
        w.timestamp(_UPDATED_AT, c.updated_at),
    )
    if c.extensions:
        for name, ext in c.extensions.items():
            entry = w.string(_ENTRY_KEY, name) + w.delimited(_ENTRY_VALUE, ext)
            parts.append(w.delimited(_EXTENSIONS, entry))
    return b"".join(parts)


def list_message(c: RawContainer) -> bytes:
    """A serialized ``ListContainerMessage`` carrying ``c``."""
    return w.delimited(_STREAMED, encode_raw(c))


def list_response(containers: Iterable[RawContainer]) -> bytes:
    """A serialized ``ListContainersResponse`` carrying ``containers`` in order."""
    return b"".join([w.delimited(_LISTED, encode_raw(c)) for c in containers])
