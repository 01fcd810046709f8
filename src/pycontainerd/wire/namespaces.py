"""Namespace messages <-> :class:`pycontainerd.metadata.namespaces.Namespace`-like values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pycontainerd.api.services.namespaces.v1 import namespace_pb2 as pb

__all__ = ["NamespaceInfo", "from_pb", "to_pb"]


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


def to_pb(name: str, labels: Mapping[str, str]) -> pb.Namespace:
    return pb.Namespace(name=name, labels=dict(labels))


def from_pb(msg: pb.Namespace) -> NamespaceInfo:
    return NamespaceInfo(name=msg.name, labels=dict(msg.labels))
