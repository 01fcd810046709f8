"""Content messages <-> :class:`pycontainerd.content.Info` and ``Status``."""

from __future__ import annotations

from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.content import Info, Status
from pycontainerd.wire._time import from_timestamp, to_timestamp

__all__ = ["info_from_pb", "info_to_pb", "status_from_pb", "status_to_pb"]


def info_to_pb(info: Info) -> pb.Info:
    return pb.Info(
        digest=info.digest,
        size=info.size,
        created_at=to_timestamp(info.created_at),
        updated_at=to_timestamp(info.updated_at),
        labels=dict(info.labels),
    )


def info_from_pb(msg: pb.Info) -> Info:
    return Info(
        digest=msg.digest,
        size=msg.size,
        created_at=from_timestamp(msg.created_at),
        updated_at=from_timestamp(msg.updated_at),
        labels=dict(msg.labels),
    )


def status_to_pb(status: Status) -> pb.Status:
    return pb.Status(
        ref=status.ref,
        offset=status.offset,
        total=status.total,
        started_at=to_timestamp(status.started_at),
        updated_at=to_timestamp(status.updated_at),
        expected=status.expected,
    )


def status_from_pb(msg: pb.Status) -> Status:
    return Status(
        ref=msg.ref,
        offset=msg.offset,
        total=msg.total,
        started_at=from_timestamp(msg.started_at),
        updated_at=from_timestamp(msg.updated_at),
        expected=msg.expected,
    )
