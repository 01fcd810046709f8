"""The service edge: one description of each API method, and the one path
every call takes between a transport and the local services.

A :class:`Method` says everything a transport needs to serve a method: its
full name (``/containerd.services.containers.v1.Containers/Get``), request
and response message types, cardinality, and the call -- an API adapter's
function that decodes nothing itself (the transport hands it a message),
calls the local service, and returns or yields response messages.  The
descriptions are built from the generated service descriptors
(:func:`describe`), so names, types and cardinalities are containerd's.

Transports -- the gRPC server (:mod:`pycontainerd.edge.grpc_server`), the
in-process channel (:mod:`pycontainerd.edge.inprocess`) and, with the
runtime, ttrpc -- decode bytes with :func:`decode_request` and run the call
through :func:`unary` or :func:`stream`.  Those take the namespace and lease
metadata into context variables, count the call for ``[metrics]``, and turn
every exception into a :class:`Status`, the one form an error leaves in:
our typed errors with their code and containerd's message suffix; anything
unexpected as ``INTERNAL`` with a short message, its traceback in the log.

Nothing here imports a transport.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from pycontainerd import errdefs, leases, namespaces
from pycontainerd.metrics import REGISTRY

__all__ = [
    "CODES",
    "Call",
    "Cardinality",
    "Frames",
    "Method",
    "Status",
    "decode_request",
    "describe",
    "message_too_large",
    "status_of",
    "stream",
    "unary",
    "unknown_method",
]

log = logging.getLogger(__name__)

CODES = errdefs.CODES
CODE_NAMES: Mapping[int, str] = {v: k for k, v in CODES.items()}


class Cardinality(enum.Enum):
    """How many messages go each way; values are go-grpc-prometheus's call types."""

    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    CLIENT_STREAM = "client_stream"
    BIDI_STREAM = "bidi_stream"

    @property
    def client_streams(self) -> bool:
        return self in (Cardinality.CLIENT_STREAM, Cardinality.BIDI_STREAM)

    @property
    def server_streams(self) -> bool:
        return self in (Cardinality.SERVER_STREAM, Cardinality.BIDI_STREAM)


class Status(Exception):
    """A call's failure as it goes on the wire: a status code and a message.

    Raised by a transport's request reader (a refused or undecodable message)
    as well as made by :func:`status_of`; :func:`unary` and :func:`stream`
    let one through as it is.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def name(self) -> str:
        return CODE_NAMES.get(self.code, "UNKNOWN")


class Frames(tuple[bytes, ...]):
    """Several serialized messages of a preserialized server stream, yielded
    as one item so the transport can put them on the wire in one write.

    A listing of thousands of records sends them a few hundred at a time
    instead of paying the per-message framing and write cost each time.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Call:
    """What a method may know of the call it serves, whatever the transport."""

    #: The request metadata, keys lower-case.
    metadata: tuple[tuple[str, str], ...] = ()
    #: ``time.monotonic()`` by which the caller gives up, if it said.
    deadline: float | None = None

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


#: A method's call: ``(request, call)`` for a unary request, ``(requests,
#: call)`` with an async iterator of requests for a client stream; it returns
#: the response (a coroutine) or yields the responses (an async generator).
Handler = Callable[[Any, Call], Any]


@dataclass(frozen=True, slots=True)
class Method:
    """One API method: everything a transport needs to serve it."""

    #: ``/package.Service/Method``, as gRPC paths and metrics name it.
    name: str
    request: type[Message]
    response: type[Message]
    cardinality: Cardinality
    handler: Handler
    #: The handler returns (or yields) serialized responses (``bytes``, or
    #: :class:`Frames` in a server stream) rather than messages.
    preserialized: bool = False

    @property
    def service(self) -> str:
        return self.name[1:].rpartition("/")[0]


def describe(
    service: ServiceDescriptor,
    handlers: Mapping[str, Handler],
    *,
    preserialized: Iterable[str] = (),
) -> list[Method]:
    """The methods of a generated ``service`` descriptor that ``handlers`` serve.

    ``handlers`` maps method names (``"Get"``) to their calls; a name the
    service does not declare is a programming error.  Methods left out are
    not served (callers get UNIMPLEMENTED, as from containerd).
    """
    by_name = service.methods_by_name
    unknown = (set(handlers) | set(preserialized)) - set(by_name)
    if unknown:
        raise ValueError(f"{service.full_name} has no method {', '.join(sorted(unknown))}")
    raw = set(preserialized)
    methods = []
    for name, handler in handlers.items():
        desc = by_name[name]
        kind = {
            (False, False): Cardinality.UNARY,
            (False, True): Cardinality.SERVER_STREAM,
            (True, False): Cardinality.CLIENT_STREAM,
            (True, True): Cardinality.BIDI_STREAM,
        }[(desc.client_streaming, desc.server_streaming)]
        methods.append(
            Method(
                name=f"/{service.full_name}/{name}",
                request=GetMessageClass(desc.input_type),
                response=GetMessageClass(desc.output_type),
                cardinality=kind,
                handler=handler,
                preserialized=name in raw,
            )
        )
    return methods


# --------------------------------------------------------------------------
# Errors


def status_of(exc: BaseException, method: str) -> Status:
    """The status ``exc`` leaves ``method`` as.

    Our typed errors keep their code and message (with containerd's class
    suffix).  Anything else is a defect of ours: the caller gets INTERNAL
    with a message that names no Python type, and the log gets the traceback.
    """
    if isinstance(exc, Status):
        return exc
    if isinstance(exc, errdefs.ContainerdError):
        return Status(CODES[errdefs.code_name(exc)], errdefs.wire_message(exc))
    log.error("internal error serving %s", method, exc_info=exc)
    return Status(CODES["INTERNAL"], f"internal error serving {method}; see the daemon log")


