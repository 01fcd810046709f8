"""Fuzz the HTTP/2 server's frame parser and the gRPC mapping over it.

Random sequences of frames -- requests with headers the client's HPACK
encoder (the ``hpack`` package) made, DATA carrying gRPC messages or junk,
SETTINGS, PING, WINDOW_UPDATE, RST_STREAM, CONTINUATION, frames of any type
with any flags, stream and payload -- and random bytes after a valid
preface go, cut at random places, into one server connection
(``data_received`` on a fake transport) serving a few test methods, with
the event loop run between pieces so calls make progress.

What must hold, for every input:

* nothing escapes ``data_received``, and the connection logs no internal
  error (what a bug in the parser would do); it answers a protocol error
  with GOAWAY and closes;
* memory stays within the documented bounds at every step: at most 100
  streams, and the octets held (a partial frame, a header block being read,
  data no call has taken) within the frame, header block, window and
  message limits;
* once the client goes away, every call's task ends and no stream is left.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import hpack
import pytest
from google.protobuf import wrappers_pb2
from hypothesis import strategies as st

from pycontainerd.edge import CODES, Call, Cardinality, Frames, Method, Status
from pycontainerd.edge import http2 as h2
from pycontainerd.edge.grpc_server import GrpcServer
from pycontainerd.edge.http2 import FrameType, frame
from tests.fuzz import _harness
from tests.support.h2peer import Peer, grpc_message

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

LIMIT = 4096
Bytes = wrappers_pb2.BytesValue


async def _echo(request: Bytes, call: Call) -> Bytes:
    if request.value == b"fail":
        raise Status(CODES["NOT_FOUND"], "not found: 100% \n")
    return Bytes(value=request.value)


async def _count(requests: AsyncIterator[Bytes], call: Call) -> Bytes:
    n = 0
    async for request in requests:
        n += len(request.value)
    return Bytes(value=b"%d" % n)


async def _stream(request: Bytes, call: Call) -> AsyncIterator[Any]:
    for i in range(len(request.value) % 5):
        yield Frames([b"\x0a\x01x"] * (i + 1))
        yield Bytes(value=request.value)
        await asyncio.sleep(0)


async def _wait(request: Bytes, call: Call) -> Bytes:
    await asyncio.sleep(0.001 * (len(request.value) % 4))
    return Bytes()


def _method(name: str, handler: Any, kind: Cardinality) -> Method:
    return Method(f"/fuzz.v1.Fuzz/{name}", Bytes, Bytes, kind, handler)


METHODS = [
    _method("Echo", _echo, Cardinality.UNARY),
    _method("Count", _count, Cardinality.CLIENT_STREAM),
    _method("Stream", _stream, Cardinality.SERVER_STREAM),
    _method("Wait", _wait, Cardinality.UNARY),
]
PATHS = [m.name for m in METHODS] * 3 + ["/fuzz.v1.Fuzz/Nope", "/x", "", "/a/b/c"]
#: What a connection may hold at any time (see pycontainerd.edge.http2's bounds).
HELD = (h2.MAX_FRAME_SIZE + 9) + h2.MAX_HEADER_BLOCK + h2.CONNECTION_WINDOW + 100 * (LIMIT + 5)

_HEADER_NAMES = st.sampled_from(
    [
        ":method",
        ":path",
        ":scheme",
        ":authority",
        ":status",
        "content-type",
        "te",
        "grpc-timeout",
        "grpc-encoding",
        "containerd-namespace",
        "x-bin",
        "X-Upper",
        "",
    ]
)
_REQUEST = st.tuples(
    st.sampled_from(PATHS),
    st.lists(
        st.tuples(_HEADER_NAMES, st.text(max_size=12) | st.sampled_from(["1m", "2S", "gzip"])),
        max_size=2,
    )
    | st.just([]),
    st.sampled_from(["POST"] * 10 + ["GET", ""]),
    st.sampled_from(["application/grpc"] * 8 + ["application/grpc+proto", "text/html", ""]),
)
_VALID_MESSAGE = st.binary(max_size=64).map(
    lambda b: grpc_message(Bytes(value=b).SerializeToString())
)
_MESSAGE = st.one_of(
    _VALID_MESSAGE,
    _VALID_MESSAGE,
    _VALID_MESSAGE,
    st.binary(max_size=40),
    st.sampled_from(
        [
            grpc_message(Bytes(value=b"fail").SerializeToString()),
            grpc_message(b"", compressed=True),
            struct.pack(">BL", 0, LIMIT + 1),
            struct.pack(">BL", 0, 3000) + b"\x0a",
        ]
    ),
)
_ANY_SID = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 11, 101, (1 << 31) - 1]) | st.integers(0, 1 << 31)
# A client's stream ids: the next one for a request, the last or an earlier
# one for the rest.
_SID = st.sampled_from(["last"] * 3 + ["earlier"])
_REQUEST_OP = st.tuples(
    st.just("request"),
    st.just("new"),
    _REQUEST,
    st.sampled_from([False, False, False, True]),
    st.integers(0, 3),
)
#: What a client does, errors of its own included (a bad message, a reset).
_CLIENT_OP = st.one_of(
    _REQUEST_OP,
    st.tuples(st.just("data"), _SID, _MESSAGE, st.booleans(), st.integers(0, 300)),
    st.tuples(st.just("tick"), st.integers(1, 5)),
    st.tuples(
        st.just("settings"),
        st.lists(
            st.sampled_from([(1, 0), (1, 4096), (3, 0), (3, 1000), (6, 100)])
            | st.tuples(st.just(4), st.sampled_from([0, 1, 5, 65535, (1 << 31) - 1]))
            | st.tuples(st.just(5), st.sampled_from([16384, 16385, (1 << 24) - 1])),
            max_size=3,
        ),
    ),
    st.tuples(st.just("window"), _SID | st.just(0), st.sampled_from([1, 5, 65535, 1 << 20])),
    st.tuples(st.just("rst"), _SID, st.integers(0, 14)),
    st.tuples(st.just("ping"), st.booleans()),
)
#: What no client does: any frame, any stream, any setting.
_HOSTILE_OP = st.one_of(
    st.tuples(
        st.just("frame"), st.integers(0, 12), st.integers(0, 255), _ANY_SID, st.binary(max_size=48)
    ),
    st.tuples(st.just("request"), _ANY_SID, _REQUEST, st.booleans(), st.integers(0, 3)),
    st.tuples(st.just("data"), _ANY_SID, _MESSAGE, st.booleans(), st.integers(0, 300)),
    st.tuples(st.just("window"), _ANY_SID, st.sampled_from([0, (1 << 31) - 1])),
    st.tuples(st.just("rst"), _ANY_SID, st.integers(0, 14)),
    st.tuples(
        st.just("settings"),
        st.lists(st.tuples(st.integers(0, 8), st.sampled_from([2, 1 << 24, 1 << 31, 1 << 32 - 1]))),
    ),
)
#: (ops, where to cut the bytes): a request first, then what a client does,
#: with now and then what no client does.
FRAME_SEQUENCES = st.tuples(
    st.tuples(
        _REQUEST_OP,
        st.lists(_CLIENT_OP, max_size=40),
        st.lists(st.tuples(st.integers(0, 40), _HOSTILE_OP), max_size=2),
    ).map(lambda v: _insert([v[0], *v[1]], v[2])),
    st.lists(st.integers(1, 400), max_size=8),
)


def _insert(
    ops: list[tuple[Any, ...]], inserts: list[tuple[int, tuple[Any, ...]]]
) -> list[tuple[Any, ...]]:
    for position, op in inserts:
        ops.insert(position, op)
    return ops


class _Ids:
    """Resolves the symbolic stream ids of the ops, as a client numbers streams."""

    def __init__(self) -> None:
        self.opened = [1]
        self.next = 1

    def __call__(self, sid: int | str) -> int:
        if sid == "new":
            sid = self.next
            self.next += 2
            self.opened.append(sid)
        elif sid == "last":
            sid = self.opened[-1]
        elif sid == "earlier":
            sid = self.opened[len(self.opened) // 2]
        assert isinstance(sid, int)
        return sid


def _encode(encoder: hpack.Encoder, ids: _Ids, op: tuple[Any, ...]) -> bytes:
    kind = op[0]
    if kind in ("request", "data", "window", "rst"):
        op = (kind, ids(op[1]), *op[2:])
    if kind == "request":
        _, sid, (path, extra, http_method, content_type), end, pieces = op
        fields = [(":method", http_method), (":path", path), (":scheme", "http")]
        fields += [("content-type", content_type), *[(k.lower(), v) for k, v in extra if k]]
        block = bytes(encoder.encode(fields))
        flags = 0x1 if end else 0
        if pieces == 0 or len(block) < 2:
            return frame(FrameType.HEADERS, flags | 0x4, sid, block)
        cut = len(block) // (pieces + 1) or 1
        parts = [block[i : i + cut] for i in range(0, len(block), cut)]
        out = [frame(FrameType.HEADERS, flags, sid, parts[0])]
        out += [frame(FrameType.CONTINUATION, 0, sid, p) for p in parts[1:-1]]
        out.append(frame(FrameType.CONTINUATION, 0x4, sid, parts[-1] if len(parts) > 1 else b""))
        return b"".join(out)
    if kind == "data":
        _, sid, payload, end, padding = op
        flags = 0x1 if end else 0
        if padding:
            pad = padding % 256
            return frame(FrameType.DATA, flags | 0x8, sid, bytes([pad]) + payload + b"\0" * pad)
        return frame(FrameType.DATA, flags, sid, payload)
    if kind == "settings":
        return frame(
            FrameType.SETTINGS,
            0,
            0,
            b"".join(struct.pack(">HL", k, v % (1 << 32)) for k, v in op[1]),
        )
    if kind == "window":
        return frame(FrameType.WINDOW_UPDATE, 0, op[1], struct.pack(">L", op[2]))
    if kind == "rst":
        return frame(FrameType.RST_STREAM, 0, op[1], struct.pack(">L", op[2]))
    if kind == "ping":
        return frame(FrameType.PING, int(op[1]), 0, b"pingpong")
    if kind == "frame":
        return frame(op[1], op[2], op[3], op[4])
    return b""


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _drive(chunks: list[bytes | int]) -> None:
    """Feed ``chunks`` (bytes, or a number of loop turns to run) to one connection."""
    server = GrpcServer(METHODS, max_recv_message_size=LIMIT)
    peer = Peer(server.connection())
    connection = peer.connection
    errors = _Errors()
    edge_log = logging.getLogger("pycontainerd.edge")
    edge_log.addHandler(errors)
    tasks: set[asyncio.Task[Any]] = set()
    try:
        for chunk in chunks:
            if isinstance(chunk, int):
                for _ in range(chunk):
                    await asyncio.sleep(0)
            elif not peer.transport.closed:
                connection.data_received(chunk)
            streams = connection.streams()
            tasks.update(s.task for s in streams if s.task is not None)
            assert len(streams) <= h2.MAX_CONCURRENT_STREAMS
            assert connection.held <= HELD, connection.held
        for _ in range(20):  # let the calls answer
            await asyncio.sleep(0)
        if not connection.closed:
            connection.connection_lost(None)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            assert not pending, f"{len(pending)} calls still running after the client left"
        await asyncio.sleep(0)
        assert connection.streams() == []
        assert not errors.records, [r.getMessage() for r in errors.records]
    finally:
        edge_log.removeHandler(errors)


def _chunks(ops: list[tuple[Any, ...]], cuts: list[int]) -> list[bytes | int]:
    encoder = hpack.Encoder()
    ids = _Ids()
    data = h2.PREFACE + frame(FrameType.SETTINGS, 0, 0)
    out: list[bytes | int] = []
    for op in ops:
        if op[0] == "tick":
            if data:
                out.append(data)
                data = b""
            out.append(op[1])
        else:
            data += _encode(encoder, ids, op)
    out.append(data)
    # Cut the byte stream at the given places, whatever the frame boundaries.
    result: list[bytes | int] = []
    cut_iter = iter(cuts)
    for item in out:
        if isinstance(item, int):
            result.append(item)
            continue
        while item:
            n = next(cut_iter, len(item))
            result.append(item[:n])
            item = item[n:]
    return result


def test_frame_sequences_never_escape_data_received_and_stay_bounded() -> None:
    def check(value: tuple[list[tuple[Any, ...]], list[int]]) -> None:
        ops, cuts = value
        asyncio.run(_drive(_chunks(ops, cuts)))

    _harness.run("http2-frames", FRAME_SEQUENCES, check, short=300)


def test_random_bytes_after_the_preface_never_escape_data_received() -> None:
    def check(data: bytes) -> None:
        preface = h2.PREFACE + frame(FrameType.SETTINGS, 0, 0)
        asyncio.run(_drive([preface + data, 3]))

    _harness.run("http2-bytes", st.binary(max_size=512), check, short=200)
