"""HTTP/2 server connections (RFC 9113), for exactly what gRPC needs.

A :class:`Connection` is an asyncio ``Protocol``: ``data_received`` parses
frames out of what the socket gave, answers the connection's control frames
(SETTINGS, PING) and hands each new request stream, once its header block is
decoded, to the application (:mod:`pycontainerd.edge.grpc_server`), which
reads the stream's DATA and writes its response through :class:`Stream`.
Responses are written as whole frames in as few ``transport.write`` calls as
flow control allows: a unary answer (HEADERS, DATA, trailers) is one write.
Frames the connection sends while it parses (ACKs, window updates, refusals,
immediate answers) go out in one write when the input is used up.

What it does not do, because gRPC does not need it: server push (the server
never sends PUSH_PROMISE), priorities (PRIORITY frames and the priority
fields of HEADERS are read and ignored), request bodies without a stream
(there is no HTTP/1.1 upgrade), trailers from the client (a client's
trailing HEADERS ends its side of the stream and their fields are dropped).

Settings sent: MAX_CONCURRENT_STREAMS 100, MAX_HEADER_LIST_SIZE 65,536,
INITIAL_WINDOW_SIZE 4 MiB; the connection window is raised to 8 MiB.
Settings honoured from the peer: INITIAL_WINDOW_SIZE and MAX_FRAME_SIZE for
what the server sends (HEADER_TABLE_SIZE does not matter: responses never
use the peer's dynamic table).

Bounds, per connection (every input costs at most this much memory, and time
in proportion to its bytes):

* Frames: at most 16,384 octets of payload (MAX_FRAME_SIZE, the default,
  never raised); a larger frame header is a FRAME_SIZE_ERROR before its
  payload is read, so the input buffer holds at most one partial frame and
  one read of the socket.
* Headers: a header block (HEADERS and its CONTINUATION frames) of at most
  128 KiB encoded -- past it the connection ends (GOAWAY ENHANCE_YOUR_CALM),
  which is what stops a CONTINUATION flood; the decoded list at most
  64 KiB (RFC 7541's accounting) -- past it the stream is refused with
  RST_STREAM FRAME_SIZE_ERROR (as grpc-go does), the block still decoded to
  keep HPACK in step.  HPACK's dynamic table: 4,096 octets.
* Streams: at most 100 open (a stream counts until its call has finished,
  even after the client reset it); one more is refused with RST_STREAM
  REFUSED_STREAM.
* Resets: streams the client resets, and streams the server refuses or
  resets for a protocol error, draw on a budget of 1,000 that refills at 200
  a second; when it runs out the connection ends with GOAWAY
  ENHANCE_YOUR_CALM.  This is the answer to "rapid reset" (CVE-2023-44487):
  a client that opens and cancels streams in a loop gets at most 100 calls
  running at once and is cut off within seconds.
* Received data: the peer may send no more than the windows granted: 4 MiB a
  stream, 8 MiB on the connection.  Window is granted back as the
  application takes the data, except while it waits for the rest of a
  message whose length it has accepted (at most ``max_recv_message_size``):
  then the data it waits for is granted as it arrives.  So a connection
  holds at most 8 MiB of data no call has taken, plus, per stream, the one
  message being read -- as grpc-go, which allocates a message's buffer
  when its length prefix arrives.
* Replies to control frames (SETTINGS and PING ACKs): when the socket's
  send buffer is over its high-water mark the connection stops reading
  from the peer until it drains, so a peer that floods SETTINGS or PINGs
  without reading the ACKs stalls itself; each read of the socket adds at
  most about its own size in replies.
* Time: no frame costs more than its own length in work, except a SETTINGS
  INITIAL_WINDOW_SIZE change (one pass over the at most 100 open streams).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, cast

from pycontainerd.edge._hpack import Decoder, HpackError

__all__ = [
    "CONNECTION_WINDOW",
    "MAX_CONCURRENT_STREAMS",
    "MAX_FRAME_SIZE",
    "MAX_HEADER_BLOCK",
    "MAX_HEADER_LIST_SIZE",
    "PREFACE",
    "RESET_BUDGET",
    "RESET_REFILL",
    "STREAM_WINDOW",
    "Connection",
    "ErrorCode",
    "FrameType",
    "Stream",
    "frame",
]

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_SIZE = 65536
#: Encoded size of one header block (HEADERS + CONTINUATION) the server reads.
MAX_HEADER_BLOCK = 2 * MAX_HEADER_LIST_SIZE
#: The largest frame payload the server accepts: the default, never raised.
MAX_FRAME_SIZE = 16384
STREAM_WINDOW = 4 << 20
CONNECTION_WINDOW = 8 << 20
#: Stream resets (the client's, and the server's refusals) a connection may
#: spend at once, and how many come back each second.
RESET_BUDGET = 1000
RESET_REFILL = 200.0

_DEFAULT_WINDOW = 65535
_MAX_WINDOW = (1 << 31) - 1
_MAX_FRAME_SIZE_LIMIT = (1 << 24) - 1


class FrameType:
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class ErrorCode:
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY = 0x20

_SETTINGS_HEADER_TABLE_SIZE = 0x1
_SETTINGS_ENABLE_PUSH = 0x2
_SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
_SETTINGS_INITIAL_WINDOW_SIZE = 0x4
_SETTINGS_MAX_FRAME_SIZE = 0x5
_SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

#: A frame header: the 24-bit length as 16 + 8 bits, type, flags, stream id.
_FRAME = struct.Struct(">HBBBL")
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_DATA_HEAD = 9


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame, whole."""
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def _header_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """HEADERS (+ CONTINUATION) frames carrying ``block``."""
    flags = _END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(FrameType.HEADERS, flags | _END_HEADERS, stream_id, block)
    parts = [frame(FrameType.HEADERS, flags, stream_id, block[:max_frame])]
    for pos in range(max_frame, len(block), max_frame):
        last = pos + max_frame >= len(block)
        kind_flags = _END_HEADERS if last else 0
        parts.append(
            frame(FrameType.CONTINUATION, kind_flags, stream_id, block[pos : pos + max_frame])
        )
    return b"".join(parts)


