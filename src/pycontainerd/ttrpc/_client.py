"""The ttrpc client: many concurrent calls over one connection."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import AsyncIterator, Iterable, Sequence

from pycontainerd.ttrpc._channel import Channel, Inbox, oversized_message
from pycontainerd.ttrpc._errors import (
    Code,
    ConnectionClosed,
    ProtocolError,
    StatusError,
    TTRPCError,
)
from pycontainerd.ttrpc._wire import (
    FLAG_NO_DATA,
    FLAG_REMOTE_CLOSED,
    FLAG_REMOTE_OPEN,
    MAX_MESSAGE_LENGTH,
    EnvelopeError,
    Frame,
    MessageType,
    Oversized,
    Request,
    Response,
    decode_response,
    encode_request,
)

__all__ = ["Client", "ClientStream", "Metadata"]

log = logging.getLogger(__name__)

#: Metadata pairs; a key may repeat.
Metadata = Sequence[tuple[str, str]]

_MAX_STREAM_ID = (1 << 32) - 1


def _deadline_exceeded() -> StatusError:
    return StatusError(Code.DEADLINE_EXCEEDED, "context deadline exceeded")


def _check(response: Response) -> bytes:
    status = response.status
    # No status at all is OK: ttrpc's Go server sends none for a call that
    # succeeded (grpc's status.FromError(nil) is nil), and its client reads
    # the absence so.
    if status is not None and status.code != Code.OK:
        raise StatusError(status.code, status.message, status.details)
    return response.payload


class _Connection(Channel):
    def __init__(self) -> None:
        super().__init__()
        self.next_stream_id = 1
        #: Unary calls waiting for their response, and open streams.
        self.calls: dict[int, asyncio.Future[Response]] = {}
        self.streams: dict[int, ClientStream] = {}
        self.error: TTRPCError | None = None

    def allocate(self) -> int:
        stream_id = self.next_stream_id
        if stream_id > _MAX_STREAM_ID:
            raise ConnectionClosed("ttrpc: stream ids exhausted on this connection")
        self.next_stream_id += 2
        return stream_id

    def frame_received(self, frame: Frame) -> None:
        stream_id = frame.stream_id
        call = self.calls.get(stream_id)
        if call is not None:
            if frame.type != MessageType.RESPONSE:
                self._fail(
                    stream_id, ProtocolError(f"ttrpc: message type {frame.type} on a unary call")
                )
                return
            try:
                response = decode_response(frame.data)
            except EnvelopeError as exc:
                self._fail(stream_id, ProtocolError(f"ttrpc: undecodable response: {exc}"))
                return
            del self.calls[stream_id]
            if not call.done():
                call.set_result(response)
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream._frame(frame)
            return
        log.debug("ttrpc: message for inactive stream %d ignored", stream_id)

    def oversized_received(self, frame: Oversized) -> None:
        self._fail(frame.stream_id, oversized_message(frame.length))

    def _fail(self, stream_id: int, error: TTRPCError) -> None:
        call = self.calls.pop(stream_id, None)
        if call is not None:
            if not call.done():
                call.set_exception(error)
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream._end(error)

    def lost(self, exc: Exception | None) -> None:
        error = ConnectionClosed()
        if exc is not None:
            error.__cause__ = exc
        self.error = error
        calls, self.calls = self.calls, {}
        for call in calls.values():
            if not call.done():
                call.set_exception(error)
        for stream in list(self.streams.values()):
            stream._end(error)


class ClientStream:
    """One streaming call: messages sent with :meth:`send` (a client
    stream), received by iterating or :meth:`recv` (a server stream), the
    final response by :meth:`response` (a client stream only).  Read it to
    its end, or leave it (``async with stream:``, :meth:`cancel`)."""

    def __init__(
        self,
        connection: _Connection,
        stream_id: int,
        *,
        client_streaming: bool,
        server_streaming: bool,
    ) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.client_streaming = client_streaming
        self.server_streaming = server_streaming
        self._inbox = Inbox(connection)
        self._result: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._send_closed = not client_streaming
        self._timer: asyncio.TimerHandle | None = None

    # --- frames in (from the connection) -------------------------------------------

    def _frame(self, frame: Frame) -> None:
        if frame.type == MessageType.DATA:
            if not frame.flags & FLAG_NO_DATA:
                self._inbox.put(frame.data)
            if frame.flags & FLAG_REMOTE_CLOSED:
                self._done(b"")
        elif frame.type == MessageType.RESPONSE:
            try:
                payload = _check(decode_response(frame.data))
            except EnvelopeError as exc:
                self._end(ProtocolError(f"ttrpc: undecodable response: {exc}"))
            except TTRPCError as exc:
                self._end(exc)
            else:
                self._done(payload)
        else:
            log.debug("ttrpc: ignoring message type %d on stream %d", frame.type, self.stream_id)

    def _done(self, payload: bytes) -> None:
        self._forget()
        self._inbox.finish()
        if not self._result.done():
            self._result.set_result(payload)

    def _end(self, error: BaseException) -> None:
        self._forget()
        self._inbox.finish(error)
        if not self._result.done():
            self._result.set_exception(error)
            self._result.exception()  # retrieved: a server stream never asks

    def _forget(self) -> None:
        if self._connection.streams.get(self.stream_id) is self:
            del self._connection.streams[self.stream_id]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._end(_deadline_exceeded())

    # --- the caller's side ------------------------------------------------------------

    async def send(self, message: bytes) -> None:
        """Send one message (a client-streaming call, before close_send)."""
        if self._send_closed:
            raise TTRPCError("ttrpc: stream closed for sending")
        if self._result.done():
            await self._result  # the call ended: raise how
            raise TTRPCError("ttrpc: stream already finished")
        self._connection.send(self.stream_id, MessageType.DATA, 0, message)
        await self._connection.drain()

    async def close_send(self) -> None:
        """Tell the server no more messages follow."""
        if self._send_closed:
            return
        self._send_closed = True
        if not self._result.done():
            self._connection.send(
                self.stream_id, MessageType.DATA, FLAG_REMOTE_CLOSED | FLAG_NO_DATA
            )

    async def recv(self) -> bytes | None:
        """The next message from the server; ``None`` when the stream ended
        well; raises the call's error otherwise."""
        return await self._inbox.get()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while (message := await self._inbox.get()) is not None:
            yield message

    async def response(self) -> bytes:
        """The final response's payload (closes sending first)."""
        await self.close_send()
        return await self._result

    def cancel(self) -> None:
        """Abandon this stream: what it received is dropped, what comes later
        ignored (ttrpc cannot tell the server).  Messages left unread would
        otherwise hold the connection's reading once they fill the inbox."""
        self._end(StatusError(Code.CANCELLED, "context canceled"))
        self._inbox.discard()

    async def __aenter__(self) -> ClientStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()


