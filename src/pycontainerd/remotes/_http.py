"""A small HTTP/1.1 client on asyncio, made for registries.

Registries move large blobs, so the receive path is built for throughput: a
connection is an :class:`asyncio.BufferedProtocol` whose socket reads land
straight in one preallocated buffer (``recv_into``, no per-read ``bytes``),
and a body is handed out in chunks of up to :data:`CHUNK_SIZE` bytes, one copy
each.  Everything else is bounded and written down here:

* the status line and header block: at most :data:`MAX_HEADER_BYTES` bytes
  and :data:`MAX_HEADERS` fields; more is refused (``ResourceExhausted``);
* a chunked body's size lines and trailers: :data:`MAX_LINE` bytes a line,
  :data:`MAX_HEADER_BYTES` for all trailers;
* bodies read into memory (:meth:`Response.read`): a cap the caller passes;
  bodies otherwise stream and cost at most :data:`BUFFER_SIZE` bytes of buffer
  a connection;
* redirects: at most :data:`MAX_REDIRECTS` (Go's limit), with
  ``Authorization`` dropped when the host changes;
* time: connecting at most ``connect_timeout`` seconds, and a read that
  sees no byte for ``read_timeout`` seconds fails;
* idle keep-alive connections: at most :data:`MAX_IDLE_PER_HOST` per
  (scheme, host, port, TLS settings).

Proxies are Go's: ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` from the
environment by default (loopback never proxied), plain ``http://`` targets
in absolute form, ``https://`` ones through a ``CONNECT`` tunnel.

Errors are errdefs' classes: a dropped or refused connection is
:class:`ConnectionLost` (an ``Unavailable``), which the fetcher catches to
resume with a ``Range`` request.

For debugging, as ctr's ``--http-dump`` and ``--http-trace``: ``dump`` logs
each request's and response's head (never a body; credentials in
``Authorization`` headers shown as ``<redacted>``) at INFO, ``trace`` each
connection's life (connecting, connected, TLS, reused, first response byte)
at DEBUG, both on the ``pycontainerd.remotes.http`` logger.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import os
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from pycontainerd import errdefs
from pycontainerd.version import VERSION

__all__ = [
    "BUFFER_SIZE",
    "CHUNK_SIZE",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_LINE",
    "MAX_REDIRECTS",
    "URL",
    "ConnectionLost",
    "Headers",
    "HttpClient",
    "Proxy",
    "Response",
    "proxy_from_environment",
]

log = logging.getLogger(__name__)
#: Where ``dump`` and ``trace`` write.
http_log = logging.getLogger("pycontainerd.remotes.http")

#: Largest piece of a body handed out at once.
CHUNK_SIZE = 1 << 20
#: The receive buffer of one connection: a chunk plus room for the next read.
BUFFER_SIZE = 2 * CHUNK_SIZE
#: Largest status line plus header block (also the cap on a chunked body's trailers).
MAX_HEADER_BYTES = 64 * 1024
#: Most header fields in one response.
MAX_HEADERS = 256
#: Longest chunk-size line of a chunked body.
MAX_LINE = 4096
#: Most redirects followed for one request (Go's net/http stops at 10 too).
MAX_REDIRECTS = 10
#: Most idle keep-alive connections kept per origin.
MAX_IDLE_PER_HOST = 8

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Below this much free space at the tail, the buffer is compacted before a read.
_MIN_READ = 64 * 1024


class ConnectionLost(errdefs.Unavailable):
    """The connection failed, was refused, or closed before the body ended."""


@dataclass(frozen=True, slots=True)
class URL:
    """An absolute http(s) URL split the way a request needs it."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent on the request line

    @classmethod
    def parse(cls, url: str) -> URL:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errdefs.InvalidArgument(f"unsupported URL {errdefs.q(url)}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise errdefs.InvalidArgument(f"invalid port in URL {errdefs.q(url)}") from exc
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port, target)

    @property
    def netloc(self) -> str:
        """``host[:port]`` as the Host header carries it (default ports left out)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def join(self, location: str) -> URL:
        """The URL a ``Location`` header (absolute or relative) points to."""
        return URL.parse(urljoin(str(self), location))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.target}"


class Headers:
    """Response header fields in order; names compared without case."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields = [(k.lower(), v) for k, v in fields]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self._fields:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._fields if k == name]

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class _Connection(asyncio.BufferedProtocol):
    """One TCP (or TLS) connection: a receive buffer and the waits on it.

    Data lives in ``_buf[_start:_end]``; the transport writes at ``_end``.
    Reading pauses when the free tail is too small to be worth a syscall, and
    resumes when the reader has taken enough out.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._buf = bytearray(BUFFER_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._want = 0
        self._read_timeout = read_timeout
        self._drained: asyncio.Future[None] | None = None
        self._received = 0  # bytes ever received: progress, for the read timeout
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.reusable = True
        # Through an HTTP proxy (plain http targets): the request line carries
        # the whole URL, and the proxy's credentials go on every request.
        self.absolute_form = False
        self.proxy_authorization: str | None = None

    # -- protocol callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # What waits unsent in the transport is bounded by these marks.
        transport.set_write_buffer_limits(high=4 * CHUNK_SIZE, low=CHUNK_SIZE)

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buf) - self._end < _MIN_READ:
            n = self._end - self._start
            if len(self._buf) - n < _MIN_READ:
                # Only a TLS transport that had decrypted data in hand when it
                # was paused gets here; give it room rather than nothing.
                bigger = bytearray(len(self._buf) + BUFFER_SIZE)
                bigger[:n] = self._view[self._start : self._end]
                self._buf, self._view = bigger, memoryview(bigger)
            else:
                self._buf[:n] = self._view[self._start : self._end]
            self._start, self._end = 0, n
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        self._received += nbytes
        if self._end - self._start >= self._want:
            self._wake()
        if (
            not self._paused
            and len(self._buf) - (self._end - self._start) < _MIN_READ
            and self.transport is not None
        ):
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self.reusable = False
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.reusable = False
        if exc is not None:
            self._exc = exc
        self._wake()
        self.resume_writing()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reading ------------------------------------------------------------

    @property
    def available(self) -> int:
        return self._end - self._start

    async def _fill(self, want: int) -> bool:
        """Wait until ``want`` bytes are buffered (``want`` <= BUFFER_SIZE - _MIN_READ)
        or the connection ends; False when it ended first."""
        while self._end - self._start < want:
            if self._eof:
                return False
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            self._want = want
            self._waiter = waiter = self._loop.create_future()
            self._timer = self._loop.call_later(
                self._read_timeout, self._time_out, waiter, self._received
            )
            try:
                await waiter
            finally:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._waiter = None
                self._want = 0
        return True

    def _time_out(self, waiter: asyncio.Future[None], mark: int) -> None:
        if waiter.done():
            return
        if self._received != mark:
            # Bytes came, just fewer than the wait wants: a slow link, not a dead one.
            self._timer = self._loop.call_later(
                self._read_timeout, self._time_out, waiter, self._received
            )
            return
        waiter.set_exception(
            errdefs.DeadlineExceeded(f"no data from the server for {self._read_timeout:g}s")
        )
        self.reusable = False

    def _lost(self, what: str) -> ConnectionLost:
        self.reusable = False
        detail = f": {self._exc}" if self._exc is not None else ""
        return ConnectionLost(f"connection closed {what}{detail}")

    def _take(self, n: int) -> bytes:
        data = bytes(self._view[self._start : self._start + n])
        self._start += n
        if self._paused and len(self._buf) - (self._end - self._start) >= BUFFER_SIZE // 2:
            self._paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return data

    async def fill_some(self) -> None:
        """Wait for a first byte; ``ConnectionLost`` when the connection ends first."""
        if not await self._fill(1):
            raise self._lost("before the response")

    async def read_some(self, limit: int, at_least: int = 1) -> bytes:
        """Up to ``limit`` bytes, waiting for ``min(at_least, limit)`` of them (or the end)."""
        want = min(limit, at_least, BUFFER_SIZE - _MIN_READ)
        if not await self._fill(want) and self.available == 0:
            return b""
        return self._take(min(limit, self.available))

    async def read_exactly(self, n: int, what: str) -> bytes:
        parts = []
        while n:
            data = await self.read_some(n, n)
            if not data:
                raise self._lost(what)
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    async def read_line(self, limit: int, what: str) -> bytes:
        """One line ending in LF (CRLF stripped); at most ``limit`` bytes with its end."""
        scanned = 0
        while True:
            i = self._buf.find(b"\n", self._start + scanned, self._end)
            if i >= 0:
                line = self._take(i + 1 - self._start)
                if len(line) > limit:
                    raise errdefs.ResourceExhausted(f"{what} longer than {limit} bytes")
                return line.rstrip(b"\r\n")
            scanned = self.available
            if scanned >= limit:
                raise errdefs.ResourceExhausted(f"{what} longer than {limit} bytes")
            if not await self._fill(scanned + 1):
                raise self._lost(f"while reading the {what}")

    # -- writing ------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        if self.transport is None or self.transport.is_closing():
            raise self._lost("before the request was sent")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport holds more than its high-water mark unsent."""
        if self._drained is not None:
            await self._drained
        if self._eof:
            raise self._lost("while the request body was being sent")

    def close(self) -> None:
        # abort, not close: a TLS close waits for the peer's close_notify (up
        # to 30 s) with the socket open, and a request/response exchange that
        # is over, or broken, has nothing left to flush.
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy: plain ``http://`` URLs go through it in absolute form,
    ``https://`` ones through a ``CONNECT`` tunnel."""

    url: URL
    authorization: str | None = None  # Proxy-Authorization, from user:pass in the URL

    @classmethod
    def parse(cls, value: str) -> Proxy:
        if "://" not in value:
            value = "http://" + value
        parts = urlsplit(value)
        if parts.scheme != "http":
            raise errdefs.InvalidArgument(
                f"proxy {errdefs.q(value)}: only http:// proxies are supported"
            )
        url = URL.parse(f"http://{parts.hostname}:{parts.port or 80}/")
        auth = None
        if parts.username is not None:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth = "Basic " + base64.b64encode(token).decode("ascii")
        return cls(url, auth)


