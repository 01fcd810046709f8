"""The lease a request works under, carried as a context variable.

A client that holds a lease sends its id as ``containerd-lease`` metadata;
whatever the request creates (content, ingests, snapshots) is then attached
to that lease, so garbage collection keeps it until the lease goes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["GRPC_HEADER", "TTRPC_HEADER", "current", "lease", "set_current"]

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