class Client:
    """A ttrpc client on one connection.

    ::

        async with await Client.connect("/run/containerd/containerd.sock.ttrpc") as client:
            reply = await client.call(
                "containerd.services.events.ttrpc.v1.Events", "Forward", request_bytes,
                metadata=[("containerd-namespace-ttrpc", "default")], timeout=5,
            )

    Calls run concurrently; each waits for its own response.  A call that
    fails on the server raises :class:`StatusError`; one whose connection
    closes, :class:`ConnectionClosed`.
    """

    def __init__(self, connection: _Connection, *, metadata: Metadata = ()) -> None:
        self._connection = connection
        self._metadata = tuple(metadata)

    @classmethod
    async def connect(
        cls, path: str, *, metadata: Metadata = (), timeout: float | None = None
    ) -> Client:
        """Connect to the unix socket ``path``; ``metadata`` goes with every call."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, connection = await loop.create_unix_connection(_Connection, path)
        return cls(connection, metadata=metadata)

    @classmethod
    async def from_socket(cls, sock: socket.socket, *, metadata: Metadata = ()) -> Client:
        """A client on an already connected socket (which it then owns)."""
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_unix_connection(_Connection, sock=sock)
        return cls(connection, metadata=metadata)

    @property
    def closed(self) -> bool:
        return self._connection.is_closed

    async def close(self) -> None:
        self._connection.close()
        await self._connection.wait_lost()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_closed(self) -> None:
        """Return when the connection is gone (closed by either side)."""
        await self._connection.wait_lost()

    # --- calls ----------------------------------------------------------------------------

    def _request(
        self,
        service: str,
        method: str,
        payload: bytes | None,
        metadata: Iterable[tuple[str, str]],
        timeout: float | None,
    ) -> bytes:
        timeout_nano = 0
        if timeout is not None:
            timeout_nano = math.ceil(timeout * 1e9)
            if timeout_nano <= 0:
                raise _deadline_exceeded()
        data = encode_request(
            Request(
                service=service,
                method=method,
                payload=payload,
                timeout_nano=timeout_nano,
                metadata=(*self._metadata, *metadata),
            )
        )
        if len(data) > MAX_MESSAGE_LENGTH:
            raise oversized_message(len(data))
        return data

    def _ensure_open(self) -> _Connection:
        connection = self._connection
        if connection.error is not None:
            raise connection.error
        if connection.is_closed:
            raise ConnectionClosed()
        return connection

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        metadata: Metadata = (),
        timeout: float | None = None,
    ) -> bytes:
        """Call a unary method; its response payload.

        ``timeout`` (seconds) goes to the server as the call's deadline and
        bounds the wait here: past it, ``StatusError(DEADLINE_EXCEEDED)``.
        """
        data = self._request(service, method, payload, metadata, timeout)
        connection = self._ensure_open()
        stream_id = connection.allocate()
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        connection.calls[stream_id] = waiter
        try:
            connection.send(stream_id, MessageType.REQUEST, 0, data)
            if timeout is None:
                response = await waiter
            else:
                try:
                    async with asyncio.timeout(timeout):
                        response = await waiter
                except TimeoutError:
                    raise _deadline_exceeded() from None
        finally:
            connection.calls.pop(stream_id, None)
        return _check(response)

    async def stream(
        self,
        service: str,
        method: str,
        payload: bytes | None = None,
        *,
        client_streaming: bool,
        server_streaming: bool,
        metadata: Metadata = (),
        timeout: float | None = None,
    ) -> ClientStream:
        """Open a streaming call (ttrpc >= 1.2).  ``payload`` is the request
        of a server-streaming call, or the first message of a client stream."""
        if not (client_streaming or server_streaming):
            raise ValueError("a call that streams neither way is a unary call: use call()")
        if payload is None and not client_streaming:
            payload = b""
        data = self._request(service, method, payload, metadata, timeout)
        connection = self._ensure_open()
        stream_id = connection.allocate()
        stream = ClientStream(
            connection,
            stream_id,
            client_streaming=client_streaming,
            server_streaming=server_streaming,
        )
        connection.streams[stream_id] = stream
        flags = FLAG_REMOTE_OPEN if client_streaming else FLAG_REMOTE_CLOSED
        try:
            connection.send(stream_id, MessageType.REQUEST, flags, data)
        except BaseException:
            stream._forget()
            raise
        if timeout is not None:
            loop = asyncio.get_running_loop()
            stream._timer = loop.call_later(timeout, stream._expire)
        return stream
