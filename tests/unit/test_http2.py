"""The HTTP/2 server connection, frame by frame: crafted frames go in
through ``data_received``, and the frames it writes come back out of a fake
transport (:mod:`tests.support.h2peer`)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from pycontainerd.edge import http2
from pycontainerd.edge.http2 import ErrorCode, FrameType, Stream, frame
from tests.support.h2peer import (
    END_HEADERS,
    END_STREAM,
    PADDED,
    PRIORITY,
    Frame,
    Peer,
    request_headers,
)

pytestmark = pytest.mark.unit

T = TypeVar("T")
PATH = "/test.v1.Test/Do"


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(test())  # type: ignore[arg-type]


class App:
    """Records the streams opened; answers each with a fixed response when asked."""

    def __init__(self) -> None:
        self.streams: list[Stream] = []

    def __call__(self, stream: Stream) -> None:
        self.streams.append(stream)


def settings_of(f: Frame) -> dict[int, int]:
    assert f.kind == FrameType.SETTINGS
    return dict(struct.unpack_from(">HL", f.payload, i) for i in range(0, len(f.payload), 6))


def goaway(peer: Peer) -> Frame:
    frames = [f for f in peer.output() if f.kind == FrameType.GOAWAY]
    assert frames, "no GOAWAY"
    assert peer.transport.closed
    return frames[-1]


# --- preface and settings ----------------------------------------------------------------


def test_the_server_announces_its_limits_and_acks_the_clients_settings() -> None:
    async def test() -> None:
        peer = Peer(App())
        first = peer.output()
        assert settings_of(first[0]) == {
            0x3: 100,  # MAX_CONCURRENT_STREAMS
            0x4: http2.STREAM_WINDOW,
            0x6: 65536,  # MAX_HEADER_LIST_SIZE
        }
        assert first[1].kind == FrameType.WINDOW_UPDATE and first[1].stream == 0
        peer.handshake([(0x4, 1000), (0x5, 20000)])
        [ack] = peer.output()
        assert (ack.kind, ack.flags, ack.payload) == (FrameType.SETTINGS, 1, b"")
        assert peer.connection.peer_initial_window == 1000
        assert peer.connection.peer_max_frame == 20000

    run(test)


def test_a_preface_that_arrives_in_pieces_is_read() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.output()
        settings = frame(FrameType.SETTINGS, 0, 0)
        data = http2.PREFACE + settings
        for i in range(len(data)):
            peer.feed(data[i : i + 1])
        assert [f.kind for f in peer.output()] == [FrameType.SETTINGS]
        assert not peer.transport.closed

    run(test)


def test_frames_that_arrive_an_octet_at_a_time_are_read_whole() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        data = peer.headers(1, request_headers(PATH)) + frame(
            FrameType.DATA, END_STREAM, 1, b"x" * 16384
        )
        for i in range(len(data)):
            peer.feed(data[i : i + 1])
            assert peer.connection.held <= 16384 + 9
        [stream] = app.streams
        assert stream.buffered == 16384 and stream.ended

    run(test)


def test_a_client_that_is_not_http2_is_refused() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.output()
        peer.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert goaway(peer).error_code == ErrorCode.PROTOCOL_ERROR

    run(test)


def test_the_first_frame_must_be_settings() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.output()
        peer.feed(http2.PREFACE, frame(FrameType.PING, 0, 0, b"12345678"))
        assert goaway(peer).error_code == ErrorCode.PROTOCOL_ERROR

    run(test)


@pytest.mark.parametrize(
    ("setting", "value", "code"),
    [
        (0x4, 1 << 31, ErrorCode.FLOW_CONTROL_ERROR),
        (0x5, 100, ErrorCode.PROTOCOL_ERROR),
        (0x5, 1 << 24, ErrorCode.PROTOCOL_ERROR),
        (0x2, 2, ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_settings_out_of_range_end_the_connection(setting: int, value: int, code: int) -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake([(setting, value)])
        assert goaway(peer).error_code == code

    run(test)


def test_settings_of_a_bad_size_are_a_frame_size_error() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.feed(frame(FrameType.SETTINGS, 0, 0, b"\x00\x04\x00"))
        assert goaway(peer).error_code == ErrorCode.FRAME_SIZE_ERROR

    run(test)


# --- ping ----------------------------------------------------------------------------------


def test_ping_is_acked_with_its_payload_and_an_ack_is_not() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.output()
        peer.feed(
            frame(FrameType.PING, 0, 0, b"abcdefgh"), frame(FrameType.PING, 1, 0, b"zzzzzzzz")
        )
        [ack] = peer.output()
        assert (ack.kind, ack.flags, ack.payload) == (FrameType.PING, 1, b"abcdefgh")

    run(test)


def test_control_frame_replies_go_out_in_one_write() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.output()
        writes = peer.transport.writes
        peer.feed(*[frame(FrameType.PING, 0, 0, b"%08d" % i) for i in range(500)])
        assert peer.transport.writes == writes + 1
        assert len(peer.output()) == 500

    run(test)


@pytest.mark.parametrize("payload", [b"1234567", b"123456789"])
def test_ping_of_a_bad_size_is_a_frame_size_error(payload: bytes) -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.feed(frame(FrameType.PING, 0, 0, payload))
        assert goaway(peer).error_code == ErrorCode.FRAME_SIZE_ERROR

    run(test)


def test_a_flood_stops_being_read_while_the_server_cannot_write() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.connection.pause_writing()
        assert not peer.transport.reading
        peer.connection.resume_writing()
        assert peer.transport.reading

    run(test)


# --- frames ---------------------------------------------------------------------------------


def test_a_frame_over_the_max_frame_size_is_refused_before_its_payload() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        # Only the header of a 16,385-octet frame: refused without waiting for the rest.
        peer.feed(struct.pack(">HBBBL", 16385 >> 8, 16385 & 0xFF, FrameType.DATA, 0, 1))
        assert goaway(peer).error_code == ErrorCode.FRAME_SIZE_ERROR

    run(test)


def test_unknown_frame_types_are_ignored() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.output()
        peer.feed(frame(0xFA, 0xFF, 3, b"whatever"), frame(FrameType.PING, 0, 0, b"12345678"))
        assert [f.kind for f in peer.output()] == [FrameType.PING]

    run(test)


def test_priority_is_ignored_and_priority_fields_of_headers_are_skipped() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        peer.feed(frame(FrameType.PRIORITY, 0, 1, b"\x00\x00\x00\x03\x10"))
        block = peer.block(request_headers(PATH))
        peer.feed(
            frame(FrameType.HEADERS, END_HEADERS | PRIORITY, 1, b"\x00\x00\x00\x00\x10" + block)
        )
        assert dict(app.streams[0].headers)[":path"] == PATH

    run(test)


def test_padded_headers_and_data_are_unpadded_and_the_padding_counts_for_flow_control() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        block = peer.block(request_headers(PATH))
        peer.feed(frame(FrameType.HEADERS, END_HEADERS | PADDED, 1, b"\x03" + block + b"\0\0\0"))
        peer.feed(frame(FrameType.DATA, PADDED, 1, b"\x04hello\0\0\0\0"))
        [stream] = app.streams
        assert stream.take(stream.buffered) == b"hello"
        assert stream.recv_window == http2.STREAM_WINDOW - 10

    run(test)


def test_padding_longer_than_the_frame_is_a_protocol_error() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        peer.feed(peer.headers(1, request_headers(PATH)))
        peer.feed(frame(FrameType.DATA, PADDED, 1, b"\x09abc"))
        assert goaway(peer).error_code == ErrorCode.PROTOCOL_ERROR

    run(test)


@pytest.mark.parametrize(
    "bad",
    [
        frame(FrameType.DATA, 0, 0, b"x"),
        frame(FrameType.HEADERS, END_HEADERS, 2, b"\x83"),
        frame(FrameType.DATA, 0, 7, b"x"),  # a stream never opened
        frame(FrameType.RST_STREAM, 0, 9, b"\0\0\0\x08"),
        frame(FrameType.PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\x02"),
        frame(FrameType.CONTINUATION, END_HEADERS, 1, b"\x83"),
        frame(FrameType.WINDOW_UPDATE, 0, 0, b"\0\0\0\0"),
    ],
)
def test_protocol_violations_end_the_connection(bad: bytes) -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.feed(bad)
        assert goaway(peer).error_code == ErrorCode.PROTOCOL_ERROR

    run(test)


def test_a_header_block_the_hpack_decoder_refuses_is_a_compression_error() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.feed(frame(FrameType.HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff\xff\xff"))
        assert goaway(peer).error_code == ErrorCode.COMPRESSION_ERROR

    run(test)


# --- headers ----------------------------------------------------------------------------------


def test_headers_continued_over_several_frames_open_one_stream() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        block = peer.block(request_headers(PATH, ("x-long", "v" * 40000)))
        parts = [block[i : i + 10000] for i in range(0, len(block), 10000)]
        peer.feed(frame(FrameType.HEADERS, END_STREAM, 1, parts[0]))
        for part in parts[1:-1]:
            peer.feed(frame(FrameType.CONTINUATION, 0, 1, part))
        assert not app.streams
        peer.feed(frame(FrameType.CONTINUATION, END_HEADERS, 1, parts[-1]))
        [stream] = app.streams
        assert dict(stream.headers)["x-long"] == "v" * 40000
        assert stream.ended

    run(test)


def test_a_frame_inside_a_header_block_is_a_protocol_error() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        block = peer.block(request_headers(PATH))
        peer.feed(frame(FrameType.HEADERS, 0, 1, block[:5]))
        peer.feed(frame(FrameType.PING, 0, 0, b"12345678"))
        assert goaway(peer).error_code == ErrorCode.PROTOCOL_ERROR

    run(test)


def test_a_header_list_over_64k_refuses_the_stream_and_hpack_stays_in_step() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        # Indexed by the encoder: the next block refers to this entry.
        fields = [*request_headers(PATH), ("x-big", "b" * 60000), ("x-more", "m" * 6000)]
        block = peer.block(fields)
        parts = [block[i : i + 16384] for i in range(0, len(block), 16384)]
        peer.feed(frame(FrameType.HEADERS, 0, 1, parts[0]))
        for i, part in enumerate(parts[1:], 1):
            peer.feed(
                frame(FrameType.CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, 1, part)
            )
        [rst] = [f for f in peer.output() if f.kind == FrameType.RST_STREAM]
        assert (rst.stream, rst.error_code) == (1, ErrorCode.FRAME_SIZE_ERROR)
        assert not app.streams
        peer.feed(peer.headers(3, [*request_headers(PATH), ("x-more", "m" * 6000)]))
        [stream] = app.streams
        assert dict(stream.headers)["x-more"] == "m" * 6000

    run(test)


def test_a_continuation_flood_ends_the_connection_at_128k() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.feed(frame(FrameType.HEADERS, 0, 1, b"\x00" * 16384))
        for _ in range(6):
            peer.feed(frame(FrameType.CONTINUATION, 0, 1, b"\x00" * 16384))
        assert not peer.transport.closed
        peer.feed(frame(FrameType.CONTINUATION, 0, 1, b"\x00" * 16384))
        peer.feed(frame(FrameType.CONTINUATION, 0, 1, b"\x00" * 16384))
        assert goaway(peer).error_code == ErrorCode.ENHANCE_YOUR_CALM

    run(test)


def test_stream_ids_must_increase() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        peer.feed(peer.headers(5, request_headers(PATH)))
        peer.feed(peer.headers(3, request_headers(PATH)))  # a closed stream: ignored
        assert [s.id for s in app.streams] == [5]

    run(test)


# --- streams ----------------------------------------------------------------------------------


def test_more_than_100_concurrent_streams_are_refused() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        peer.output()
        peer.feed(*[peer.headers(2 * i + 1, request_headers(PATH)) for i in range(101)])
        assert len(app.streams) == 100
        [rst] = peer.output()
        assert (rst.kind, rst.stream, rst.error_code) == (
            FrameType.RST_STREAM,
            201,
            ErrorCode.REFUSED_STREAM,
        )
        # A stream counts until the application releases it.
        app.streams[0].release()
        peer.feed(peer.headers(203, request_headers(PATH)))
        assert len(app.streams) == 101

    run(test)


def test_rst_stream_cancels_the_streams_task() -> None:
    async def test() -> None:
        started = asyncio.Event()

        async def serve(stream: Stream) -> None:
            try:
                started.set()
                await asyncio.sleep(60)
            finally:
                stream.release()

        def open_stream(stream: Stream) -> None:
            stream.start(serve(stream))

        peer = Peer(open_stream)
        peer.handshake()
        peer.feed(peer.headers(1, request_headers(PATH)))
        await started.wait()
        [stream] = peer.connection.streams()
        assert stream.task is not None
        peer.feed(frame(FrameType.RST_STREAM, 0, 1, b"\0\0\0\x08"))
        with pytest.raises(asyncio.CancelledError):
            await stream.task
        await asyncio.sleep(0)
        assert peer.connection.streams() == []
        # Data still in flight for the reset stream is dropped, not an error.
        peer.feed(frame(FrameType.DATA, 0, 1, b"late"))
        assert not peer.transport.closed

    run(test)


def test_a_stream_reset_before_its_task_ran_is_released_all_the_same() -> None:
    async def test() -> None:
        peer = Peer(lambda stream: stream.start(asyncio.sleep(60)))
        peer.handshake()
        peer.feed(
            peer.headers(1, request_headers(PATH)),
            frame(FrameType.RST_STREAM, 0, 1, b"\0\0\0\x08"),
        )
        [stream] = peer.connection.streams()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert stream.task is not None and stream.task.cancelled()
        assert peer.connection.streams() == []

    run(test)


def test_rapid_reset_is_cut_off_with_enhance_your_calm() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        peer.output()
        sid = 1
        while not peer.transport.closed and sid < 20000:
            peer.feed(
                peer.headers(sid, request_headers(PATH)),
                frame(FrameType.RST_STREAM, 0, sid, b"\0\0\0\x08"),
            )
            for stream in app.streams:
                stream.release()
            app.streams.clear()
            sid += 2
        assert peer.transport.closed
        assert sid <= 2 * (http2.RESET_BUDGET + 50)
        assert goaway(peer).error_code == ErrorCode.ENHANCE_YOUR_CALM

    run(test)


def test_streams_that_are_not_released_cap_a_rapid_reset_at_100_calls() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        frames = []
        for i in range(300):
            sid = 2 * i + 1
            frames.append(peer.headers(sid, request_headers(PATH)))
            frames.append(frame(FrameType.RST_STREAM, 0, sid, b"\0\0\0\x08"))
        peer.feed(*frames)
        assert len(app.streams) == 100
        assert all(s.reset for s in app.streams)

    run(test)


# --- flow control -------------------------------------------------------------------------------


def test_a_request_split_across_many_data_frames_is_reassembled() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        peer.feed(peer.headers(1, request_headers(PATH)))
        payload = bytes(range(256)) * 400
        peer.feed(
            *[
                frame(FrameType.DATA, 0, 1, payload[i : i + 1000])
                for i in range(0, len(payload), 1000)
            ]
        )
        peer.feed(frame(FrameType.DATA, END_STREAM, 1, b""))
        [stream] = app.streams
        await stream.fill(len(payload))
        assert stream.take(7) + stream.take(len(payload) - 7) == payload
        assert stream.ended

    run(test)


def test_the_client_may_not_send_more_than_the_stream_window() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.feed(peer.headers(1, request_headers(PATH)))
        chunk = b"x" * 16384
        frames = [frame(FrameType.DATA, 0, 1, chunk)] * (http2.STREAM_WINDOW // 16384)
        peer.feed(*frames)
        assert not peer.transport.closed
        peer.feed(frame(FrameType.DATA, 0, 1, b"x"))
        assert goaway(peer).error_code == ErrorCode.FLOW_CONTROL_ERROR

    run(test)


def test_window_is_granted_as_data_is_taken_not_before() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        peer.feed(peer.headers(1, request_headers(PATH)))
        peer.output()
        quarter = http2.STREAM_WINDOW // 4
        peer.feed(*[frame(FrameType.DATA, 0, 1, b"y" * 16384)] * (quarter // 16384))
        assert [f for f in peer.output() if f.kind == FrameType.WINDOW_UPDATE] == []
        [stream] = app.streams
        stream.take(quarter)
        updates = [f for f in peer.output() if f.kind == FrameType.WINDOW_UPDATE]
        assert [(f.stream, struct.unpack(">L", f.payload)[0]) for f in updates] == [(1, quarter)]

    run(test)


def test_a_message_larger_than_the_windows_gets_through_while_it_is_awaited() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        peer.feed(peer.headers(1, request_headers(PATH)))
        [stream] = app.streams
        size = 16 << 20
        reader = asyncio.get_running_loop().create_task(stream.fill(size))
        await asyncio.sleep(0)
        windows = {0: http2.CONNECTION_WINDOW, 1: http2.STREAM_WINDOW}
        sent = 0
        while sent < size:
            for f in peer.output():
                if f.kind == FrameType.WINDOW_UPDATE:
                    windows[f.stream] += struct.unpack(">L", f.payload)[0]
            n = min(16384, windows[0], windows[1], size - sent)
            assert n > 0, "the client is stalled"
            peer.feed(frame(FrameType.DATA, 0, 1, b"z" * n))
            windows[0] -= n
            windows[1] -= n
            sent += n
        await reader
        assert stream.buffered == size

    run(test)


def test_responses_wait_for_the_peers_window_and_respect_its_frame_size() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake([(0x4, 100)])  # INITIAL_WINDOW_SIZE
        peer.feed(peer.headers(1, request_headers(PATH), end_stream=True))
        peer.output()
        [stream] = app.streams
        payload = bytes(range(250)) * 400  # 100,000 octets
        assert not stream.send(b"\x88", payload, None)
        stream.send_headers(b"\x88")
        writer = asyncio.get_running_loop().create_task(stream.send_data(payload))
        await asyncio.sleep(0)
        out = peer.output()
        assert [f.kind for f in out] == [FrameType.HEADERS, FrameType.DATA]
        assert len(out[1].payload) == 100
        peer.feed(frame(FrameType.WINDOW_UPDATE, 0, 1, struct.pack(">L", 200_000)))
        await asyncio.sleep(0)
        got = b"".join(f.payload for f in peer.output())
        assert not writer.done()  # the connection window (65,535) is spent
        peer.feed(frame(FrameType.WINDOW_UPDATE, 0, 0, struct.pack(">L", 100_000)))
        await writer
        data = [f for f in peer.output() if f.kind == FrameType.DATA]
        assert all(len(f.payload) <= 16384 for f in data)
        assert out[1].payload + got + b"".join(f.payload for f in data) == payload

    run(test)


def test_a_window_overflow_is_a_flow_control_error() -> None:
    async def test() -> None:
        peer = Peer(App())
        peer.handshake()
        peer.feed(frame(FrameType.WINDOW_UPDATE, 0, 0, struct.pack(">L", (1 << 31) - 1)))
        assert goaway(peer).error_code == ErrorCode.FLOW_CONTROL_ERROR

    run(test)


# --- going away -----------------------------------------------------------------------------------


def test_after_goaway_new_streams_are_refused_and_open_ones_go_on() -> None:
    async def test() -> None:
        app = App()
        peer = Peer(app)
        peer.handshake()
        peer.feed(peer.headers(1, request_headers(PATH)))
        peer.output()
        peer.connection.goaway()
        [away] = peer.output()
        assert away.kind == FrameType.GOAWAY and away.error_code == ErrorCode.NO_ERROR
        assert struct.unpack(">L", away.payload[:4])[0] == 1
        peer.feed(peer.headers(3, request_headers(PATH)))
        [rst] = peer.output()
        assert (rst.stream, rst.error_code) == (3, ErrorCode.REFUSED_STREAM)
        [stream] = app.streams
        assert stream.send(b"\x88", b"ok", b"\x40\x01a\x01b")
        assert not peer.transport.closed

    run(test)


def test_connection_loss_cancels_the_calls() -> None:
    async def test() -> None:
        async def serve(stream: Stream) -> None:
            try:
                await stream.fill(10)
            finally:
                stream.release()

        def open_stream(stream: Stream) -> None:
            stream.start(serve(stream))

        peer = Peer(open_stream)
        peer.handshake()
        peer.feed(peer.headers(1, request_headers(PATH)))
        [stream] = peer.connection.streams()
        await asyncio.sleep(0)
        peer.connection.connection_lost(None)
        assert stream.task is not None
        with pytest.raises(asyncio.CancelledError):
            await stream.task
        await asyncio.sleep(0)
        assert peer.connection.streams() == []

    run(test)