_SERVER_SETTINGS = frame(
    FrameType.SETTINGS,
    0,
    0,
    _SETTING.pack(_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS)
    + _SETTING.pack(_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW)
    + _SETTING.pack(_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_SIZE),
) + frame(FrameType.WINDOW_UPDATE, 0, 0, _U32.pack(CONNECTION_WINDOW - _DEFAULT_WINDOW))
_SETTINGS_ACK = frame(FrameType.SETTINGS, _ACK, 0)


class _ConnectionError(Exception):
    """A connection error (RFC 9113 §5.4.1): GOAWAY with ``code``, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Stream:
    """One request stream: its headers, its received data, and what the
    application writes back.

    Reading: :attr:`buffered` octets are ready; :meth:`take` removes some;
    :meth:`fill` waits for more.  Writing: :meth:`send` (everything in one
    go when flow control allows), else :meth:`send_headers`,
    :meth:`send_data`, :meth:`send_trailers`.  Once the client reset the
    stream or the connection is gone, writes do nothing (the application's
    task is cancelled as well).
    """

    __slots__ = (
        "_chunks",
        "_connection",
        "_credited",
        "_offset",
        "_precredit",
        "_reader",
        "_unacked",
        "_want",
        "_writer",
        "buffered",
        "ended",
        "headers",
        "headers_sent",
        "id",
        "local_closed",
        "recv_window",
        "reset",
        "send_window",
        "task",
    )

    def __init__(
        self, connection: Connection, stream_id: int, headers: list[tuple[str, str]]
    ) -> None:
        self._connection = connection
        self.id = stream_id
        #: The request's header fields, in order, pseudo-headers included.
        self.headers = headers
        #: The task serving the stream, cancelled if the client resets it.
        self.task: asyncio.Task[Any] | None = None
        #: The client ended its side (END_STREAM): nothing more will arrive.
        self.ended = False
        #: The client reset the stream, or the connection is gone.
        self.reset = False
        #: The server sent END_STREAM or RST_STREAM.
        self.local_closed = False
        self.headers_sent = False
        #: Octets received and not taken yet.
        self.buffered = 0
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # into _chunks[0]
        # The first _credited octets of the buffer have had their window
        # granted already (they were waited for); the rest get it when taken.
        self._credited = 0
        self._precredit = 0
        self._want = 0
        self._unacked = 0
        self._reader: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self.recv_window = STREAM_WINDOW
        self.send_window = connection.peer_initial_window

    # --- reading -----------------------------------------------------------

    def take(self, n: int) -> bytes:
        """The next ``n`` octets received (``n`` <= :attr:`buffered`)."""
        if not n:
            return b""
        chunks = self._chunks
        first = chunks[0]
        offset = self._offset
        left = len(first) - offset
        if left > n:
            out = first[offset : offset + n]
            self._offset = offset + n
        elif left == n:
            out = first[offset:] if offset else first
            chunks.popleft()
            self._offset = 0
        else:
            parts = [first[offset:]]
            chunks.popleft()
            need = n - left
            while need:
                chunk = chunks[0]
                if len(chunk) > need:
                    parts.append(chunk[:need])
                    self._offset = need
                    break
                parts.append(chunk)
                chunks.popleft()
                need -= len(chunk)
            else:
                self._offset = 0
            out = b"".join(parts)
        self.buffered -= n
        credited = self._credited
        if credited >= n:
            self._credited = credited - n
        else:
            self._credited = 0
            self._connection._grant(self, n - credited)
        return out

    async def fill(self, n: int) -> None:
        """Wait until ``n`` octets are buffered or the client ended the
        stream.  The octets waited for get their window as they arrive:
        the caller has taken on to read them."""
        if self.buffered >= n or self.ended:
            return
        owed = self.buffered - self._credited
        self._credited = self.buffered
        self._precredit = n - self.buffered
        self._want = n
        if owed:
            self._connection._grant(self, owed)
        loop = self._connection.loop
        try:
            while self.buffered < n and not self.ended:
                self._reader = loop.create_future()
                await self._reader
        finally:
            self._reader = None
            self._precredit = 0
            self._want = 0

    def _received(self, data: bytes, end: bool) -> None:
        if data:
            self._chunks.append(data)
            self.buffered += len(data)
            precredit = self._precredit
            if precredit:
                granted = len(data) if len(data) < precredit else precredit
                self._precredit = precredit - granted
                self._credited += granted
                self._connection._grant(self, granted)
        if end:
            self.ended = True
        reader = self._reader
        if reader is not None and (self.buffered >= self._want or self.ended) and not reader.done():
            reader.set_result(None)

    def _discard(self) -> None:
        """Drop what was received and not taken; the connection gets its window back."""
        owed = self.buffered - self._credited
        self._chunks.clear()
        self.buffered = self._credited = self._offset = 0
        if owed:
            self._connection._grant_connection(owed)

    # --- writing -----------------------------------------------------------

    @property
    def writable(self) -> bool:
        return not (self.reset or self.local_closed or self._connection.closed)

    def send(self, head: bytes | None, payload: bytes, trailers: bytes | None) -> bool:
        """HEADERS (``head``, unless None), one DATA frame (``payload``) and the
        trailers (``trailers``, ending the stream, unless None) in one
        write, if the payload fits in one frame and the send windows and
        the socket is not backed up; otherwise nothing, and False."""
        connection = self._connection
        n = len(payload)
        if (
            connection.paused
            or n > connection.peer_max_frame
            or n > self.send_window
            or n > connection.send_window
            or (head is not None and len(head) > connection.peer_max_frame)
            or (trailers is not None and len(trailers) > connection.peer_max_frame)
        ):
            return False
        if not self.writable:
            return True
        sid = self.id
        pack = _FRAME.pack
        parts = []
        if head is not None:
            parts.append(pack(len(head) >> 8, len(head) & 0xFF, 1, _END_HEADERS, sid))
            parts.append(head)
            self.headers_sent = True
        parts.append(pack(n >> 8, n & 0xFF, 0, 0, sid))
        parts.append(payload)
        self.send_window -= n
        connection.send_window -= n
        if trailers is not None:
            n = len(trailers)
            parts.append(pack(n >> 8, n & 0xFF, 1, _END_STREAM | _END_HEADERS, sid))
            parts.append(trailers)
            self._close_local(parts)
        connection._write(b"".join(parts))
        return True

    def send_headers(self, block: bytes) -> None:
        if not self.writable:
            return
        self.headers_sent = True
        connection = self._connection
        connection._write(_header_frames(self.id, block, False, connection.peer_max_frame))

    async def send_data(self, payload: bytes) -> None:
        """DATA frames carrying ``payload``: as many as the peer's frame size
        needs, as soon as its windows allow, waiting for a socket that does
        not drain."""
        connection = self._connection
        view = memoryview(payload)
        pos, total = 0, len(payload)
        pack = _FRAME.pack
        sid = self.id
        while pos < total:
            if not self.writable:
                return
            if connection.paused:
                await connection._drained()
                continue
            room = min(self.send_window, connection.send_window, total - pos)
            if room <= 0:
                await self._window()
                continue
            size = connection.peer_max_frame
            parts: list[bytes | memoryview] = []
            end = pos + room
            while pos < end:
                n = min(size, end - pos)
                parts.append(pack(n >> 8, n & 0xFF, 0, 0, sid))
                parts.append(view[pos : pos + n])
                pos += n
            self.send_window -= room
            connection.send_window -= room
            connection._write(b"".join(parts))

    def send_trailers(self, block: bytes) -> None:
        """The trailers, ending the stream."""
        if not self.writable:
            return
        connection = self._connection
        parts = [_header_frames(self.id, block, True, connection.peer_max_frame)]
        self._close_local(parts)
        connection._write(b"".join(parts))

    def send_reset(self, code: int) -> None:
        """RST_STREAM ``code``: the server gives up on the stream."""
        if not self.writable:
            return
        self.local_closed = True
        self._connection._write(frame(FrameType.RST_STREAM, 0, self.id, _U32.pack(code)))

    def _close_local(self, parts: list[bytes]) -> None:
        self.local_closed = True
        if not self.ended:
            # The answer is complete; tell a client still sending to stop
            # (grpc-go does the same).
            parts.append(frame(FrameType.RST_STREAM, 0, self.id, b"\x00\x00\x00\x00"))

    async def _window(self) -> None:
        self._writer = self._connection.loop.create_future()
        self._connection._blocked.add(self)
        try:
            await self._writer
        finally:
            self._writer = None
            self._connection._blocked.discard(self)

    def _wake_writer(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            writer.set_result(None)

    def start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Serve the stream with a task running ``coroutine``, cancelled if
        the client resets the stream or goes away.  The coroutine calls
        :meth:`release` when it ends (in a ``finally``); a task cancelled
        before it ran is released by the connection."""
        self.task = self._connection.loop.create_task(coroutine)

    def _cancel(self) -> None:
        """The client reset the stream or went away: the call is cancelled."""
        self.reset = True
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            # Released when it ends, even if it never ran (and so never
            # reached its finally).  A done callback on every task would
            # cost each call one more turn of the event loop.
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.release()

    def release(self) -> None:
        """The application is done with the stream: it stops counting
        against the connection's limit, and anything still unread is dropped."""
        self._discard()
        connection = self._connection
        if connection._streams.pop(self.id, None) is not None and not self.local_closed:
            self.send_reset(ErrorCode.CANCEL)
        self.local_closed = True
        connection._released()


