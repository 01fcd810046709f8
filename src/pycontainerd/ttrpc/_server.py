"""The ttrpc server: methods by service and name, served on unix sockets."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pycontainerd.ttrpc._channel import Channel, Inbox, oversized_message
from pycontainerd.ttrpc._errors import Code, ConnectionClosed, StatusError, TTRPCError
from pycontainerd.ttrpc._wire import (
    FLAG_NO_DATA,
    FLAG_REMOTE_CLOSED,
    FLAG_REMOTE_OPEN,
    MAX_MESSAGE_LENGTH,
    EnvelopeError,
    Frame,
    MessageType,
    Oversized,
    Response,
    WireStatus,
    decode_request,
    encode_response,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_STREAMS",
    "Handler",
    "Server",
    "ServerContext",
]

log = logging.getLogger(__name__)

#: Streams (calls) one connection may have running at once.  ttrpc sets no
#: limit; a shim's connection carries a Wait per process, so leave room.
DEFAULT_MAX_STREAMS = 1024
#: Connections a server holds at once; past that, new ones are closed.
DEFAULT_MAX_CONNECTIONS = 4096
#: Calls past ``max_streams`` wait for a slot, up to this many per slot and
#: this many bytes of requests; past that they are refused.
WAITING_PER_STREAM = 16
WAITING_BYTES = 16 << 20
#: The most of a name echoed back in an error message.
_NAME_ECHO = 256


@dataclass(frozen=True, slots=True)
class ServerContext:
    """What a handler may know of the call it serves."""

    service: str
    method: str
    #: The request's metadata pairs as sent (keys as the client wrote them).
    metadata: tuple[tuple[str, str], ...] = ()
    #: ``time.monotonic()`` by which the caller gives up (its timeout_nano).
    deadline: float | None = None

    def get(self, key: str) -> str | None:
        """The first value of ``key`` (compared case-insensitively), as
        ttrpc's ``GetMetadataValue``."""
        key = key.lower()
        for k, v in self.metadata:
            if k.lower() == key:
                return v
        return None

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


#: ``(request, context)``: the request is the payload (bytes), or an async
#: iterator of payloads for a client-streaming method.  A unary or
#: client-streaming handler is a coroutine returning the response payload; a
#: server-streaming one an async iterator of payloads.  Raising
#: :class:`StatusError` answers with that status.
Handler = Callable[[Any, ServerContext], Any]


@dataclass(frozen=True, slots=True)
class _Registered:
    handler: Handler
    client_streaming: bool
    server_streaming: bool


class _Stream:
    """A call on a connection: waiting for a slot, then running."""

    __slots__ = (
        "argument",
        "context",
        "id",
        "inbox",
        "loop_deadline",
        "registered",
        "size",
        "task",
    )

    def __init__(
        self,
        stream_id: int,
        registered: _Registered,
        argument: Any,
        context: ServerContext,
        loop_deadline: float | None,
        inbox: Inbox | None,
        size: int,
    ) -> None:
        self.id = stream_id
        self.registered = registered
        self.argument = argument
        self.context = context
        self.loop_deadline = loop_deadline
        self.inbox = inbox
        #: The request's size, counted while the call waits for a slot.
        self.size = size
        self.task: asyncio.Task[None] | None = None


def _echo(name: str) -> str:
    return name if len(name) <= _NAME_ECHO else name[:_NAME_ECHO] + "..."