def _bypassed(url: URL, no_proxy: str) -> bool:
    """Whether NO_PROXY (Go's rules, simplified: ``*``, hosts, ``.domain``
    suffixes, IPs and CIDRs, each with an optional port) exempts ``url``."""
    host = url.host.lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if host == "localhost" or (address is not None and address.is_loopback):
        return True  # never proxied, as in Go
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        port = ""
        if entry.count(":") == 1 and not entry.endswith("]"):
            entry, port = entry.split(":")
        if port and port != str(url.port):
            continue
        entry = entry.strip("[]")
        if "/" in entry:
            try:
                if address is not None and address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        domain = entry.lstrip(".")
        if host == domain or host.endswith("." + domain):
            return True
    return False


def proxy_from_environment(url: URL) -> Proxy | None:
    """The proxy for ``url`` from ``HTTPS_PROXY`` / ``HTTP_PROXY`` and
    ``NO_PROXY`` (or their lower-case forms), as Go's ProxyFromEnvironment
    reads them; loopback hosts are never proxied."""

    def env(name: str) -> str:
        return os.environ.get(name) or os.environ.get(name.lower()) or ""

    value = env("HTTPS_PROXY" if url.scheme == "https" else "HTTP_PROXY")
    if not value or _bypassed(url, env("NO_PROXY")):
        return None
    return Proxy.parse(value)


