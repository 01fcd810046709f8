"""A tiny HTTP endpoint serving Prometheus metrics at ``/v1/metrics``.

Enough HTTP for a scraper (GET, one response, close); anything else gets a
plain error status.  Request lines are size-capped.
"""

from __future__ import annotations

import asyncio
import contextlib

from pycontainerd.metrics import REGISTRY

__all__ = ["MetricsServer"]


class MetricsServer:
    def __init__(self, address: str) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError("want host:port, e.g. 127.0.0.1:1338")
        self._host = host.strip("[]") or "127.0.0.1"
        self._port = int(port)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode("latin-1").split()
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            if len(parts) < 2 or parts[0] != "GET":
                status, body = "405 Method Not Allowed", "only GET\n"
            elif parts[1].split("?")[0] not in ("/v1/metrics", "/metrics"):
                status, body = "404 Not Found", "not found\n"
            else:
                status, body = "200 OK", REGISTRY.render()
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
