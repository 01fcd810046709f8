"""Status codes (gRPC's) and the errors a ttrpc call ends with."""

from __future__ import annotations

import enum

from google.protobuf import any_pb2

__all__ = ["Code", "ConnectionClosed", "ProtocolError", "StatusError", "TTRPCError"]


class Code(enum.IntEnum):
    """gRPC's status codes, which ttrpc carries in ``google.rpc.Status``."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TTRPCError(Exception):
    """Base of this package's errors."""


class StatusError(TTRPCError):
    """A call that ended with a non-OK status.

    A server handler raises it to answer with that status; a client call
    raises it when the server (or the client itself: a deadline, a message
    too large to send) ended the call so.
    """

    def __init__(self, code: int, message: str = "", details: tuple[any_pb2.Any, ...] = ()) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.details = details

    @property
    def code_name(self) -> str:
        try:
            return Code(self.code).name
        except ValueError:
            return f"CODE({self.code})"

    def __str__(self) -> str:
        return f"ttrpc: {self.code_name}: {self.message}"

    def __repr__(self) -> str:
        return f"StatusError({self.code_name}, {self.message!r})"


class ConnectionClosed(TTRPCError):
    """The connection is closed (ttrpc's ``ErrClosed``); calls on it fail."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(message)


class ProtocolError(TTRPCError):
    """The peer sent something ttrpc does not allow (a response that does
    not decode, a data frame on a unary call)."""
