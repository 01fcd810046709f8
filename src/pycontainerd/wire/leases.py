"""Lease messages <-> :class:`pycontainerd.leases.Lease` and ``Resource``."""

from __future__ import annotations

from pycontainerd.api.services.leases.v1 import leases_pb2 as pb
from pycontainerd.leases import Lease, Resource
from pycontainerd.wire._time import from_timestamp, to_timestamp

__all__ = ["from_pb", "resource_from_pb", "resource_to_pb", "to_pb"]


def to_pb(lease: Lease) -> pb.Lease:
    return pb.Lease(id=lease.id, labels=lease.labels, created_at=to_timestamp(lease.created_at))


def from_pb(msg: pb.Lease) -> Lease:
    return Lease(id=msg.id, labels=dict(msg.labels), created_at=from_timestamp(msg.created_at))


def resource_to_pb(r: Resource) -> pb.Resource:
    return pb.Resource(id=r.id, type=r.type)


def resource_from_pb(msg: pb.Resource) -> Resource:
    return Resource(id=msg.id, type=msg.type)
