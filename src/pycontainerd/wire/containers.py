"""Container messages <-> :class:`pycontainerd.containers.Container`."""

from __future__ import annotations

from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.containers import Container, RuntimeInfo
from pycontainerd.wire._time import from_timestamp, to_timestamp

__all__ = ["from_pb", "to_pb"]


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
