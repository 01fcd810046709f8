"""The daemon's gRPC transport: grpcio-style servicers served by grpclib.

Servicers are written against grpcio's interfaces (generated
``add_XServicer_to_server`` functions, ``grpc.aio.ServicerContext``), which
keeps them usable with any grpcio server and lets the generated code stay
as it is.  The daemon serves them on grpclib instead: grpclib frames
HTTP/2 in the event loop's own thread, where grpcio's core hands every
message across threads.  A server stream of 5,000 small messages
(``ctr containers ls``) costs grpcio about 100 µs of CPU per message and
grpclib about a tenth of that; unary calls cost the same on both.

:class:`GrpclibServer` stands in for ``grpc.aio.Server`` during
registration (it captures the method handlers the generated code
registers) and adapts each handler to a grpclib handler with a byte-level
codec: requests are decoded and responses encoded by the handler's own
(de)serializers, and each incoming message's size is checked against the
configured limit before it is read into memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import grpc
from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from pycontainerd.services._edge import Frames

__all__ = ["AbortError", "GrpclibServer"]

log = logging.getLogger(__name__)

_CARDINALITY = {
    (False, False): Cardinality.UNARY_UNARY,
    (False, True): Cardinality.UNARY_STREAM,
    (True, False): Cardinality.STREAM_UNARY,
    (True, True): Cardinality.STREAM_STREAM,
}


class _Bytes(CodecBase):
    """Messages pass through as bytes; handlers (de)serialize them."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


class AbortError(Exception):
    """Raised by :meth:`_Context.abort`; named as grpc.aio's own, which the
    service edge lets through untouched."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _status(code: grpc.StatusCode) -> Status:
    return Status(code.value[0])


_GRPC_CODES = {Status(code.value[0]): code for code in grpc.StatusCode}


class _Context:
    """The part of ``grpc.aio.ServicerContext`` our servicers use."""

    __slots__ = ("_code", "_details", "_metadata", "_stream", "_write")

    def __init__(self, stream: Stream[Any, Any], write: Callable[[Any], Any]) -> None:
        self._stream = stream
        self._write = write
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._metadata: tuple[tuple[str, Any], ...] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        if self._metadata is None:
            self._metadata = tuple(self._stream.metadata.items()) if self._stream.metadata else ()
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details
        raise AbortError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def peer(self) -> str:
        return "unix:"

    def time_remaining(self) -> float | None:
        deadline = self._stream.deadline
        return None if deadline is None else deadline.time_remaining()

    def cancelled(self) -> bool:
        return False

    async def write(self, message: Any) -> None:
        await self._write(message)


async def _recv(stream: Stream[Any, Any], limit: int) -> bytes | None:
    """One length-prefixed message, refused before it is read when too big."""
    raw = stream._stream  # grpclib's HTTP/2 stream; its own reader has no limit
    head = await raw.recv_data(5)
    if not head:
        return None
    if len(head) != 5:
        raise GRPCError(Status.INTERNAL, "truncated message header")
    compressed, size = struct.unpack(">?I", head)
    if compressed:
        raise GRPCError(Status.UNIMPLEMENTED, "compressed messages are not supported")
    if size > limit:
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED,
            f"grpc: received message larger than max ({size} vs. {limit})",
        )
    data = await raw.recv_data(size) if size else b""
    if len(data) != size:
        raise GRPCError(Status.INTERNAL, "truncated message")
    return bytes(data)


async def _send_frames(stream: Stream[Any, Any], frames: Frames) -> None:
    """Several serialized messages, length-prefixed, in one HTTP/2 write."""
    if not frames:
        return
    if not stream._send_initial_metadata_done:
        await stream.send_initial_metadata()
    pack = struct.Struct(">?I").pack
    await stream._stream.send_data(b"".join([pack(False, len(m)) + m for m in frames]))


class _Undecodable(Exception):
    """Request bytes that are not a message containerd would decode."""


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


def _timestamp_fault(message: Any) -> str | None:
    """Why a Timestamp in ``message`` is one containerd cannot decode, if one is."""
    stack = [message]
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


def _decode(deserialize: Callable[[bytes], Any], data: bytes) -> Any:
    """The request message, or _Undecodable with containerd's reason."""
    try:
        message = deserialize(data)
    except Exception as exc:
        raise _Undecodable(f"failed to decode request: {exc}") from None
    if hasattr(message, "DESCRIPTOR") and _holds_timestamps(message.DESCRIPTOR):
        fault = _timestamp_fault(message)
        if fault is not None:
            raise _Undecodable(f"failed to decode request: {fault}")
    return message


