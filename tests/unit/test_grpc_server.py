"""The gRPC mapping on HTTP/2: paths, metadata, deadlines, message framing
and limits, statuses -- crafted frames in, parsed frames out, no socket."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from google.protobuf import wrappers_pb2

from pycontainerd.edge import CODES, Call, Cardinality, Frames, Method, Status
from pycontainerd.edge.grpc_server import GrpcServer
from pycontainerd.edge.http2 import FrameType, frame
from tests.support.h2peer import END_STREAM, Frame, Peer, grpc_message, request_headers

pytestmark = pytest.mark.unit

T = TypeVar("T")
LIMIT = 1000
Bytes = wrappers_pb2.BytesValue
CALLS: list[Call] = []


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(test())  # type: ignore[arg-type]


async def echo(request: Bytes, call: Call) -> Bytes:
    CALLS.append(call)
    return Bytes(value=request.value)


async def fail(request: Bytes, call: Call) -> Bytes:
    raise Status(CODES["NOT_FOUND"], request.value.decode())


async def sleep(request: Bytes, call: Call) -> Bytes:
    CALLS.append(call)
    await asyncio.sleep(60)
    raise AssertionError("not cancelled")


async def count(requests: AsyncIterator[Bytes], call: Call) -> Bytes:
    total = b""
    async for request in requests:
        total += request.value
    return Bytes(value=b"%d" % len(total))


async def batches(request: Bytes, call: Call) -> AsyncIterator[Any]:
    yield Frames([b"\x0a\x01a", b"\x0a\x01b"])
    yield Frames([b"\x0a\x01c"])
    yield b"\x0a" + bytes([len(request.value)]) + request.value


ENDED: list[str] = []


async def forever(request: Bytes, call: Call) -> AsyncIterator[Any]:
    try:
        yield b"\x0a\x01a"
        await asyncio.sleep(60)
    finally:
        ENDED.append("forever")


def method(name: str, handler: Any, cardinality: Cardinality = Cardinality.UNARY) -> Method:
    return Method(
        name=f"/test.v1.Test/{name}",
        request=Bytes,
        response=Bytes,
        cardinality=cardinality,
        handler=handler,
        preserialized=name in ("Batches", "Forever"),
    )


METHODS = [
    method("Echo", echo),
    method("Fail", fail),
    method("Sleep", sleep),
    method("Count", count, Cardinality.CLIENT_STREAM),
    method("Batches", batches, Cardinality.SERVER_STREAM),
    method("Forever", forever, Cardinality.SERVER_STREAM),
]


def peer() -> Peer:
    p = Peer(GrpcServer(METHODS, max_recv_message_size=LIMIT).connection())
    p.handshake()
    p.output()
    return p


def message(value: bytes) -> bytes:
    return grpc_message(Bytes(value=value).SerializeToString())


async def answer(p: Peer, stream: int = 1) -> tuple[list[dict[str, str]], list[bytes]]:
    """The header blocks and DATA payloads of ``stream`` once it has ended."""
    blocks: list[dict[str, str]] = []
    data: list[bytes] = []
    for _ in range(200):
        await asyncio.sleep(0)
        for f in p.output():
            if f.stream != stream:
                continue
            if f.kind == FrameType.HEADERS:
                blocks.append(p.fields(f))
            elif f.kind == FrameType.DATA:
                data.append(f.payload)
            if f.flags & END_STREAM or f.kind == FrameType.RST_STREAM:
                return blocks, data
    raise AssertionError("the stream did not end")


def status_of(blocks: list[dict[str, str]]) -> tuple[int, str]:
    trailers = blocks[-1]
    return int(trailers["grpc-status"]), trailers.get("grpc-message", "")


def test_a_unary_call_is_answered_in_one_write() -> None:
    async def test() -> None:
        p = peer()
        writes = p.transport.writes
        p.feed(
            p.headers(1, request_headers("/test.v1.Test/Echo")),
            frame(FrameType.DATA, END_STREAM, 1, message(b"hello")),
        )
        blocks, data = await answer(p)
        assert p.transport.writes == writes + 1
        assert blocks[0] == {":status": "200", "content-type": "application/grpc"}
        assert data == [message(b"hello")]
        assert status_of(blocks) == (0, "")

    run(test)


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/test.v1.Test/Nope", "unknown method Nope for service test.v1.Test"),
        ("/test.v1.Nope/Echo", "unknown service test.v1.Nope"),
        ("/not-even-a-service", "malformed method name: '/not-even-a-service'"),
    ],
)
def test_an_unknown_method_is_unimplemented_in_grpc_gos_words(path: str, words: str) -> None:
    async def test() -> None:
        p = peer()
        p.feed(p.headers(1, request_headers(path)), frame(FrameType.DATA, END_STREAM, 1, b""))
        blocks, data = await answer(p)
        assert data == []
        assert len(blocks) == 1  # trailers only
        assert blocks[0][":status"] == "200"
        assert status_of(blocks) == (CODES["UNIMPLEMENTED"], words)

    run(test)


def test_a_message_over_the_limit_is_refused_before_it_is_buffered() -> None:
    async def test() -> None:
        p = peer()
        # The length prefix says LIMIT + 1; only 10 octets of the body follow.
        p.feed(
            p.headers(1, request_headers("/test.v1.Test/Echo")),
            frame(FrameType.DATA, 0, 1, struct.pack(">BL", 0, LIMIT + 1) + b"x" * 10),
        )
        blocks, _ = await answer(p)
        assert status_of(blocks) == (
            CODES["RESOURCE_EXHAUSTED"],
            f"grpc: received message larger than max ({LIMIT + 1} vs. {LIMIT})",
        )
        await asyncio.sleep(0)
        assert p.connection.streams() == []
        # The rest the client sends is dropped: the stream is gone.
        p.feed(frame(FrameType.DATA, END_STREAM, 1, b"x" * (LIMIT - 9)))
        assert not p.transport.closed

    run(test)


def test_a_request_split_across_many_data_frames_reaches_the_handler_whole() -> None:
    async def test() -> None:
        p = peer()
        body = message(b"0123456789" * 90)
        p.feed(p.headers(1, request_headers("/test.v1.Test/Echo")))
        for i in range(0, len(body), 7):
            p.feed(frame(FrameType.DATA, 0, 1, body[i : i + 7]))
            await asyncio.sleep(0)
        p.feed(frame(FrameType.DATA, END_STREAM, 1, b""))
        _, data = await answer(p)
        assert b"".join(data) == body

    run(test)


def test_a_client_stream_of_messages_cut_anywhere_is_read_message_by_message() -> None:
    async def test() -> None:
        p = peer()
        body = b"".join(message(b"m" * n) for n in (0, 1, 300, 999 - 3))
        p.feed(p.headers(1, request_headers("/test.v1.Test/Count")))
        for i in range(0, len(body), 333):
            p.feed(frame(FrameType.DATA, 0, 1, body[i : i + 333]))
        p.feed(frame(FrameType.DATA, END_STREAM, 1, b""))
        _, data = await answer(p)
        assert data == [message(b"1297")]

    run(test)


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (grpc_message(b"\x0a\x01x", compressed=True), "UNIMPLEMENTED", "compressed messages"),
        (b"\x00\x00\x00", "INTERNAL", "truncated message header"),
        (b"\x00\x00\x00\x00\x09abc", "INTERNAL", "truncated message"),
        (grpc_message(b"\xff\xff\xff"), "INTERNAL", "failed to decode request"),
        (b"", "INTERNAL", "missing request message"),
    ],
)
def test_bad_request_messages_get_their_status(body: bytes, code: str, words: str) -> None:
    async def test() -> None:
        p = peer()
        p.feed(
            p.headers(1, request_headers("/test.v1.Test/Echo")),
            frame(FrameType.DATA, END_STREAM, 1, body),
        )
        blocks, _ = await answer(p)
        got_code, got_words = status_of(blocks)
        assert got_code == CODES[code] and words in got_words

    run(test)


def test_a_compressed_encoding_is_unimplemented() -> None:
    async def test() -> None:
        p = peer()
        headers = request_headers("/test.v1.Test/Echo", ("grpc-encoding", "gzip"))
        p.feed(p.headers(1, headers), frame(FrameType.DATA, END_STREAM, 1, message(b"")))
        blocks, _ = await answer(p)
        assert status_of(blocks) == (
            CODES["UNIMPLEMENTED"],
            'grpc: Decompressor is not installed for grpc-encoding "gzip"',
        )

    run(test)


def test_a_request_that_is_not_grpc_gets_http_415() -> None:
    async def test() -> None:
        p = peer()
        headers = [
            (k, "text/plain" if k == "content-type" else v) for k, v in request_headers("/x/y")
        ]
        p.feed(p.headers(1, headers, end_stream=True))
        blocks, _ = await answer(p)
        assert blocks[0][":status"] == "415"
        assert status_of(blocks)[0] == CODES["INTERNAL"]

    run(test)


def test_a_request_without_a_path_is_reset() -> None:
    async def test() -> None:
        p = peer()
        p.feed(p.headers(1, [(":method", "POST"), ("content-type", "application/grpc")]))
        [rst] = p.output()
        assert rst.kind == FrameType.RST_STREAM and rst.error_code == 1

    run(test)


def test_metadata_reaches_the_call_without_the_reserved_headers() -> None:
    async def test() -> None:
        CALLS.clear()
        p = peer()
        headers = request_headers(
            "/test.v1.Test/Echo",
            ("user-agent", "test"),
            ("grpc-accept-encoding", "gzip"),
            ("containerd-namespace", "default"),
            ("x-text-bin", base64.b64encode(b"text").decode().rstrip("=")),
            ("x-binary-bin", base64.b64encode(b"\xff\xfe").decode()),
            ("x-not-base64-bin", "!!!"),
        )
        p.feed(p.headers(1, headers), frame(FrameType.DATA, END_STREAM, 1, message(b"")))
        await answer(p)
        assert CALLS[-1].metadata == (("containerd-namespace", "default"), ("x-text-bin", "text"))
        assert CALLS[-1].deadline is None

    run(test)


def test_the_deadline_cancels_the_call_with_deadline_exceeded() -> None:
    async def test() -> None:
        CALLS.clear()
        p = peer()
        headers = request_headers("/test.v1.Test/Sleep", ("grpc-timeout", "50m"))
        p.feed(p.headers(1, headers), frame(FrameType.DATA, END_STREAM, 1, message(b"")))
        loop = asyncio.get_running_loop()
        start = loop.time()
        frames: list[Frame] = []
        while not any(f.kind == FrameType.HEADERS for f in frames):
            await asyncio.sleep(0.01)
            frames += p.output()
            assert loop.time() - start < 5
        [trailers] = [f for f in frames if f.kind == FrameType.HEADERS]
        assert status_of([p.fields(trailers)]) == (
            CODES["DEADLINE_EXCEEDED"],
            "context deadline exceeded",
        )
        deadline = CALLS[-1].deadline
        assert deadline is not None
        await asyncio.sleep(0)
        assert p.connection.streams() == []

    run(test)


# The last: an Arabic-Indic digit, which str.isdigit() accepts.
@pytest.mark.parametrize("timeout", ["", "1", "123456789S", "1x", "-1S", "\u0661S"])
def test_a_malformed_timeout_is_refused(timeout: str) -> None:
    async def test() -> None:
        p = peer()
        headers = request_headers("/test.v1.Test/Echo", ("grpc-timeout", timeout))
        p.feed(p.headers(1, headers), frame(FrameType.DATA, END_STREAM, 1, message(b"")))
        blocks, _ = await answer(p)
        assert status_of(blocks)[0] == CODES["INTERNAL"]

    run(test)


def test_a_status_message_is_percent_encoded() -> None:
    async def test() -> None:
        p = peer()
        text = "100% ünïcode\nline"
        p.feed(
            p.headers(1, request_headers("/test.v1.Test/Fail")),
            frame(FrameType.DATA, END_STREAM, 1, message(text.encode())),
        )
        for _ in range(50):
            await asyncio.sleep(0)
        [trailers] = [f for f in p.output() if f.kind == FrameType.HEADERS]
        raw = dict(p.decoder.decode(trailers.payload, raw=True))
        assert raw[b"grpc-message"] == b"100%25 %C3%BCn%C3%AFcode%0Aline"
        assert raw[b"grpc-status"] == b"5"

    run(test)


def test_frames_of_a_server_stream_go_out_in_one_data_write_each() -> None:
    async def test() -> None:
        p = peer()
        p.feed(
            p.headers(1, request_headers("/test.v1.Test/Batches")),
            frame(FrameType.DATA, END_STREAM, 1, message(b"d")),
        )
        blocks, data = await answer(p)
        assert data == [
            grpc_message(b"\x0a\x01a") + grpc_message(b"\x0a\x01b"),
            grpc_message(b"\x0a\x01c"),
            grpc_message(b"\x0a\x01d"),
        ]
        assert status_of(blocks) == (0, "")

    run(test)


@pytest.mark.parametrize("how", ["reset", "gone"])
def test_a_long_server_stream_ends_when_the_client_resets_it_or_goes_away(how: str) -> None:
    async def test() -> None:
        ENDED.clear()
        p = peer()
        p.feed(
            p.headers(1, request_headers("/test.v1.Test/Forever")),
            frame(FrameType.DATA, END_STREAM, 1, message(b"")),
        )
        for _ in range(10):
            await asyncio.sleep(0)
        assert [f.kind for f in p.output()] == [FrameType.HEADERS, FrameType.DATA]
        [stream] = p.connection.streams()
        if how == "reset":
            p.feed(frame(FrameType.RST_STREAM, 0, 1, b"\0\0\0\x08"))
        else:
            p.connection.connection_lost(None)
        for _ in range(10):
            await asyncio.sleep(0)
        assert stream.task is not None and stream.task.done()
        assert ENDED == ["forever"]  # the handler's generator was closed
        assert p.connection.streams() == []

    run(test)


def test_a_server_stream_is_split_as_the_peers_window_requires() -> None:
    async def test() -> None:
        p = Peer(GrpcServer(METHODS, max_recv_message_size=LIMIT).connection())
        p.handshake([(0x4, 4)])  # INITIAL_WINDOW_SIZE: 4 octets a stream
        p.output()
        p.feed(
            p.headers(1, request_headers("/test.v1.Test/Batches")),
            frame(FrameType.DATA, END_STREAM, 1, message(b"d")),
        )
        received: list[Frame] = []
        for _ in range(100):
            await asyncio.sleep(0)
            out = p.output()
            received += out
            if any(f.flags & END_STREAM for f in out):
                break
            if any(f.kind == FrameType.DATA for f in out):
                p.feed(frame(FrameType.WINDOW_UPDATE, 0, 1, struct.pack(">L", 4)))
        data = [f.payload for f in received if f.kind == FrameType.DATA]
        assert all(len(d) <= 4 for d in data)
        assert b"".join(data) == b"".join(
            grpc_message(m) for m in (b"\x0a\x01a", b"\x0a\x01b", b"\x0a\x01c", b"\x0a\x01d")
        )

    run(test)


def test_stop_lets_running_calls_finish_then_cancels_the_rest(tmp_path: Any) -> None:
    async def test() -> None:
        server = GrpcServer(METHODS, max_recv_message_size=LIMIT)
        await server.start(str(tmp_path / "s.sock"))
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
        p = Peer(server.connection())  # only to encode the request
        writer.write(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + frame(FrameType.SETTINGS, 0, 0)
            + p.headers(1, request_headers("/test.v1.Test/Sleep"))
            + frame(FrameType.DATA, END_STREAM, 1, message(b""))
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        start = asyncio.get_running_loop().time()
        await server.stop(0.2)
        assert 0.2 <= asyncio.get_running_loop().time() - start < 2
        received = await reader.read()  # the server closed the connection
        assert struct.pack(">B", FrameType.GOAWAY) in received
        writer.close()

    run(test)
