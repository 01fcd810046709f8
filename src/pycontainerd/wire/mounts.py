"""Mount messages <-> :class:`pycontainerd.mount.Mount`."""

from __future__ import annotations

from collections.abc import Iterable

from pycontainerd.api.types import mount_pb2
from pycontainerd.mount import Mount

__all__ = ["from_pb", "list_from_pb", "list_to_pb", "to_pb"]


def to_pb(m: Mount) -> mount_pb2.Mount:
    return mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options)


def from_pb(msg: mount_pb2.Mount) -> Mount:
    return Mount(type=msg.type, source=msg.source, options=tuple(msg.options), target=msg.target)


def list_to_pb(mounts: Iterable[Mount]) -> list[mount_pb2.Mount]:
    return [to_pb(m) for m in mounts]


def list_from_pb(msgs: Iterable[mount_pb2.Mount]) -> list[Mount]:
    return [from_pb(m) for m in msgs]