def _adapt(handler: grpc.RpcMethodHandler[Any, Any], limit: int) -> Handler:
    """A grpclib handler running one grpcio method handler."""
    req_stream, resp_stream = handler.request_streaming, handler.response_streaming
    behaviour: Callable[..., Any] | None = {
        (False, False): handler.unary_unary,
        (False, True): handler.unary_stream,
        (True, False): handler.stream_unary,
        (True, True): handler.stream_stream,
    }[(req_stream, resp_stream)]
    if behaviour is None:
        raise ValueError("method handler without a behaviour")
    deserialize = handler.request_deserializer or (lambda b: b)
    serialize = handler.response_serializer or (lambda m: m)

    async def requests(stream: Stream[Any, Any]) -> AsyncIterator[Any]:
        # The servicer iterates these: a refused message must end the call as
        # an AbortError, which passes the service edge untouched, with the
        # status a bad unary request gets (not UNKNOWN, as anything else would).
        while True:
            try:
                data = await _recv(stream, limit)
            except GRPCError as exc:
                raise AbortError(_GRPC_CODES[exc.status], exc.message or "") from None
            if data is None:
                return
            try:
                message = _decode(deserialize, data)
            except _Undecodable as exc:
                raise AbortError(grpc.StatusCode.INTERNAL, str(exc)) from None
            yield message

    async def run(stream: Stream[Any, Any]) -> None:
        async def write(message: Any) -> None:
            await stream.send_message(serialize(message))

        context = _Context(stream, write)
        try:
            if req_stream:
                request: Any = requests(stream)
            else:
                data = await _recv(stream, limit)
                if data is None:
                    raise GRPCError(Status.INTERNAL, "missing request message")
                try:
                    request = _decode(deserialize, data)
                except _Undecodable as exc:
                    raise GRPCError(Status.INTERNAL, str(exc)) from None
            if resp_stream:
                result = behaviour(request, context)
                if hasattr(result, "__aiter__"):
                    async for message in result:
                        if type(message) is Frames:
                            await _send_frames(stream, message)
                        else:
                            await stream.send_message(serialize(message))
                elif asyncio.iscoroutine(result):
                    await result  # a handler that wrote through context.write
            else:
                message = await behaviour(request, context)
                code = context.code()
                if code not in (None, grpc.StatusCode.OK):
                    raise GRPCError(_status(code), context.details() or None)
                await stream.send_message(serialize(message))
        except AbortError as exc:
            raise GRPCError(_status(exc.code), exc.details or None) from None

    return Handler(run, _CARDINALITY[(req_stream, resp_stream)], bytes, bytes)


class _Mapping:
    """What grpclib's Server expects of a service: a ``__mapping__``."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)

    def __mapping__(self) -> dict[str, Handler]:
        return self._handlers


class GrpclibServer:
    """Registration like ``grpc.aio.Server``; serving through grpclib."""

    def __init__(self, *, max_recv_message_size: int) -> None:
        self._limit = max_recv_message_size
        self._handlers: dict[str, Handler] = {}
        self._server: Server | None = None

    # -- what generated add_*_to_server functions call --------------------------

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        pass  # the same handlers arrive by name through the call below

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for name, handler in handlers.items():
            self._handlers[f"/{service}/{name}"] = _adapt(handler, self._limit)

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    # -- serving ----------------------------------------------------------------

    async def start(self, path: str) -> None:
        self._server = Server([_Mapping(self._handlers)], codec=_Bytes())
        await self._server.start(path=path)

    async def stop(self, grace: float) -> None:
        """Stop accepting calls; give running ones ``grace`` seconds, then cancel them."""
        server, self._server = self._server, None
        if server is None:
            return
        if server._server is not None:
            server._server.close()  # no new connections; running calls go on
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_idle(server), grace)
        server.close()
        await server.wait_closed()


async def _idle(server: Server) -> None:
    """Wait until no call is running on ``server`` (check_closed drops finished ones)."""
    while any(not h.check_closed() for h in server._handlers):
        await asyncio.sleep(0.05)
