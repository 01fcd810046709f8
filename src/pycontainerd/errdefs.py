"""The one error hierarchy of pycontainerd and its mapping to gRPC codes.

Every layer raises these classes; the service edge turns them into gRPC
statuses and the client turns statuses back into the same classes, so a
caller catches ``NotFound`` whether the store is local or behind a socket.

On the wire the message ends with the class suffix (``...: not found``), the
way containerd's Go errdefs render errors, so a Go client strips it back off
and our client does the same.  None of these classes inherit from a transport
error type: wrapping is done with ``raise NotFound(...) from exc``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

__all__ = [
    "CODES",
    "Aborted",
    "AlreadyExists",
    "Canceled",
    "Conflict",
    "ContainerdError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "NotImplemented",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "TaskStopTimeout",
    "Unavailable",
    "Unknown",
    "code_name",
    "from_grpc",
    "from_status",
    "q",
    "to_grpc_code",
    "wire_message",
]


#: gRPC's status codes by name: the numbers every transport puts on the wire
#: (read without importing grpc).
CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


class _StatusCode:
    """A class attribute holding a ``grpc.StatusCode``, looked up when first read.

    Importing grpcio costs tens of milliseconds (its core and asyncio); the
    errors are raised and caught where no status is ever built -- pyctr's
    ``--help``, argument checks, the stores -- so only the code that puts an
    error on the wire or takes one off it pays for grpc.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> grpc.StatusCode:
        import grpc

        return grpc.StatusCode[self.name]


class ContainerdError(Exception):
    """Base of all pycontainerd errors; ``code`` is the gRPC status code."""

    code = _StatusCode("UNKNOWN")
    suffix: str = "unknown"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.suffix


class Unknown(ContainerdError):
    pass


class InvalidArgument(ContainerdError):
    code = _StatusCode("INVALID_ARGUMENT")
    suffix = "invalid argument"


class NotFound(ContainerdError):
    code = _StatusCode("NOT_FOUND")
    suffix = "not found"


class AlreadyExists(ContainerdError):
    code = _StatusCode("ALREADY_EXISTS")
    suffix = "already exists"


class FailedPrecondition(ContainerdError):
    code = _StatusCode("FAILED_PRECONDITION")
    suffix = "failed precondition"


class Conflict(FailedPrecondition):
    """A concurrent change got there first; a FailedPrecondition on the wire."""

    suffix = "conflict"


class Unavailable(ContainerdError):
    code = _StatusCode("UNAVAILABLE")
    suffix = "unavailable"


class NotImplemented(ContainerdError):
    code = _StatusCode("UNIMPLEMENTED")
    suffix = "not implemented"


class Aborted(ContainerdError):
    code = _StatusCode("ABORTED")
    suffix = "aborted"


class PermissionDenied(ContainerdError):
    code = _StatusCode("PERMISSION_DENIED")
    suffix = "permission denied"


class ResourceExhausted(ContainerdError):
    code = _StatusCode("RESOURCE_EXHAUSTED")
    suffix = "resource exhausted"


class OutOfRange(ContainerdError):
    """An offset past what exists (containerd's content service says OutOfRange)."""

    code = _StatusCode("OUT_OF_RANGE")
    suffix = "out of range"


class Canceled(ContainerdError):
    code = _StatusCode("CANCELLED")
    suffix = "context canceled"


class DeadlineExceeded(ContainerdError):
    code = _StatusCode("DEADLINE_EXCEEDED")
    suffix = "context deadline exceeded"


class TaskStopTimeout(DeadlineExceeded):
    """A task still ran when its stop's timeout passed (the service facade's
    ``stop_task`` without ``force``); a DEADLINE_EXCEEDED on the wire."""

    suffix = "task stop timeout"


_CLASSES: tuple[type[ContainerdError], ...] = (
    Unknown,
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    NotImplemented,
    Aborted,
    PermissionDenied,
    ResourceExhausted,
    OutOfRange,
    Canceled,
    DeadlineExceeded,
)


@functools.cache
def _by_code() -> dict[grpc.StatusCode, type[ContainerdError]]:
    return {cls.code: cls for cls in _CLASSES}


def to_grpc_code(exc: BaseException) -> grpc.StatusCode:
    """The status code an exception travels as; non-containerd errors are UNKNOWN."""
    return exc.code if isinstance(exc, ContainerdError) else Unknown.code


def code_name(exc: BaseException) -> str:
    """The name of the status code ``exc`` travels as (``NOT_FOUND``), without grpc;
    anything not ours is ``UNKNOWN``."""
    for klass in type(exc).__mro__:
        attr = klass.__dict__.get("code")
        if isinstance(attr, _StatusCode):
            return attr.name
    return "UNKNOWN"


def wire_message(exc: BaseException) -> str:
    """The status message: our message with the class suffix, as Go clients expect."""
    if isinstance(exc, ContainerdError):
        msg = exc.message
        return (
            msg if msg == exc.suffix or msg.endswith(": " + exc.suffix) else f"{msg}: {exc.suffix}"
        )
    return str(exc) or type(exc).__name__


def from_status(code: grpc.StatusCode, details: str | None) -> ContainerdError:
    """Build the exception a status stands for, with the class suffix stripped.

    A subclass that shares its parent's code (``Conflict`` travels as
    FAILED_PRECONDITION) is recognised by its suffix, so the caller gets back
    the class the daemon raised.
    """
    cls = _by_code().get(code, Unknown)
    msg = details or cls.suffix
    # Only this module's classes: a subclass made elsewhere for its own use
    # (the runtime's ShimGone is an Unavailable) must not stand in for ours.
    ours = [k for k in cls.__subclasses__() if k.__module__ == __name__]
    for klass in (*ours, cls):
        if msg == klass.suffix:
            return klass()
        if msg.endswith(": " + klass.suffix):
            return klass(msg[: -len(klass.suffix) - 2])
    return cls(msg)


def from_grpc(exc: grpc.RpcError) -> ContainerdError:
    """Translate a failed call into our hierarchy (use with ``raise ... from exc``)."""
    code = exc.code() if hasattr(exc, "code") else Unknown.code
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return from_status(code, details)


def q(value: str) -> str:
    """Quote a name for a message the way Go's ``%q`` does: ``"web"``."""
    import json

    return json.dumps(value, ensure_ascii=False)