_PoolKey = tuple[str, str, int, int, str]


class Response:
    """A response whose body is read once: :meth:`read` into memory (capped) or
    :meth:`iter_bytes` streaming.  Close it (``async with``) to return the
    connection to the pool; one left with unread body is closed instead."""

    def __init__(
        self,
        client: HttpClient,
        key: _PoolKey,
        conn: _Connection,
        method: str,
        url: URL,
        status: int,
        reason: str,
        headers: Headers,
    ) -> None:
        self._client = client
        self._key = key
        self._conn: _Connection | None = conn
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = headers
        self._chunked = False
        self._remaining: int | None = None  # bytes left of a Content-Length body
        self._chunk_left = 0
        self._done = False
        te = headers.get("transfer-encoding", "") or ""
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self._done = True
        elif "chunked" in te.lower():
            self._chunked = True
        else:
            length = headers.get("content-length")
            if length is not None:
                try:
                    self._remaining = int(length)
                except ValueError:
                    self._remaining = -1
                if self._remaining < 0:
                    conn.close()
                    raise errdefs.Unknown(f"invalid Content-Length {errdefs.q(length)}")
                if self._remaining == 0:
                    self._done = True
            else:
                conn.reusable = False  # the body runs to the end of the connection

    @property
    def content_length(self) -> int | None:
        length = self.headers.get("content-length")
        return int(length) if length is not None and length.isdigit() else None

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and conn.reusable:
            self._client._release(self._key, conn)
        else:
            conn.close()

    async def read_chunk(self, limit: int) -> bytes:
        """The next piece of body, up to ``limit`` bytes (about that much while
        data flows); b"" at its end."""
        conn = self._conn
        if self._done or conn is None:
            return b""
        if self._remaining is not None:
            want = min(limit, self._remaining)
            data = await conn.read_some(want, want)
            if not data:
                raise conn._lost(f"with {self._remaining} bytes of the body unread")
            self._remaining -= len(data)
            if self._remaining == 0:
                self._done = True
            return data
        if self._chunked:
            if self._chunk_left == 0:
                line = await conn.read_line(MAX_LINE, "chunk size line")
                size_text = line.split(b";", 1)[0].strip()
                try:
                    self._chunk_left = int(size_text, 16)
                except ValueError:
                    conn.close()
                    raise errdefs.Unknown(f"invalid chunk size {size_text[:32]!r}") from None
                if self._chunk_left < 0:
                    conn.close()
                    raise errdefs.Unknown("invalid chunk size")
                if self._chunk_left == 0:
                    await self._read_trailers(conn)
                    self._done = True
                    return b""
            want = min(limit, self._chunk_left)
            data = await conn.read_some(want, want)
            if not data:
                raise conn._lost("in the middle of a chunk")
            self._chunk_left -= len(data)
            if self._chunk_left == 0 and await conn.read_line(MAX_LINE, "chunk end"):
                conn.close()
                raise errdefs.Unknown("malformed chunked body: data after a chunk")
            return data
        data = await conn.read_some(limit, limit)
        if not data:
            self._done = True
        return data

    async def _read_trailers(self, conn: _Connection) -> None:
        total = 0
        while True:
            line = await conn.read_line(MAX_LINE, "trailer line")
            if not line:
                return
            total += len(line)
            if total > MAX_HEADER_BYTES:
                raise errdefs.ResourceExhausted(f"trailers larger than {MAX_HEADER_BYTES} bytes")

    async def iter_bytes(self, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """The body in pieces of up to ``chunk_size`` bytes (about that size
        while data flows); raises :class:`ConnectionLost` if it is cut short."""
        while True:
            data = await self.read_chunk(chunk_size)
            if not data:
                return
            yield data

    async def read(self, limit: int) -> bytes:
        """The whole body; ``ResourceExhausted`` when it is longer than ``limit`` bytes."""
        if self._remaining is not None and self._remaining > limit:
            await self.aclose()
            raise errdefs.ResourceExhausted(
                f"response from {self.url} is {self._remaining} bytes, more than the"
                f" {limit} allowed"
            )
        parts: list[bytes] = []
        total = 0
        while True:
            data = await self.read_chunk(min(CHUNK_SIZE, limit + 1 - total))
            if not data:
                return b"".join(parts)
            total += len(data)
            if total > limit:
                await self.aclose()
                raise errdefs.ResourceExhausted(
                    f"response from {self.url} is more than the {limit} bytes allowed"
                )
            parts.append(data)

    async def discard(self, limit: int = 64 * 1024) -> None:
        """Drop a small body and close: the connection goes back to the pool
        when the body was read, and is closed when it was larger."""
        try:
            await self.read(limit)
        except errdefs.ContainerdError:
            if self._conn is not None:
                self._conn.close()
        finally:
            await self.aclose()


RequestBody = bytes | AsyncIterable[bytes]


class HttpClient:
    """Keep-alive HTTP/1.1 connections per origin, TLS settings and proxy.

    One client serves many requests at once (each takes its own connection);
    ``ssl_context`` picks the TLS settings per request, so hosts with their
    own CAs or ``skip_verify`` share the pool safely.  ``proxy`` is a proxy
    URL, None for none, or a function of the target URL; by default the
    environment's ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, as containerd.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 30.0,
        read_timeout: float = 60.0,
        user_agent: str = f"pycontainerd/{VERSION}",
        proxy: Callable[[URL], Proxy | None] | str | None = proxy_from_environment,
        dump: bool = False,
        trace: bool = False,
    ) -> None:
        if isinstance(proxy, str):
            fixed = Proxy.parse(proxy)
            self._proxy: Callable[[URL], Proxy | None] = lambda url: fixed
        elif proxy is None:
            self._proxy = lambda url: None
        else:
            self._proxy = proxy
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.user_agent = user_agent
        self.dump = dump
        self.trace = trace
        self._idle: dict[_PoolKey, list[_Connection]] = {}
        self._default_ssl: ssl.SSLContext | None = None
        self._closed = False

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
        # Let the transports see their close before the loop may end.
        await asyncio.sleep(0)

    def _release(self, key: _PoolKey, conn: _Connection) -> None:
        conns = self._idle.setdefault(key, [])
        if self._closed or len(conns) >= MAX_IDLE_PER_HOST:
            conn.close()
        else:
            conns.append(conn)

    def _ssl_for(self, url: URL, context: ssl.SSLContext | None) -> ssl.SSLContext | None:
        if url.scheme != "https":
            return None
        if context is not None:
            return context
        if self._default_ssl is None:
            self._default_ssl = ssl.create_default_context()
        return self._default_ssl

    async def _connect(
        self, url: URL, context: ssl.SSLContext | None, proxy: Proxy | None
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        peer = url if proxy is None else proxy.url
        if self.trace:
            via = f" through proxy {proxy.url.netloc}" if proxy is not None else ""
            http_log.debug("connecting to %s%s", url.netloc, via)
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self.read_timeout),
                    peer.host,
                    peer.port,
                    ssl=context if proxy is None else None,
                    server_hostname=url.host if context is not None and proxy is None else None,
                )
                if proxy is not None:
                    try:
                        await self._through(conn, url, context, proxy)
                    except BaseException:
                        conn.close()
                        raise
        except TimeoutError as exc:
            raise errdefs.DeadlineExceeded(
                f"connecting to {peer.netloc}: no answer in {self.connect_timeout:g}s"
            ) from exc
        except ssl.SSLError as exc:
            raise errdefs.Unavailable(f"TLS handshake with {url.netloc} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectionLost(f"connecting to {peer.netloc}: {exc.strerror or exc}") from exc
        if self.trace:
            _trace_connected(url, conn)
        return conn

    async def _through(
        self, conn: _Connection, url: URL, context: ssl.SSLContext | None, proxy: Proxy
    ) -> None:
        """Make ``conn`` (open to the proxy) carry requests to ``url``."""
        if context is None:
            conn.absolute_form = True
            conn.proxy_authorization = proxy.authorization
            return
        authority = f"{url.host}:{url.port}" if ":" not in url.host else f"[{url.host}]:{url.port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        conn.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        what = f"CONNECT {authority} through proxy {proxy.url.netloc}"
        status, reason, _, _ = await _read_response_head(conn, what)
        if status == 407:
            raise errdefs.PermissionDenied(f"{what}: {status} {reason}")
        if not 200 <= status < 300:
            raise errdefs.Unavailable(f"{what}: {status} {reason}")
        if conn.available:
            raise errdefs.Unknown(f"{what}: the proxy sent data before the TLS handshake")
        assert conn.transport is not None
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(conn.transport, conn, context, server_hostname=url.host)
        assert isinstance(transport, asyncio.Transport)
        conn.connection_made(transport)

    async def request(
        self,
        method: str,
        url: URL | str,
        *,
        headers: Mapping[str, str] | None = None,
        body: RequestBody | None = None,
        ssl_context: ssl.SSLContext | None = None,
        follow_redirects: bool = True,
    ) -> Response:
        """Send a request and read the response head; the caller closes the response.

        Redirects are followed (up to :data:`MAX_REDIRECTS`) for requests whose
        body can be sent again; a 303, or a 301/302 of a POST, turns into a GET.
        """
        current = URL.parse(url) if isinstance(url, str) else url
        send_headers = dict(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(method, current, send_headers, body, ssl_context)
            location = response.headers.get("location")
            replayable = body is None or isinstance(body, bytes)
            if not (follow_redirects and response.status in _REDIRECTS and location and replayable):
                return response
            await response.discard()
            target = current.join(location)
            if (target.scheme, target.host, target.port) != (
                current.scheme,
                current.host,
                current.port,
            ):
                # Credentials for a registry are not for the storage it sends us to.
                send_headers = {
                    k: v for k, v in send_headers.items() if k.lower() != "authorization"
                }
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                send_headers = {
                    k: v
                    for k, v in send_headers.items()
                    if k.lower() not in ("content-type", "content-length")
                }
            current = target
        raise errdefs.Unavailable(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    async def _send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: RequestBody | None,
        ssl_context: ssl.SSLContext | None,
    ) -> Response:
        context = self._ssl_for(url, ssl_context)
        proxy = self._proxy(url)
        key: _PoolKey = (
            url.scheme,
            url.host,
            url.port,
            id(context),
            f"{proxy.url.netloc}|{proxy.authorization}" if proxy is not None else "",
        )
        idle = self._idle.get(key)
        # A pooled connection may have been closed by the server while idle; a
        # request that failed on one before any response byte is sent again on
        # a fresh connection when its body can be sent again.
        while idle:
            conn = idle.pop()
            if not conn.reusable or conn.transport is None or conn.transport.is_closing():
                conn.close()
                continue
            if self.trace:
                http_log.debug("reusing an idle connection to %s", url.netloc)
            try:
                return await self._exchange(key, conn, method, url, headers, body, fresh=False)
            except _StaleConnection as stale:
                if stale.body_sent and body is not None and not isinstance(body, bytes):
                    raise ConnectionLost(f"{method} {url}: connection closed") from None
        conn = await self._connect(url, context, proxy)
        return await self._exchange(key, conn, method, url, headers, body, fresh=True)

    async def _exchange(
        self,
        key: _PoolKey,
        conn: _Connection,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: RequestBody | None,
        *,
        fresh: bool,
    ) -> Response:
        if not fresh and (conn.transport is None or conn.transport.is_closing() or conn._eof):
            conn.close()
            raise _StaleConnection(body_sent=False)
        try:
            target = str(url) if conn.absolute_form else url.target
            lines = [f"{method} {target} HTTP/1.1", f"Host: {url.netloc}"]
            if conn.proxy_authorization:
                lines.append(f"Proxy-Authorization: {conn.proxy_authorization}")
            names = {k.lower() for k in headers}
            if "user-agent" not in names:
                lines.append(f"User-Agent: {self.user_agent}")
            if "accept-encoding" not in names:
                lines.append("Accept-Encoding: identity")
            chunked = False
            if isinstance(body, bytes):
                lines.append(f"Content-Length: {len(body)}")
            elif body is not None and "content-length" not in names:
                chunked = True
                lines.append("Transfer-Encoding: chunked")
            elif body is None and method in ("POST", "PUT", "PATCH"):
                lines.append("Content-Length: 0")
            for name, value in headers.items():
                if isinstance(body, bytes) and name.lower() == "content-length":
                    continue  # ours, from the body itself
                if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                    raise errdefs.InvalidArgument(f"header {errdefs.q(name)} has a line break")
                lines.append(f"{name}: {value}")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            if self.dump:
                http_log.info("%s", "\n".join(_redacted(lines)))
            if isinstance(body, bytes) and len(body) <= 64 * 1024:
                conn.write(head + body)
            else:
                conn.write(head)
                if isinstance(body, bytes):
                    conn.write(body)
                elif body is not None:
                    await self._send_stream(conn, body, chunked)
            return await self._read_head(key, conn, method, url)
        except _StaleConnection:
            conn.close()
            if fresh:
                # Why, when the transport said (a TLS alert: no client certificate, say).
                why = f": {conn._exc}" if conn._exc is not None else ""
                raise ConnectionLost(
                    f"{method} {url}: connection closed by the server{why}"
                ) from None
            raise
        except BaseException:
            conn.close()
            raise

    async def _send_stream(
        self, conn: _Connection, body: AsyncIterable[bytes], chunked: bool
    ) -> None:
        async for piece in body:
            if not piece:
                continue
            if chunked:
                conn.write(b"%x\r\n" % len(piece))
                conn.write(piece)
                conn.write(b"\r\n")
            else:
                conn.write(piece)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
        await conn.drain()

    async def _read_head(self, key: _PoolKey, conn: _Connection, method: str, url: URL) -> Response:
        sent = asyncio.get_running_loop().time()
        try:
            await conn.fill_some()
        except ConnectionLost:
            raise _StaleConnection(body_sent=True) from None
        if self.trace:
            elapsed = (asyncio.get_running_loop().time() - sent) * 1000
            http_log.debug("%s %s: first response byte after %.1f ms", method, url, elapsed)
        status, reason, headers, version = await _read_response_head(conn, f"{method} {url}")
        if self.dump:
            lines = [f"{version} {status} {reason}".rstrip()]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            http_log.info("%s", "\n".join(_redacted(lines)))
        if version == "HTTP/1.0" or "close" in (headers.get("connection") or "").lower():
            conn.reusable = False
        return Response(self, key, conn, method, url, status, reason, headers)


def _redacted(lines: Iterable[str]) -> list[str]:
    """Head lines with credentials hidden: the scheme of an ``Authorization``
    stays (it says which flow ran), the secret does not."""
    out = []
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in ("authorization", "proxy-authorization"):
            scheme = value.split()[0] if value.split() else ""
            line = f"{name}: {scheme} <redacted>".rstrip()
        out.append(line)
    return out


def _trace_connected(url: URL, conn: _Connection) -> None:
    transport = conn.transport
    if transport is None:
        return
    local, peer = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
    http_log.debug("connected to %s: %s -> %s", url.netloc, local, peer)
    tls = transport.get_extra_info("ssl_object")
    if tls is not None:
        cipher = tls.cipher()
        http_log.debug(
            "TLS handshake with %s done: %s %s",
            url.netloc,
            tls.version(),
            cipher[0] if cipher else "",
        )


async def _read_response_head(conn: _Connection, what: str) -> tuple[int, str, Headers, str]:
    """Status, reason, headers and HTTP version of the next final response."""
    while True:
        status_line = await conn.read_line(MAX_HEADER_BYTES, "status line")
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise errdefs.Unknown(f"{what}: malformed status line {status_line[:80]!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        fields: list[tuple[str, str]] = []
        total = len(status_line)
        while True:
            line = await conn.read_line(MAX_HEADER_BYTES, "header block")
            if not line:
                break
            total += len(line) + 2
            if total > MAX_HEADER_BYTES:
                raise errdefs.ResourceExhausted(
                    f"{what}: response header block larger than {MAX_HEADER_BYTES} bytes"
                )
            if len(fields) >= MAX_HEADERS:
                raise errdefs.ResourceExhausted(
                    f"{what}: more than {MAX_HEADERS} response header fields"
                )
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise errdefs.Unknown(f"{what}: malformed header line {line[:80]!r}")
            fields.append((name, value.strip()))
        if 100 <= status < 200 and status != 101:
            continue  # an interim response (100 Continue): the real one follows
        return status, reason, Headers(fields), parts[0]


class _StaleConnection(Exception):
    """A pooled connection closed before any response byte came back."""

    def __init__(self, *, body_sent: bool) -> None:
        super().__init__()
        self.body_sent = body_sent
