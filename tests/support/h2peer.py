"""The client side of an HTTP/2 connection, for tests of the server's
(:mod:`pycontainerd.edge.http2`): frames are made here, fed to a
:class:`~pycontainerd.edge.http2.Connection` through ``data_received``, and
what the connection writes to its (fake) transport is parsed back.

Header blocks are encoded and decoded with the ``hpack`` package, an
implementation independent of the server's.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import hpack

from pycontainerd.edge.http2 import PREFACE, Connection, FrameType, Stream, frame

__all__ = ["FakeTransport", "Frame", "Peer", "grpc_message", "request_headers"]

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY = 0x20


class FakeTransport(asyncio.Transport):
    """Collects what is written; records pause/close."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.closed = False
        self.reading = True
        self.protocol: Connection | None = None

    def write(self, data: Any) -> None:
        assert not self.closed, "write after close"
        self.written += data
        self.writes += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0


@dataclass(frozen=True)
class Frame:
    kind: int
    flags: int
    stream: int
    payload: bytes

    @property
    def error_code(self) -> int:
        """RST_STREAM's or GOAWAY's error code."""
        if self.kind == FrameType.GOAWAY:
            return int(struct.unpack(">L", self.payload[4:8])[0])
        assert self.kind == FrameType.RST_STREAM
        return int(struct.unpack(">L", self.payload)[0])


def request_headers(path: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        *extra,
    ]


def grpc_message(data: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BL", int(compressed), len(data)) + data


class Peer:
    """A test's client: feeds frames to a server connection, reads its output."""

    def __init__(self, on_stream: Callable[[Stream], None] | Connection) -> None:
        self.transport = FakeTransport()
        self.connection = (
            on_stream if isinstance(on_stream, Connection) else Connection(on_stream, None)
        )
        self.transport.protocol = self.connection
        self.connection.connection_made(self.transport)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self._read = 0
        self._rest = b""

    def feed(self, *frames: bytes) -> None:
        self.connection.data_received(b"".join(frames))

    def handshake(self, settings: Iterable[tuple[int, int]] = ()) -> None:
        payload = b"".join(struct.pack(">HL", k, v) for k, v in settings)
        self.feed(PREFACE, frame(FrameType.SETTINGS, 0, 0, payload))

    def block(self, fields: list[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(fields))

    def headers(
        self, stream: int, fields: list[tuple[str, str]], end_stream: bool = False
    ) -> bytes:
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(FrameType.HEADERS, flags, stream, self.block(fields))

    def output(self) -> list[Frame]:
        """The frames written since the last call."""
        data = self._rest + bytes(self.transport.written[self._read :])
        self._read = len(self.transport.written)
        frames, pos = [], 0
        while len(data) - pos >= 9:
            high, low, kind, flags, sid = struct.unpack_from(">HBBBL", data, pos)
            length = high << 8 | low
            if len(data) - pos - 9 < length:
                break
            frames.append(Frame(kind, flags, sid & 0x7FFFFFFF, data[pos + 9 : pos + 9 + length]))
            pos += 9 + length
        self._rest = data[pos:]
        return frames

    def fields(self, f: Frame) -> dict[str, str]:
        """A HEADERS frame's fields (decoded by the ``hpack`` package)."""
        assert f.kind == FrameType.HEADERS
        return {k: v for k, v in self.decoder.decode(f.payload)}
