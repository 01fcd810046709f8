"""One ttrpc connection: frames in and out, flow control both ways.

:class:`Channel` is the asyncio protocol the client and the server build
on.  Frames are parsed as bytes arrive (no reader task, no per-frame
await); writes go straight to the transport, and a sender that wants to
respect the peer's pace awaits :meth:`Channel.drain`.  Messages received on
a stream wait in an :class:`Inbox` until the stream's reader takes them;
when an inbox, or the connection as a whole, holds too much, reading stops
until the reader catches up -- the peer then waits, as it would on a full
socket.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import cast

from pycontainerd.ttrpc._errors import ConnectionClosed, StatusError
from pycontainerd.ttrpc._wire import (
    HEADER,
    MAX_MESSAGE_LENGTH,
    Frame,
    FrameReader,
    Oversized,
)

__all__ = [
    "INBOX_BYTES",
    "INBOX_MESSAGES",
    "QUEUED_BYTES",
    "Channel",
    "Inbox",
    "oversized_message",
]

log = logging.getLogger(__name__)

#: A stream's inbox stops the connection's reading past this many messages
#: or bytes (ttrpc buffers 64 messages per stream) ...
INBOX_MESSAGES = 64
INBOX_BYTES = MAX_MESSAGE_LENGTH
#: ... and so do all the inboxes of a connection together past this many bytes.
QUEUED_BYTES = 4 * MAX_MESSAGE_LENGTH


def oversized_message(length: int) -> StatusError:
    """ttrpc's error for a message over the limit, word for word."""
    return StatusError(
        8,  # RESOURCE_EXHAUSTED
        f"message length {length} exceed maximum message size of {MAX_MESSAGE_LENGTH}",
    )


class Channel(asyncio.Protocol):
    """Framing, writes and flow control of one connection; subclasses say
    what a frame means (:meth:`frame_received`, :meth:`oversized_received`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._reader = FrameReader()
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._holds: set[object] = set()
        #: Bytes waiting in this connection's inboxes.
        self.queued_bytes = 0
        self._lost = False
        self._lost_waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for item in self._reader.feed(data):
            if self._lost:
                return
            if type(item) is Frame:
                self.frame_received(item)
            else:
                assert isinstance(item, Oversized)
                self.oversized_received(item)

    def eof_received(self) -> bool | None:
        return None  # close the transport: ttrpc has no half-closed connections

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionClosed())
            waiter.exception()  # retrieved: nobody may be left to await it
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)
        self.lost(exc)

    # --- for subclasses --------------------------------------------------------

    def frame_received(self, frame: Frame) -> None:
        raise NotImplementedError

    def oversized_received(self, frame: Oversized) -> None:
        raise NotImplementedError

    def lost(self, exc: Exception | None) -> None:
        """The connection is gone; fail or cancel what runs on it."""

    # --- sending -----------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self._lost or self.transport is None or self.transport.is_closing()

    def send(self, stream_id: int, message_type: int, flags: int, data: bytes = b"") -> None:
        """Write one frame; :class:`ConnectionClosed` if the connection is gone."""
        if len(data) > MAX_MESSAGE_LENGTH:
            raise oversized_message(len(data))
        transport = self.transport
        if self._lost or transport is None or transport.is_closing():
            raise ConnectionClosed()
        transport.write(HEADER.pack(len(data), stream_id, message_type, flags) + data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high mark."""
        if self._lost:
            raise ConnectionClosed()
        if not self._write_paused:
            return
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_lost(self) -> None:
        if self._lost:
            return
        if self._lost_waiter is None:
            self._lost_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._lost_waiter)

    # --- read flow control -------------------------------------------------------

    def hold_reading(self, key: object) -> None:
        if key in self._holds:
            return
        self._holds.add(key)
        if len(self._holds) == 1 and self.transport is not None and not self._lost:
            self.transport.pause_reading()

    def release_reading(self, key: object) -> None:
        if key not in self._holds:
            return
        self._holds.discard(key)
        if not self._holds and self.transport is not None and not self._lost:
            self.transport.resume_reading()


_END = object()


class Inbox:
    """The messages received on one stream, in order, for its one reader.

    Past :data:`INBOX_MESSAGES` messages or :data:`INBOX_BYTES` bytes here,
    or :data:`QUEUED_BYTES` in the connection's inboxes together, the
    connection stops reading until the reader takes some.
    """

    __slots__ = ("_bytes", "_channel", "_end", "_items", "_waiter")

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._items: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        #: None while open; _END at a clean end; the error that ended it.
        self._end: object = None

    @property
    def ended(self) -> bool:
        return self._end is not None

    def put(self, message: bytes) -> None:
        if self._end is not None:
            return
        self._items.append(message)
        self._bytes += len(message)
        self._channel.queued_bytes += len(message)
        self._check()
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        """No more messages; the reader gets ``error`` (if any) after the rest."""
        if self._end is None:
            self._end = _END if error is None else error
            self._wake()

    def discard(self) -> None:
        """Drop whatever waits here (the stream is abandoned)."""
        self._channel.queued_bytes -= self._bytes
        self._bytes = 0
        self._items.clear()
        if self._end is None:
            self._end = _END
        self._wake()
        self._channel.release_reading(self)
        self._check_connection()

    async def get(self) -> bytes | None:
        """The next message; ``None`` at the clean end; raises the error that
        ended the stream."""
        while not self._items:
            end = self._end
            if end is _END:
                return None
            if isinstance(end, BaseException):
                raise end
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._items.popleft()
        self._bytes -= len(message)
        self._channel.queued_bytes -= len(message)
        self._check()
        return message

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check(self) -> None:
        items = self._items
        if len(items) >= INBOX_MESSAGES or (items and self._bytes >= INBOX_BYTES):
            self._channel.hold_reading(self)
        else:
            self._channel.release_reading(self)
        self._check_connection()

    def _check_connection(self) -> None:
        channel = self._channel
        if channel.queued_bytes >= QUEUED_BYTES:
            channel.hold_reading(Channel)
        else:
            channel.release_reading(Channel)
