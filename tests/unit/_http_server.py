"""A tiny HTTP/1.1 server on 127.0.0.1 for the remotes' unit tests.

Each test gives a handler ``(request) -> Reply | None``; a :class:`Reply`
is written as it says (or its ``raw`` bytes as they are, to send broken
answers), and ``close_after`` cuts the connection after that many body
bytes.  Every request is recorded, and so is each new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes | None = None  # written instead of a composed response
    chunked: bool = False  # send the body with Transfer-Encoding: chunked
    close_after: int | None = None  # close the connection after this many body bytes
    content_length: int | None = None  # announce this length instead of len(body)


Handler = Callable[[Request], Reply]


@dataclass
class Server:
    port: int
    requests: list[Request]
    connections: list[int]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode().split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
    return Request(method, target, headers, body)


def _compose(reply: Reply, method: str) -> tuple[bytes, bytes]:
    head = [f"HTTP/1.1 {reply.status} X"]
    headers = dict(reply.headers)
    if reply.chunked:
        headers["Transfer-Encoding"] = "chunked"
    else:
        length = reply.content_length if reply.content_length is not None else len(reply.body)
        headers.setdefault("Content-Length", str(length))
    head += [f"{k}: {v}" for k, v in headers.items()]
    body = b"" if method == "HEAD" else reply.body
    if reply.chunked and method != "HEAD":
        pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        body = (
            b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\nX-T: 1\r\n\r\n"
        )
    return ("\r\n".join(head) + "\r\n\r\n").encode(), body


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Server]:
    requests: list[Request] = []
    connections: list[int] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                requests.append(request)
                reply = handler(request)
                if reply.raw is not None:
                    writer.write(reply.raw)
                    await writer.drain()
                    return
                head, body = _compose(reply, request.method)
                if reply.close_after is not None:
                    writer.write(head + body[: reply.close_after])
                    await writer.drain()
                    return
                writer.write(head + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Server(port, requests, connections)
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)
