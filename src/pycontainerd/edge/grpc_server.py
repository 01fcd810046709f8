"""The gRPC transport: the edge's methods served over HTTP/2 on a unix socket.

Each connection is a :class:`pycontainerd.edge.http2.Connection`; each
request stream a task that reads the length-prefixed request message(s),
decodes them with :func:`pycontainerd.edge.decode_request`, runs the call
through :func:`pycontainerd.edge.unary` or :func:`pycontainerd.edge.stream`
and writes the response messages and the status.  What this module adds to
HTTP/2 is the gRPC mapping:

* ``:path`` names the method; an unknown one gets UNIMPLEMENTED with
  grpc-go's words (``unknown service ...``, ``unknown method ... for
  service ...``), a request that is not ``POST`` with a path is reset
  (PROTOCOL_ERROR), a ``content-type`` other than ``application/grpc[+...]``
  gets HTTP 415, as from grpc-go.
* ``grpc-timeout`` sets :attr:`Call.deadline <pycontainerd.edge.Call>`; when
  it passes, the call is cancelled and answered DEADLINE_EXCEEDED.
* Other headers, except pseudo-headers, ``grpc-*``, ``te``, ``content-type``
  and ``user-agent``, are :attr:`Call.metadata <pycontainerd.edge.Call>`;
  a ``-bin`` value is base64-decoded and kept only when it is UTF-8 text.
* Messages: a 5-octet prefix (compressed flag, length).  A length over
  ``max_recv_message_size`` is refused (RESOURCE_EXHAUSTED, grpc-go's
  message) before any of the message is read or buffered; a compressed
  message, or ``grpc-encoding`` other than ``identity``, is UNIMPLEMENTED
  (no decompressor is installed, as in containerd); a cut or undecodable
  message is INTERNAL.
* Responses: HEADERS (``:status 200``, ``content-type: application/grpc``),
  DATA, trailers (``grpc-status``, ``grpc-message`` percent-encoded as the
  gRPC spec says).  A failure before any message is a trailers-only
  response.  The header blocks are constant bytes or literals (the peer's
  HPACK table is never touched), so a unary answer is a single write.
  A :class:`~pycontainerd.edge.Frames` item is one DATA write.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import struct
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from pycontainerd import edge
from pycontainerd.edge import CODES, Call, Frames, Method
from pycontainerd.edge._hpack import literal
from pycontainerd.edge.http2 import Connection, ErrorCode, Stream

__all__ = ["GrpcServer"]

log = logging.getLogger(__name__)

_PREFIX = struct.Struct(">BL")

#: ``:status 200`` (static index 8) and ``content-type: application/grpc``
#: (static name 31, literal value, never indexed in the peer's table).
_HEAD = b"\x88" + b"\x0f\x10" + b"\x10application/grpc"
_OK = literal(b"grpc-status", b"0")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_DEADLINE_EXCEEDED = edge.Status(CODES["DEADLINE_EXCEEDED"], "context deadline exceeded")
_NOT_METADATA = frozenset(("te", "content-type", "user-agent"))
# What the gRPC spec lets through a grpc-message unescaped: printable ASCII but '%'.
_ESCAPE = re.compile(rb"[^\x20-\x24\x26-\x7e]")


def _percent_encode(message: str) -> bytes:
    raw = message.encode("utf-8", "replace")
    if _ESCAPE.search(raw) is None:
        return raw
    return _ESCAPE.sub(lambda m: b"%%%02X" % m.group()[0], raw)


def _status_block(status: edge.Status) -> bytes:
    block = literal(b"grpc-status", str(status.code).encode())
    if status.message:
        block += literal(b"grpc-message", _percent_encode(status.message))
    return block


def _finish(stream: Stream, status: edge.Status) -> None:
    """End ``stream`` with ``status``: trailers, or trailers only."""
    block = _status_block(status)
    stream.send_trailers(block if stream.headers_sent else _HEAD + block)


def _parse_timeout(value: str) -> float:
    """Seconds in a ``grpc-timeout`` value (at most 8 digits and a unit)."""
    digits, unit = value[:-1], _UNIT_SECONDS.get(value[-1:])
    if unit is None or not 0 < len(digits) <= 8 or not (digits.isascii() and digits.isdigit()):
        raise ValueError(value)
    return int(digits) * unit


def _binary(value: str) -> str | None:
    """A ``-bin`` metadata value as text, if it is base64 of UTF-8."""
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


async def _recv(stream: Stream, limit: int) -> bytes | None:
    """One length-prefixed message, refused before it is read when too big;
    None when the client has ended its side."""
    if stream.buffered < 5:
        await stream.fill(5)
        if stream.buffered < 5:
            if stream.buffered == 0:
                return None
            raise edge.Status(CODES["INTERNAL"], "truncated message header")
    compressed, size = _PREFIX.unpack(stream.take(5))
    if compressed:
        raise edge.Status(CODES["UNIMPLEMENTED"], "compressed messages are not supported")
    if size > limit:
        raise edge.message_too_large(size, limit)
    if stream.buffered < size:
        await stream.fill(size)
        if stream.buffered < size:
            raise edge.Status(CODES["INTERNAL"], "truncated message")
    return stream.take(size) if size else b""


async def _requests(stream: Stream, method: Method, limit: int) -> AsyncIterator[Any]:
    while (data := await _recv(stream, limit)) is not None:
        yield edge.decode_request(method, data)


def _framed(message: bytes) -> bytes:
    return _PREFIX.pack(0, len(message)) + message


async def _send(stream: Stream, payload: bytes, trailers: bytes | None) -> None:
    """``payload`` (framed messages), after the headers if not sent yet,
    then ``trailers`` if given."""
    head = None if stream.headers_sent else _HEAD
    if stream.send(head, payload, trailers):
        return
    if head is not None:
        stream.send_headers(head)
    await stream.send_data(payload)
    if trailers is not None:
        stream.send_trailers(trailers)


class _Service:
    """Serves the methods on connections: a task per call."""

    def __init__(self, methods: Iterable[Method], limit: int) -> None:
        self.methods = {m.name: m for m in methods}
        self.services = {m.service for m in self.methods.values()}
        self.limit = limit
        self.connections: set[Connection] = set()

    def connection(self) -> Connection:
        connection = Connection(self.open, self.connections.discard)
        self.connections.add(connection)
        return connection

    def open(self, stream: Stream) -> None:
        """A new request: refused at once, or a task that serves it."""
        path = http_method = content_type = timeout = encoding = None
        metadata = []
        for name, value in stream.headers:
            if name[0] == ":":
                if name == ":path":
                    path = value
                elif name == ":method":
                    http_method = value
            elif name.startswith("grpc-"):
                if name == "grpc-timeout":
                    timeout = value
                elif name == "grpc-encoding":
                    encoding = value
            elif name in _NOT_METADATA:
                if name == "content-type":
                    content_type = value
            elif name.endswith("-bin"):
                text = _binary(value)
                if text is not None:
                    metadata.append((name, text))
            else:
                metadata.append((name, value))
        if http_method != "POST" or not path:
            stream.send_reset(ErrorCode.PROTOCOL_ERROR)
            stream.release()
            return
        if content_type is None or not (
            content_type == "application/grpc"
            or content_type.startswith(("application/grpc+", "application/grpc;"))
        ):
            message = f'invalid gRPC request content-type "{content_type or ""}"'
            stream.send_trailers(
                b"\x08\x03415"  # :status 415, literal, indexed name
                + _HEAD[1:]
                + _status_block(edge.Status(CODES["INTERNAL"], message))
            )
            stream.release()
            return
        method = self.methods.get(path)
        failure = None
        if method is None:
            failure = edge.unknown_method(path, self.services)
        elif encoding is not None and encoding != "identity":
            failure = edge.Status(
                CODES["UNIMPLEMENTED"],
                f'grpc: Decompressor is not installed for grpc-encoding "{encoding}"',
            )
        seconds = None
        if timeout is not None and failure is None:
            try:
                seconds = _parse_timeout(timeout)
            except ValueError:
                failure = edge.Status(CODES["INTERNAL"], f"malformed grpc-timeout: {timeout}")
        if failure is not None or method is None:
            _finish(stream, failure or edge.unknown_method(path, self.services))
            stream.release()
            return
        call = Call(
            metadata=tuple(metadata),
            deadline=None if seconds is None else time.monotonic() + seconds,
        )
        stream.start(self.serve(stream, method, call, seconds))

    async def serve(
        self, stream: Stream, method: Method, call: Call, seconds: float | None
    ) -> None:
        timer = None
        expired = False
        if seconds is not None:
            task = asyncio.current_task()
            assert task is not None

            def expire() -> None:
                nonlocal expired
                expired = True
                task.cancel()

            timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            cardinality = method.cardinality
            if cardinality.client_streams:
                request: Any = _requests(stream, method, self.limit)
            else:
                data = await _recv(stream, self.limit)
                if data is None:
                    raise edge.Status(CODES["INTERNAL"], "missing request message")
                request = edge.decode_request(method, data)
            if cardinality.server_streams:
                await self.stream_out(stream, method, request, call)
            else:
                response = await edge.unary(method, request, call)
                await _send(
                    stream,
                    _framed(response if method.preserialized else response.SerializeToString()),
                    _OK,
                )
        except edge.Status as status:
            _finish(stream, status)
        except asyncio.CancelledError:
            # The client reset the stream or went away, the server is
            # stopping, or the deadline passed: only the last gets an answer.
            if expired:
                _finish(stream, _DEADLINE_EXCEEDED)
        except Exception:
            log.exception("gRPC transport failed serving %s", method.name)
            stream.send_reset(ErrorCode.INTERNAL_ERROR)
        finally:
            if timer is not None:
                timer.cancel()
            stream.release()

    async def stream_out(self, stream: Stream, method: Method, request: Any, call: Call) -> None:
        preserialized = method.preserialized
        pack = _PREFIX.pack
        async for item in edge.stream(method, request, call):
            if type(item) is Frames:
                if not item:
                    continue
                payload = b"".join([pack(0, len(m)) + m for m in item])
            else:
                payload = _framed(item if preserialized else item.SerializeToString())
            await _send(stream, payload, None)
        if stream.headers_sent:
            stream.send_trailers(_OK)
        else:
            stream.send_trailers(_HEAD + _OK)


class GrpcServer:
    """The edge's methods on a unix socket, over gRPC."""

    def __init__(self, methods: Iterable[Method], *, max_recv_message_size: int) -> None:
        self._service = _Service(methods, max_recv_message_size)
        self._server: asyncio.Server | None = None

    @property
    def methods(self) -> list[str]:
        return sorted(self._service.methods)

    def connection(self) -> Connection:
        """A connection serving the methods: the protocol :meth:`start` makes
        for each socket it accepts (a test may give it a transport of its own)."""
        return self._service.connection()

    async def start(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._service.connection, path)

    async def stop(self, grace: float) -> None:
        """Stop accepting connections and calls; give running calls ``grace``
        seconds, then cancel them and close the connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._service.connections)
        for connection in connections:
            connection.goaway()
        idle = [connection.idle() for connection in connections]
        if idle:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*idle), grace)
        tasks = [
            stream.task
            for connection in connections
            for stream in connection.streams()
            if stream.task is not None
        ]
        for connection in connections:
            connection.close()
        if tasks:
            await asyncio.wait(tasks, timeout=grace + 1.0)
        await server.wait_closed()