# --------------------------------------------------------------------------
# Decoding

# containerd's API decodes every Timestamp field as a Go time (gogoproto's
# stdtime), which refuses these; the request then fails to unmarshal.
_MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
_MAX_SECONDS = 253402300800  # 10000-01-01T00:00:00Z
_TIMESTAMP = "google.protobuf.Timestamp"
_HOLDS_TIMESTAMPS: dict[str, bool] = {}


def _holds_timestamps(desc: Any) -> bool:
    """Whether a message of type ``desc`` can hold a Timestamp at any depth."""
    known = _HOLDS_TIMESTAMPS.get(desc.full_name)
    if known is None:
        seen: set[str] = set()
        stack = [desc]
        known = False
        while stack and not known:
            d = stack.pop()
            if d.full_name in seen:
                continue
            seen.add(d.full_name)
            known = d.full_name == _TIMESTAMP
            stack.extend(f.message_type for f in d.fields if f.message_type is not None)
        _HOLDS_TIMESTAMPS[desc.full_name] = known
    return known


def _timestamp_fault(message: Message) -> str | None:
    """Why a Timestamp in ``message`` is one containerd cannot decode, if one is."""
    stack: list[Any] = [message]
    while stack:
        msg = stack.pop()
        if msg.DESCRIPTOR.full_name == _TIMESTAMP:
            if msg.seconds < _MIN_SECONDS:
                return f"timestamp {msg.seconds}s {msg.nanos}ns: before 0001-01-01"
            if msg.seconds >= _MAX_SECONDS:
                return f"timestamp {msg.seconds}s {msg.nanos}ns: after 10000-01-01"
            if not 0 <= msg.nanos < 1_000_000_000:
                return f"timestamp {msg.seconds}s {msg.nanos}ns: nanos not in range [0, 1e9)"
            continue
        for field, value in msg.ListFields():
            sub = field.message_type
            if sub is None or not _holds_timestamps(sub):
                continue
            if sub.GetOptions().map_entry:
                if sub.fields_by_name["value"].message_type is not None:
                    stack.extend(value.values())
            elif field.is_repeated:
                stack.extend(value)
            else:
                stack.append(value)
    return None


def unknown_method(path: str, services: Container[str]) -> Status:
    """UNIMPLEMENTED for a path no method has, in grpc-go's words (every
    transport answers it the same way); ``services`` are the ones served."""
    service, slash, name = path[1:].rpartition("/") if path.startswith("/") else ("", "", "")
    if not slash or not service:
        message = f"malformed method name: {path!r}"
    elif service in services:
        message = f"unknown method {name} for service {service}"
    else:
        message = f"unknown service {service}"
    return Status(CODES["UNIMPLEMENTED"], message)


def message_too_large(size: int, limit: int) -> Status:
    """RESOURCE_EXHAUSTED for a request over the receive limit, as grpc-go words it."""
    return Status(
        CODES["RESOURCE_EXHAUSTED"], f"grpc: received message larger than max ({size} vs. {limit})"
    )


def decode_request(method: Method, data: bytes) -> Message:
    """The request message in ``data``, or ``Status(INTERNAL)`` with
    containerd's reason when containerd could not decode it either."""
    try:
        message = method.request.FromString(data)
    except Exception as exc:
        raise Status(CODES["INTERNAL"], f"failed to decode request: {exc}") from None
    if _holds_timestamps(message.DESCRIPTOR):
        fault = _timestamp_fault(message)
        if fault is not None:
            raise Status(CODES["INTERNAL"], f"failed to decode request: {fault}")
    return message


# --------------------------------------------------------------------------
# Running a call


def _enter(metadata: Iterable[tuple[str, str]]) -> None:
    """Take the namespace and lease headers into this task's context."""
    ns = lease = None
    for key, value in metadata:
        if key == namespaces.GRPC_HEADER:
            ns = value
        elif key == leases.GRPC_HEADER:
            lease = value
    namespaces.set_current(ns)
    leases.set_current(lease)


async def unary(method: Method, request: Any, call: Call) -> Any:
    """Run a method that answers once (unary or client stream).

    ``request`` is the message, or an async iterator of messages for a client
    stream.  Raises :class:`Status` on failure.
    """
    _enter(call.metadata)
    start = time.perf_counter()
    code = "OK"
    try:
        return await method.handler(request, call)
    except BaseException as exc:
        if not isinstance(exc, Exception):
            code = "CANCELLED"
            raise
        status = status_of(exc, method.name)
        code = status.name
        raise status from None
    finally:
        REGISTRY.observe(method.name, code, time.perf_counter() - start, method.cardinality.value)


async def stream(method: Method, request: Any, call: Call) -> AsyncIterator[Any]:
    """Run a method that answers with a stream; raises :class:`Status` on failure."""
    _enter(call.metadata)
    start = time.perf_counter()
    code = "OK"
    responses: AsyncIterable[Any] = method.handler(request, call)
    try:
        async for item in responses:
            yield item
    except BaseException as exc:
        if not isinstance(exc, Exception):
            code = "CANCELLED"
            raise
        status = status_of(exc, method.name)
        code = status.name
        raise status from None
    finally:
        aclose = getattr(responses, "aclose", None)
        if aclose is not None:
            await aclose()
        REGISTRY.observe(method.name, code, time.perf_counter() - start, method.cardinality.value)
