"""Helpers for the ttrpc tests: a server on a temp socket, and a raw peer
that writes crafted frames and reads what comes back."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from pycontainerd import ttrpc
from pycontainerd.ttrpc import _wire as wire

SERVICE = "test.v1.Echo"


@contextlib.asynccontextmanager
async def serving(server: ttrpc.Server) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="ttrpc-", dir="/tmp") as d:
        path = str(Path(d) / "s.sock")
        await server.start(path)
        try:
            yield path
        finally:
            await server.shutdown(grace=0)


class RawPeer:
    """A client that speaks frames, not calls."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: str) -> RawPeer:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self,
        stream_id: int,
        method: str,
        payload: bytes | None = b"",
        *,
        flags: int = 0,
        **kw: object,
    ) -> None:
        req = wire.Request(SERVICE, method, payload, **kw)  # type: ignore[arg-type]
        await self.send(wire.frame(stream_id, 1, flags, wire.encode_request(req)))

    async def frame(self, timeout: float = 5.0) -> wire.Frame:
        async with asyncio.timeout(timeout):
            head = await self.reader.readexactly(wire.HEADER_LENGTH)
            length, stream_id, message_type, flags = wire.HEADER.unpack(head)
            data = await self.reader.readexactly(length)
        return wire.Frame(stream_id, message_type, flags, data)

    async def response(self, timeout: float = 5.0) -> tuple[int, wire.Response]:
        frame = await self.frame(timeout)
        assert frame.type == 2, frame
        return frame.stream_id, wire.decode_response(frame.data)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
