"""Snapshot messages <-> :mod:`pycontainerd.snapshots` types.

Besides the record converters, the request builders live here: the daemon's
proxy snapshotter (:mod:`pycontainerd.daemon.proxies`) and the client's
snapshot service both speak the Snapshots service through them, so what
goes on the wire is written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf import field_mask_pb2

from pycontainerd import errdefs
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.snapshots import Info, Kind, Usage
from pycontainerd.wire._time import from_timestamp, to_timestamp

__all__ = [
    "commit_request",
    "info_from_pb",
    "info_to_pb",
    "kind_from_pb",
    "list_request",
    "prepare_request",
    "update_request",
    "usage_from_pb",
    "usage_to_pb",
    "view_request",
]


def kind_from_pb(value: int) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        return Kind.UNKNOWN


def info_to_pb(info: Info) -> pb.Info:
    return pb.Info(
        name=info.name,
        parent=info.parent,
        kind=int(info.kind),  # type: ignore[arg-type]
        created_at=to_timestamp(info.created_at),
        updated_at=to_timestamp(info.updated_at),
        labels=dict(info.labels),
    )


def info_from_pb(msg: pb.Info) -> Info:
    return Info(
        name=msg.name,
        kind=kind_from_pb(msg.kind),
        parent=msg.parent,
        labels=dict(msg.labels),
        created_at=from_timestamp(msg.created_at),
        updated_at=from_timestamp(msg.updated_at),
    )


def usage_to_pb(usage: Usage) -> pb.UsageResponse:
    return pb.UsageResponse(size=usage.size, inodes=usage.inodes)


def usage_from_pb(msg: pb.UsageResponse) -> Usage:
    return Usage(size=msg.size, inodes=msg.inodes)


def prepare_request(
    snapshotter: str, key: str, parent: str, labels: Mapping[str, str] | None
) -> pb.PrepareSnapshotRequest:
    return pb.PrepareSnapshotRequest(
        snapshotter=snapshotter, key=key, parent=parent, labels=dict(labels or {})
    )


def view_request(
    snapshotter: str, key: str, parent: str, labels: Mapping[str, str] | None
) -> pb.ViewSnapshotRequest:
    return pb.ViewSnapshotRequest(
        snapshotter=snapshotter, key=key, parent=parent, labels=dict(labels or {})
    )


def commit_request(
    snapshotter: str, name: str, key: str, labels: Mapping[str, str] | None
) -> pb.CommitSnapshotRequest:
    return pb.CommitSnapshotRequest(
        snapshotter=snapshotter, name=name, key=key, labels=dict(labels or {})
    )


def update_request(
    snapshotter: str, info: Info, fieldpaths: Sequence[str]
) -> pb.UpdateSnapshotRequest:
    req = pb.UpdateSnapshotRequest(snapshotter=snapshotter, info=info_to_pb(info))
    if fieldpaths:
        req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(fieldpaths)))
    return req


def list_request(snapshotter: str, filters: Sequence[str]) -> pb.ListSnapshotsRequest:
    return pb.ListSnapshotsRequest(snapshotter=snapshotter, filters=list(filters))


def update_paths(req: pb.UpdateSnapshotRequest) -> list[str]:
    """The request's field paths (none: replace all labels)."""
    paths = list(req.update_mask.paths) if req.HasField("update_mask") else []
    for path in paths:
        if not path:
            raise errdefs.InvalidArgument("empty field path")
    return paths