class _Connection(Channel):
    """One client's connection to the server."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self._server = server
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._running = 0
        #: Calls past max_streams, in arrival order, and their requests' bytes.
        self._waiting: collections.deque[_Stream] = collections.deque()
        self._waiting_bytes = 0

    @property
    def idle(self) -> bool:
        return not self._streams

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._server
        if len(server._connections) >= server.max_connections:
            log.warning("ttrpc: refusing connection: %d connections open", len(server._connections))
            transport.close()
            return
        server._connections.add(self)

    def lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._waiting.clear()
        self._waiting_bytes = 0
        for stream in list(self._streams.values()):
            if stream.task is not None:
                stream.task.cancel()  # the caller is gone, as a Go handler's ctx
            if stream.inbox is not None:
                stream.inbox.discard()
        self._streams.clear()

    # --- frames in -----------------------------------------------------------------

    def _status(self, stream_id: int, code: int, message: str) -> None:
        """End a stream with a status; a handler still running on it stops."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            if stream.task is not None:
                stream.task.cancel()
            if stream.inbox is not None:
                stream.inbox.discard()
        with contextlib.suppress(TTRPCError):
            self._respond(stream_id, WireStatus(code, message))

    def _respond(self, stream_id: int, status: WireStatus, payload: bytes = b"") -> None:
        data = encode_response(Response(status=status, payload=payload))
        if len(data) > MAX_MESSAGE_LENGTH:
            error = oversized_message(len(data))
            data = encode_response(Response(status=WireStatus(error.code, error.message)))
        self.send(stream_id, MessageType.RESPONSE, 0, data)

    def oversized_received(self, frame: Oversized) -> None:
        error = oversized_message(frame.length)
        self._status(frame.stream_id, error.code, error.message)

    def frame_received(self, frame: Frame) -> None:
        if frame.type == MessageType.REQUEST:
            self._request(frame)
        elif frame.type == MessageType.DATA:
            self._data(frame)
        else:
            # ttrpc ignores what it does not know, for the protocol's future.
            log.debug("ttrpc: ignoring message type %d on stream %d", frame.type, frame.stream_id)

    def _data(self, frame: Frame) -> None:
        stream = self._streams.get(frame.stream_id)
        if frame.stream_id % 2 != 1:
            self._status(
                frame.stream_id,
                Code.INVALID_ARGUMENT,
                "StreamID must be odd for client initiated streams",
            )
            return
        if stream is None:
            self._status(frame.stream_id, Code.INVALID_ARGUMENT, "StreamID is no longer active")
            return
        inbox = stream.inbox
        if inbox is None or inbox.ended:
            self._status(
                frame.stream_id, Code.INVALID_ARGUMENT, "data handling error: ttrpc: stream closed"
            )
            return
        if not frame.flags & FLAG_NO_DATA:
            inbox.put(frame.data)
        if frame.flags & FLAG_REMOTE_CLOSED:
            inbox.finish()

    def _request(self, frame: Frame) -> None:
        stream_id = frame.stream_id
        if stream_id % 2 != 1:
            self._status(
                stream_id,
                Code.INVALID_ARGUMENT,
                "StreamID must be odd for client initiated streams",
            )
            return
        if stream_id <= self._last_stream_id:
            self._status(
                stream_id, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment"
            )
            return
        self._last_stream_id = stream_id
        try:
            request = decode_request(frame.data)
        except EnvelopeError as exc:
            message = (
                str(exc) if exc.code != Code.INVALID_ARGUMENT else f"unmarshal request error: {exc}"
            )
            self._status(stream_id, exc.code, message)
            return
        server = self._server
        methods = server._services.get(request.service)
        if methods is None:
            self._status(stream_id, Code.UNIMPLEMENTED, f"service {_echo(request.service)}")
            return
        registered = methods.get(request.method)
        if registered is None:
            self._status(stream_id, Code.UNIMPLEMENTED, f"method {_echo(request.method)}")
            return
        loop = asyncio.get_running_loop()
        deadline = loop_deadline = None
        if request.timeout_nano:
            seconds = request.timeout_nano / 1e9
            deadline = time.monotonic() + seconds
            loop_deadline = loop.time() + seconds
        context = ServerContext(
            service=request.service,
            method=request.method,
            metadata=request.metadata,
            deadline=deadline,
        )
        inbox = None
        argument: Any
        if registered.client_streaming:
            inbox = Inbox(self)
            if request.payload is not None:
                inbox.put(request.payload)
            if not frame.flags & FLAG_REMOTE_OPEN:
                inbox.finish()  # a unary-style or remote-closed request sends no data
            argument = _messages(inbox)
        else:
            argument = request.payload or b""
        stream = _Stream(
            stream_id, registered, argument, context, loop_deadline, inbox, len(frame.data)
        )
        if self._running < server.max_streams:
            self._streams[stream_id] = stream
            self._start(stream)
        elif (
            len(self._waiting) < server.max_streams * WAITING_PER_STREAM
            and self._waiting_bytes + stream.size <= WAITING_BYTES
        ):
            self._streams[stream_id] = stream
            self._waiting.append(stream)
            self._waiting_bytes += stream.size
        else:
            if inbox is not None:
                inbox.discard()
            self._status(
                stream_id,
                Code.RESOURCE_EXHAUSTED,
                f"ttrpc: too many concurrent streams (limit {server.max_streams})",
            )

    def _start(self, stream: _Stream) -> None:
        self._running += 1
        stream.task = task = asyncio.get_running_loop().create_task(self._run(stream))
        # Not a finally in _run: a task cancelled before its first step never
        # runs its body.
        task.add_done_callback(lambda _: self._finish(stream))

    def _start_waiting(self) -> None:
        limit = self._server.max_streams
        while self._waiting and self._running < limit:
            stream = self._waiting.popleft()
            self._waiting_bytes -= stream.size
            if self._streams.get(stream.id) is stream:  # not ended while it waited
                self._start(stream)

    # --- running a call ------------------------------------------------------------

    async def _run(self, stream: _Stream) -> None:
        stream_id = stream.id
        registered, argument, context = stream.registered, stream.argument, stream.context
        stream.argument = None
        status = WireStatus()
        payload = b""
        streamed = False
        timeout: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout_at(stream.loop_deadline) as timeout:
                if registered.server_streaming:
                    streamed = True
                    responses: AsyncIterator[bytes] = registered.handler(argument, context)
                    try:
                        async for message in responses:
                            self.send(stream_id, MessageType.DATA, 0, message)
                            await self.drain()
                    finally:
                        aclose = getattr(responses, "aclose", None)
                        if aclose is not None:
                            await aclose()
                else:
                    result: Awaitable[object] = registered.handler(argument, context)
                    answer = await result
                    if not isinstance(answer, bytes):
                        raise TypeError(f"handler returned {type(answer).__name__}, not bytes")
                    payload = answer
        except StatusError as exc:
            status = WireStatus(exc.code, exc.message, exc.details)
            streamed = False
        except ConnectionClosed:
            return
        except TimeoutError:
            if timeout is not None and timeout.expired():
                status = WireStatus(Code.DEADLINE_EXCEEDED, "context deadline exceeded")
            else:
                log.exception("ttrpc: handler of /%s/%s failed", context.service, context.method)
                status = _unexpected(context)
            streamed = False
        except Exception:
            log.exception("ttrpc: handler of /%s/%s failed", context.service, context.method)
            status = _unexpected(context)
            streamed = False
        finally:
            self._forget(stream)
        # Nothing awaited since the handler ended: no _status() can have
        # answered this stream in between.
        with contextlib.suppress(TTRPCError):
            if streamed:
                self.send(stream_id, MessageType.DATA, FLAG_REMOTE_CLOSED | FLAG_NO_DATA)
            else:
                self._respond(stream_id, status, payload)

    def _forget(self, stream: _Stream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
        if stream.inbox is not None:
            stream.inbox.discard()

    def _finish(self, stream: _Stream) -> None:
        self._forget(stream)
        self._running -= 1
        self._start_waiting()
        if self._server._closing and not self._streams:
            self.close()


def _unexpected(context: ServerContext) -> WireStatus:
    return WireStatus(Code.UNKNOWN, f"ttrpc: /{context.service}/{context.method} failed")


async def _messages(inbox: Inbox) -> AsyncIterator[bytes]:
    while (message := await inbox.get()) is not None:
        yield message


class Server:
    """A ttrpc server.

    ::

        server = Server()
        server.register("example.v1.Echo", "Say", say)   # async def say(payload, ctx) -> bytes
        await server.start("/run/example.sock")
        ...
        await server.shutdown(grace=5)

    Unknown services and methods are answered ``UNIMPLEMENTED`` with
    ttrpc's messages (``service <name>``, ``method <name>``).
    """

    def __init__(
        self,
        *,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.max_streams = max_streams
        self.max_connections = max_connections
        self._services: dict[str, dict[str, _Registered]] = {}
        self._connections: set[_Connection] = set()
        self._listeners: list[asyncio.Server] = []
        self._closing = False

    def register(
        self,
        service: str,
        method: str,
        handler: Handler,
        *,
        client_streaming: bool = False,
        server_streaming: bool = False,
    ) -> None:
        methods = self._services.setdefault(service, {})
        if method in methods:
            raise ValueError(f"/{service}/{method} is already registered")
        methods[method] = _Registered(handler, client_streaming, server_streaming)

    @property
    def methods(self) -> list[str]:
        return sorted(f"/{s}/{m}" for s, methods in self._services.items() for m in methods)

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self, path: str | None = None, *, sock: socket.socket | None = None) -> None:
        """Listen on the unix socket ``path`` (created; the caller removes it
        after shutdown), or on the listening socket ``sock``."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(
            lambda: _Connection(self), path=path, sock=sock, backlog=1024
        )
        self._listeners.append(listener)

    async def shutdown(self, grace: float = 0.0) -> None:
        """Stop listening; close connections as their calls finish; after
        ``grace`` seconds cancel the calls still running and close the rest."""
        self._closing = True
        for listener in self._listeners:
            listener.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._connections:
            for conn in list(self._connections):
                if conn.idle:
                    conn.close()
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        remaining = list(self._connections)
        for conn in remaining:
            conn.abort()
        for conn in remaining:
            await conn.wait_lost()
        await asyncio.sleep(0)  # let cancelled handlers unwind
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