class Connection(asyncio.Protocol):
    """One client connection.  ``on_stream`` gets each new request stream
    once its headers are decoded: it answers at once and calls
    ``stream.release()``, or starts a task with ``stream.start()``."""

    def __init__(
        self,
        on_stream: Callable[[Stream], None],
        on_close: Callable[[Connection], None] | None = None,
    ) -> None:
        self._on_stream = on_stream
        self._on_close = on_close
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.paused = False
        self._drain: list[asyncio.Future[None]] = []
        # Input short of a whole frame (or preface), and how much it takes.
        self._rest: list[bytes] = []
        self._rest_size = 0
        self._need = 0
        self._preface = True
        self._settings_seen = False
        # Output queued while data_received runs, written once at its end.
        self._out: list[bytes] | None = None
        self._decoder = Decoder(MAX_HEADER_LIST_SIZE)
        self._streams: dict[int, Stream] = {}
        self._blocked: set[Stream] = set()
        self._last_stream_id = 0
        # A header block being read: (stream id, HEADERS flags, fragments, size).
        self._continuation: tuple[int, int, list[bytes], int] | None = None
        self._going_away = False
        self._idle: asyncio.Future[None] | None = None
        self.send_window = _DEFAULT_WINDOW
        self.peer_initial_window = _DEFAULT_WINDOW
        self.peer_max_frame = MAX_FRAME_SIZE
        self._recv_window = CONNECTION_WINDOW
        self._unacked = 0
        self._budget = float(RESET_BUDGET)
        self._budget_at = time.monotonic()

    # --- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses; they
        # have its methods.)
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(_SERVER_SETTINGS)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        for stream in list(self._streams.values()):
            stream._cancel()
        for waiter in self._drain:
            if not waiter.done():
                waiter.set_result(None)
        self._drain.clear()
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            # A peer that does not read what we send stops being read.
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        for waiter in self._drain:
            if not waiter.done():
                waiter.set_result(None)
        self._drain.clear()

    def eof_received(self) -> bool:
        return False  # close the transport: a half-closed gRPC connection is done

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        rest = self._rest
        if rest:
            # Joined only once the frame in progress is whole: a peer that
            # sends a frame an octet at a time costs linear time, not quadratic.
            rest.append(data)
            self._rest_size += len(data)
            if self._rest_size < self._need:
                return
            data = b"".join(rest)
            rest.clear()
            self._rest_size = 0
        out: list[bytes] = []
        self._out = out
        try:
            pos = self._parse(data)
            if pos < len(data):
                rest.append(data[pos:])
                self._rest_size = len(data) - pos
        except _ConnectionError as exc:
            log.debug("HTTP/2 connection error %d: %s", exc.code, exc)
            self._fail(exc.code, str(exc))
        except Exception:
            log.exception("HTTP/2 connection failed")
            self._fail(ErrorCode.INTERNAL_ERROR, "internal error")
        finally:
            self._out = None
            if out and self.transport is not None:
                self.transport.write(b"".join(out))

    # --- frames ------------------------------------------------------------

    def _parse(self, data: bytes) -> int:
        pos = 0
        end = len(data)
        if self._preface:
            if end < len(PREFACE):
                if not PREFACE.startswith(data):
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 preface")
                self._need = len(PREFACE)
                return 0
            if not data.startswith(PREFACE):
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 preface")
            self._preface = False
            pos = len(PREFACE)
        unpack = _FRAME.unpack_from
        while end - pos >= 9:
            high, low, kind, flags, sid = unpack(data, pos)
            length = high << 8 | low
            if length > MAX_FRAME_SIZE:
                raise _ConnectionError(
                    ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} octets over {MAX_FRAME_SIZE}"
                )
            start = pos + 9
            stop = start + length
            if stop > end:
                self._need = stop - pos
                return pos
            pos = stop
            sid &= 0x7FFFFFFF
            if not self._settings_seen:
                if kind != FrameType.SETTINGS or flags & _ACK:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "first frame is not SETTINGS")
                self._settings_seen = True
            if self._continuation is not None and kind != FrameType.CONTINUATION:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "header block interrupted")
            if kind == FrameType.DATA:
                self._data(data, start, stop, flags, sid)
            elif kind == FrameType.HEADERS:
                self._headers(data, start, stop, flags, sid)
            elif kind == FrameType.CONTINUATION:
                self._continued(data[start:stop], flags, sid)
            elif kind == FrameType.WINDOW_UPDATE:
                self._window_update(data, start, length, sid)
            elif kind == FrameType.SETTINGS:
                self._settings(data, start, length, flags, sid)
            elif kind == FrameType.PING:
                self._ping(data, start, length, flags, sid)
            elif kind == FrameType.RST_STREAM:
                self._rst_stream(data, start, length, sid)
            elif kind == FrameType.PRIORITY:
                if length != 5:
                    raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY of bad size")
                if sid == 0:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            elif kind == FrameType.GOAWAY:
                if sid != 0 or length < 8:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "malformed GOAWAY")
                # The client opens no more streams; those open go on.
            elif kind == FrameType.PUSH_PROMISE:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            # Other frame types are extensions: ignored, as RFC 9113 §4.1 asks.
            if self.closed:
                return end
        self._need = 9
        return pos

    def _data(self, data: bytes, start: int, stop: int, flags: int, sid: int) -> None:
        if sid == 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        length = stop - start
        if length > self._recv_window:
            raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window exceeded")
        self._recv_window -= length
        stream = self._streams.get(sid)
        if stream is None or stream.reset:
            if sid > self._last_stream_id:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            # A stream closed or reset: the octets count, and are dropped.
            self._grant_connection(length)
            return
        if stream.ended:
            raise _ConnectionError(ErrorCode.STREAM_CLOSED, f"DATA after END_STREAM on {sid}")
        if length > stream.recv_window:
            raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, f"stream {sid} window exceeded")
        stream.recv_window -= length
        if flags & _PADDED:
            if length < 1 or data[start] >= length:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than DATA")
            padding = data[start] + 1
            start += 1
            stop -= padding - 1
            self._grant(stream, padding)
        if stream.local_closed:
            # The answer is out; the request's rest no longer matters.
            self._grant(stream, stop - start)
            stream._received(b"", bool(flags & _END_STREAM))
            return
        stream._received(data[start:stop], bool(flags & _END_STREAM))

    def _headers(self, data: bytes, start: int, stop: int, flags: int, sid: int) -> None:
        if sid == 0 or not sid & 1:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        if flags & _PADDED:
            if stop == start:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "padded HEADERS without padding")
            padding = data[start]
            start += 1
            stop -= padding
        if flags & _PRIORITY:
            start += 5
        if start > stop:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS padding too long")
        fragment = data[start:stop]
        if flags & _END_HEADERS:
            self._header_block(sid, flags, fragment)
        else:
            self._continuation = (sid, flags, [fragment], len(fragment))

    def _continued(self, fragment: bytes, flags: int, sid: int) -> None:
        pending = self._continuation
        if pending is None or pending[0] != sid:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
        stream_id, first_flags, fragments, size = pending
        size += len(fragment)
        if size > MAX_HEADER_BLOCK:
            raise _ConnectionError(
                ErrorCode.ENHANCE_YOUR_CALM, f"header block over {MAX_HEADER_BLOCK} octets"
            )
        fragments.append(fragment)
        if flags & _END_HEADERS:
            self._continuation = None
            self._header_block(stream_id, first_flags, b"".join(fragments))
        else:
            self._continuation = (stream_id, first_flags, fragments, size)

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:
            fields, within = self._decoder.decode(block)
        except HpackError as exc:
            raise _ConnectionError(ErrorCode.COMPRESSION_ERROR, str(exc)) from None
        end_stream = bool(flags & _END_STREAM)
        existing = self._streams.get(sid)
        if existing is not None:
            # Trailers from the client: its side ends; gRPC gives them no meaning.
            if not end_stream:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM")
            if existing.ended:
                raise _ConnectionError(ErrorCode.STREAM_CLOSED, f"HEADERS after END_STREAM {sid}")
            existing._received(b"", True)
            return
        if sid <= self._last_stream_id:
            return  # a stream already closed; its headers only feed HPACK
        self._last_stream_id = sid
        if self._going_away:
            self._refuse(sid, ErrorCode.REFUSED_STREAM)
            return
        if not within:
            self._refuse(sid, ErrorCode.FRAME_SIZE_ERROR)
            return
        if len(self._streams) >= MAX_CONCURRENT_STREAMS:
            self._refuse(sid, ErrorCode.REFUSED_STREAM)
            return
        stream = Stream(self, sid, fields)
        stream.ended = end_stream
        self._streams[sid] = stream
        self._on_stream(stream)

    def _refuse(self, sid: int, code: int) -> None:
        self._charge()
        self._write(frame(FrameType.RST_STREAM, 0, sid, _U32.pack(code)))

    def _charge(self) -> None:
        """One reset drawn on the budget; past it the connection is cut."""
        now = time.monotonic()
        budget = self._budget + (now - self._budget_at) * RESET_REFILL
        self._budget = (RESET_BUDGET if budget > RESET_BUDGET else budget) - 1
        self._budget_at = now
        if self._budget < 0:
            raise _ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset")

    def _rst_stream(self, data: bytes, start: int, length: int, sid: int) -> None:
        if length != 4:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of bad size")
        if sid == 0 or sid > self._last_stream_id:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        stream = self._streams.get(sid)
        if stream is None or stream.reset:
            return
        stream.local_closed = True
        stream._discard()
        stream._wake_writer()
        stream._cancel()
        self._charge()

    def _window_update(self, data: bytes, start: int, length: int, sid: int) -> None:
        if length != 4:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE of bad size")
        increment = _U32.unpack_from(data, start)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > _MAX_WINDOW:
                raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow")
            for stream in list(self._blocked):
                stream._wake_writer()
            return
        target = self._streams.get(sid)
        if target is None:
            if sid > self._last_stream_id:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle {sid}")
            return
        if increment == 0 or target.send_window + increment > _MAX_WINDOW:
            self._charge()
            target.send_reset(
                ErrorCode.PROTOCOL_ERROR if increment == 0 else ErrorCode.FLOW_CONTROL_ERROR
            )
            target._cancel()
            return
        target.send_window += increment
        target._wake_writer()

    def _settings(self, data: bytes, start: int, length: int, flags: int, sid: int) -> None:
        if sid != 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _ACK:
            if length:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if length % 6:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS of bad size")
        unpack = _SETTING.unpack_from
        for pos in range(start, start + length, 6):
            key, value = unpack(data, pos)
            if key == _SETTINGS_INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "initial window too big")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                if delta:
                    for stream in self._streams.values():
                        stream.send_window += delta
                        if stream.send_window > _MAX_WINDOW:
                            raise _ConnectionError(
                                ErrorCode.FLOW_CONTROL_ERROR, "stream window overflow"
                            )
                        if delta > 0:
                            stream._wake_writer()
            elif key == _SETTINGS_MAX_FRAME_SIZE:
                if not MAX_FRAME_SIZE <= value <= _MAX_FRAME_SIZE_LIMIT:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "bad MAX_FRAME_SIZE")
                self.peer_max_frame = value
            elif key == _SETTINGS_ENABLE_PUSH and value > 1:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "bad ENABLE_PUSH")
            # HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE:
            # nothing the server sends depends on them.
        self._write(_SETTINGS_ACK)

    def _ping(self, data: bytes, start: int, length: int, flags: int, sid: int) -> None:
        if length != 8:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING of bad size")
        if sid != 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if not flags & _ACK:
            self._write(frame(FrameType.PING, _ACK, 0, data[start : start + 8]))

    # --- flow control --------------------------------------------------------

    def _grant(self, stream: Stream, n: int) -> None:
        """``n`` octets of ``stream`` consumed: window back to the peer."""
        if not stream.ended and not stream.local_closed:
            unacked = stream._unacked + n
            if unacked >= STREAM_WINDOW // 4:
                stream._unacked = 0
                stream.recv_window += unacked
                self._write(frame(FrameType.WINDOW_UPDATE, 0, stream.id, _U32.pack(unacked)))
            else:
                stream._unacked = unacked
        self._grant_connection(n)

    def _grant_connection(self, n: int) -> None:
        unacked = self._unacked + n
        if unacked >= CONNECTION_WINDOW // 4:
            self._unacked = 0
            self._recv_window += unacked
            self._write(frame(FrameType.WINDOW_UPDATE, 0, 0, _U32.pack(unacked)))
        else:
            self._unacked = unacked

    # --- output and ending -----------------------------------------------------

    def _write(self, data: bytes) -> None:
        out = self._out
        if out is not None:
            out.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    async def _drained(self) -> None:
        waiter = self.loop.create_future()
        self._drain.append(waiter)
        await waiter

    def _fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY ``code``, calls cancelled, then close."""
        if self.closed:
            return
        debug = message.encode("utf-8", "replace")[:256]
        self._write(
            frame(FrameType.GOAWAY, 0, 0, _U32.pack(self._last_stream_id) + _U32.pack(code) + debug)
        )
        self.close()

    def goaway(self) -> None:
        """No new streams (GOAWAY NO_ERROR); the open ones go on."""
        if self.closed or self._going_away:
            return
        self._going_away = True
        self._write(
            frame(
                FrameType.GOAWAY,
                0,
                0,
                _U32.pack(self._last_stream_id) + _U32.pack(ErrorCode.NO_ERROR),
            )
        )

    def close(self) -> None:
        """Cancel every call and close the socket (after what is queued)."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        if transport is not None:
            if self._out:
                transport.write(b"".join(self._out))
                self._out.clear()
            transport.close()
        for stream in list(self._streams.values()):
            stream._cancel()

    @property
    def held(self) -> int:
        """Octets of the peer's input held: a partial frame, a header block
        being read, data no call has taken.  What the bounds above bound."""
        pending = self._continuation
        return (
            self._rest_size
            + (pending[3] if pending is not None else 0)
            + sum(stream.buffered for stream in self._streams.values())
        )

    def streams(self) -> list[Stream]:
        """The streams whose calls have not finished."""
        return list(self._streams.values())

    async def idle(self) -> None:
        """Wait until no call is running."""
        while self._streams:
            self._idle = self.loop.create_future()
            await self._idle

    def _released(self) -> None:
        idle = self._idle
        if idle is not None and not self._streams and not idle.done():
            idle.set_result(None)
