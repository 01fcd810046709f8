"""The namespace a request works in, carried as a context variable.

Clients put it on the wire as the ``containerd-namespace`` metadata (and
``containerd-namespace-ttrpc`` over ttrpc); the daemon reads it once at the
service edge.  Code that needs one calls :func:`required`, which validates it
with the same errors containerd gives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from pycontainerd import errdefs, identifiers

__all__ = [
    "DEFAULT",
    "GRPC_HEADER",
    "TTRPC_HEADER",
    "current",
    "namespace",
    "required",
    "validate",
]

GRPC_HEADER = "containerd-namespace"
TTRPC_HEADER = "containerd-namespace-ttrpc"
DEFAULT = "default"

_current: ContextVar[str | None] = ContextVar("pycontainerd_namespace", default=None)


def current() -> str | None:
    """The namespace of this context, unvalidated, or None."""
    return _current.get()


def validate(name: str) -> None:
    """Check a namespace name with containerd's identifier rules."""
    try:
        identifiers.validate(name)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"namespace validation: {exc.message}") from None


def required() -> str:
    """The validated namespace of this context; FailedPrecondition when absent."""
    name = _current.get()
    if not name:
        raise errdefs.FailedPrecondition("namespace is required")
    validate(name)
    return name


@contextlib.contextmanager
def namespace(name: str | None) -> Iterator[None]:
    """Run a block in a namespace (``with namespace("prod"): ...``)."""
    token = _current.set(name)
    try:
        yield
    finally:
        _current.reset(token)


def set_current(name: str | None) -> None:
    """Set the namespace for the rest of this task (the service edge does this)."""
    _current.set(name)
