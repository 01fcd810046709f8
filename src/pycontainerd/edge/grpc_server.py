"""The gRPC transport: the edge's methods served by grpclib.

grpclib frames HTTP/2 in the event loop's own thread, where grpcio's core
hands every message across threads: a server stream of 5,000 small messages
(``ctr containers ls``) costs grpcio about 100 µs of CPU per message and
grpclib about a tenth of that.  Each method becomes a grpclib handler with
a byte-level codec: this module reads each request message itself, refusing
one larger than the configured limit before reading it, decodes it with
:func:`pycontainerd.edge.decode_request`, runs the call through the edge,
and writes the responses, or the :class:`~pycontainerd.edge.Status` the
edge made of a failure.

grpclib has no receive limit and no way to write several messages at once,
so the two helpers that do (:func:`_recv`, :func:`_send_frames`) use its
HTTP/2 stream directly; nothing else here reaches under its API.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from grpclib.const import Cardinality as GrpclibCardinality
from grpclib.const import Handler
from grpclib.const import Status as GrpclibStatus
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from pycontainerd import edge
from pycontainerd.edge import CODES, Call, Cardinality, Frames, Method

__all__ = ["GrpcServer"]

_CARDINALITY = {
    Cardinality.UNARY: GrpclibCardinality.UNARY_UNARY,
    Cardinality.SERVER_STREAM: GrpclibCardinality.UNARY_STREAM,
    Cardinality.CLIENT_STREAM: GrpclibCardinality.STREAM_UNARY,
    Cardinality.BIDI_STREAM: GrpclibCardinality.STREAM_STREAM,
}
_HEADER = struct.Struct(">?I")


class _Bytes(CodecBase):
    """Messages pass through as bytes; the edge (de)serializes them."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


def _grpc_error(status: edge.Status) -> GRPCError:
    return GRPCError(GrpclibStatus(status.code), status.message or None)


async def _recv(stream: Stream[Any, Any], limit: int) -> bytes | None:
    """One length-prefixed message, refused before it is read when too big."""
    raw = stream._stream  # grpclib's own reader reads any size it is told
    head = await raw.recv_data(5)
    if not head:
        return None
    if len(head) != 5:
        raise edge.Status(CODES["INTERNAL"], "truncated message header")
    compressed, size = _HEADER.unpack(head)
    if compressed:
        raise edge.Status(CODES["UNIMPLEMENTED"], "compressed messages are not supported")
    if size > limit:
        raise edge.Status(
            CODES["RESOURCE_EXHAUSTED"],
            f"grpc: received message larger than max ({size} vs. {limit})",
        )
    data = await raw.recv_data(size) if size else b""
    if len(data) != size:
        raise edge.Status(CODES["INTERNAL"], "truncated message")
    return bytes(data)


async def _send_frames(stream: Stream[Any, Any], frames: Frames) -> None:
    """Several serialized messages, length-prefixed, in one HTTP/2 write."""
    if not frames:
        return
    if not stream._send_initial_metadata_done:
        await stream.send_initial_metadata()
    pack = _HEADER.pack
    await stream._stream.send_data(b"".join([pack(False, len(m)) + m for m in frames]))


def _call_of(stream: Stream[Any, Any]) -> Call:
    md = stream.metadata
    metadata = tuple((k, v) for k, v in md.items() if isinstance(v, str)) if md else ()
    deadline = stream.deadline
    return Call(
        metadata=metadata,
        deadline=None if deadline is None else time.monotonic() + deadline.time_remaining(),
    )


def _handler(method: Method, limit: int) -> Handler:
    """A grpclib handler serving ``method`` through the edge."""

    def encode(message: Any) -> bytes:
        return message if method.preserialized else message.SerializeToString()  # type: ignore[no-any-return]

    async def requests(stream: Stream[Any, Any]) -> AsyncIterator[Any]:
        while (data := await _recv(stream, limit)) is not None:
            yield edge.decode_request(method, data)

    async def one_request(stream: Stream[Any, Any]) -> Any:
        data = await _recv(stream, limit)
        if data is None:
            raise edge.Status(CODES["INTERNAL"], "missing request message")
        return edge.decode_request(method, data)

    async def run(stream: Stream[Any, Any]) -> None:
        try:
            request = (
                requests(stream) if method.cardinality.client_streams else await one_request(stream)
            )
            call = _call_of(stream)
            if method.cardinality.server_streams:
                async for message in edge.stream(method, request, call):
                    if type(message) is Frames:
                        await _send_frames(stream, message)
                    else:
                        await stream.send_message(encode(message))
            else:
                await stream.send_message(encode(await edge.unary(method, request, call)))
        except edge.Status as status:
            raise _grpc_error(status) from None

    return Handler(run, _CARDINALITY[method.cardinality], bytes, bytes)


class _Mapping:
    """What grpclib's Server expects of a service: a ``__mapping__``."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self._handlers = handlers

    def __mapping__(self) -> dict[str, Handler]:
        return self._handlers


class GrpcServer:
    """The edge's methods on a unix socket, over gRPC."""

    def __init__(self, methods: Iterable[Method], *, max_recv_message_size: int) -> None:
        self._handlers = {m.name: _handler(m, max_recv_message_size) for m in methods}
        self._server: Server | None = None

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

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
