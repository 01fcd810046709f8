"""Snapshots: the layered filesystems containers run on.

A snapshotter keeps a tree of snapshots, each named by a key: *active*
snapshots are writable and can be committed; *committed* snapshots are
read-only parents for new ones; *views* are read-only and cannot be
committed.  Core snapshotters (``overlayfs``, ``native``, and a proxy to
an external gRPC server, :mod:`pycontainerd.daemon.proxies`) know nothing
of namespaces; the metadata layer (:mod:`pycontainerd.metadata.snapshots`)
wraps each one, scoping keys per namespace, attaching leases and taking
part in garbage collection, as containerd's ``metadata/snapshot.go`` does.

:class:`Snapshotter` is the contract every one of them keeps, core,
namespaced and proxy alike.  Errors are :mod:`pycontainerd.errdefs`
exceptions with containerd's meaning: NotFound for an unknown key,
AlreadyExists for a key in use, FailedPrecondition for committing a view,
removing a snapshot with children, or a parent that is not committed,
InvalidArgument for a bad key or a field path that cannot be updated.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pycontainerd import errdefs
from pycontainerd.mount import Mount
from pycontainerd.times import EPOCH

__all__ = [
    "LABEL_UNPACKED_REF",
    "MAX_KEY_SIZE",
    "Info",
    "Kind",
    "Snapshotter",
    "Usage",
    "validate_key",
]

#: Label a client puts on a snapshot it prepares to unpack a layer into;
#: containerd names it ``containerd.io/snapshot.ref``.
LABEL_UNPACKED_REF = "containerd.io/snapshot.ref"

#: Largest key (or committed name) accepted, in UTF-8 bytes.
MAX_KEY_SIZE = 4096


class Kind(enum.IntEnum):
    """containerd's snapshot kinds, numbered as on the wire."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    def __str__(self) -> str:  # ctr prints "Committed", "Active", "View"
        return self.name.capitalize()


@dataclass(frozen=True, slots=True)
class Info:
    """What a snapshotter knows of one snapshot."""

    name: str
    kind: Kind
    parent: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: dt.datetime = EPOCH
    updated_at: dt.datetime = EPOCH


@dataclass(frozen=True, slots=True)
class Usage:
    """Disk used by a snapshot's own layer (not its parents)."""

    size: int = 0
    inodes: int = 0

    def add(self, other: Usage) -> Usage:
        return Usage(self.size + other.size, self.inodes + other.inodes)


@runtime_checkable
class Snapshotter(Protocol):
    """The operations every snapshotter offers (containerd's ``snapshots.Snapshotter``)."""

    async def stat(self, key: str) -> Info: ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Replace labels (``labels`` or ``labels.<key>`` field paths; all
        labels when none are given); the other fields cannot change."""
        ...

    async def usage(self, key: str) -> Usage: ...

    async def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or a view."""
        ...

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create an active snapshot on ``parent`` (a committed name, or "")."""
        ...

    async def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create a read-only view of ``parent``."""
        ...

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Turn the active snapshot ``key`` into the committed ``name``."""
        ...

    async def remove(self, key: str) -> None:
        """Remove a snapshot that has no children."""
        ...

    def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Every snapshot matching any of ``filters`` (containerd's filter
        language over ``name``, ``parent``, ``kind``, ``labels.*``)."""
        ...

    async def cleanup(self) -> None:
        """Remove directories no snapshot owns (left by a crash or a removal)."""
        ...

    async def close(self) -> None: ...


def validate_key(key: str, what: str = "key") -> None:
    """Reject keys that are empty, oversized or not plain text.

    Part of the contract: the metadata layer checks a client's key before
    it scopes it, and a local snapshotter checks the key it is handed.
    """
    if not isinstance(key, str) or not key:
        raise errdefs.InvalidArgument(f"snapshot {what} must not be empty")
    if "\x00" in key:
        raise errdefs.InvalidArgument(f"snapshot {what} {errdefs.q(key[:64])}: contains NUL")
    if len(key) * 4 > MAX_KEY_SIZE and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_SIZE:
        raise errdefs.InvalidArgument(
            f"snapshot {what} longer than {MAX_KEY_SIZE} bytes: {errdefs.q(key[:64])}"
        )
