"""The lease a request works under, carried as a context variable.

A client that holds a lease sends its id as ``containerd-lease`` metadata;
whatever the request creates (content, ingests, snapshots) is then attached
to that lease, so garbage collection keeps it until the lease goes.

The lease records themselves (:class:`Lease`, :class:`Resource`) are defined
here too, as in containerd's ``leases`` package; the metadata database keeps
them (:mod:`pycontainerd.metadata.leases`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

from pycontainerd.times import EPOCH

__all__ = [
    "DEFAULT_EXPIRATION",
    "EXPIRE_LABEL",
    "GRPC_HEADER",
    "TTRPC_HEADER",
    "Lease",
    "Resource",
    "current",
    "expire_label",
    "lease",
    "random_id",
    "set_current",
]

GRPC_HEADER = "containerd-lease"
TTRPC_HEADER = "containerd-lease-ttrpc"

_current: ContextVar[str | None] = ContextVar("pycontainerd_lease", default=None)


def current() -> str | None:
    """The lease id of this context, or None."""
    return _current.get()


def set_current(lease_id: str | None) -> None:
    """Set the lease for the rest of this task (the service edge does this)."""
    _current.set(lease_id)


@contextlib.contextmanager
def lease(lease_id: str | None) -> Iterator[None]:
    """Run a block under a lease (``with lease("my-lease"): ...``)."""
    token = _current.set(lease_id)
    try:
        yield
    finally:
        _current.reset(token)


# --------------------------------------------------------------------------
# Lease records


#: The label GC reads as a lease's expiry time (RFC 3339).
EXPIRE_LABEL = "containerd.io/gc.expire"

#: How long a lease lives when a client takes one without saying (containerd's WithLease).
DEFAULT_EXPIRATION = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease holds resources (content, ingests, snapshots) back from GC."""

    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: dt.datetime = EPOCH


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource a lease holds: ``type`` is ``content``, ``ingests`` or
    ``snapshots/<snapshotter>``; ``id`` a digest, an ingest ref or a key."""

    id: str
    type: str


def random_id() -> str:
    """A fresh lease id the way containerd makes one: ``<nanoseconds>-<4 chars>``."""
    suffix = base64.urlsafe_b64encode(os.urandom(3)).decode()
    return f"{time.time_ns() % 1_000_000_000}-{suffix}"


def expire_label(after: dt.timedelta, now: dt.datetime | None = None) -> str:
    """The ``containerd.io/gc.expire`` value for a lease ending ``after`` from now."""
    at = (now or dt.datetime.now(dt.UTC)) + after
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
