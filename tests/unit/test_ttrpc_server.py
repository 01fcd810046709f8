"""The ttrpc server against crafted frames: what it answers, and what it
refuses to hold.  Where containerd's ttrpc answers a case, the expected
status (code and message) is the one it was seen to answer (checked against
containerd 1.6's ttrpc socket by tests/interop/test_ttrpc_containerd.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from pycontainerd import ttrpc
from pycontainerd.ttrpc import _wire as wire
from pycontainerd.ttrpc._wire import FLAG_NO_DATA, FLAG_REMOTE_CLOSED, FLAG_REMOTE_OPEN
from tests.unit._ttrpc import SERVICE, RawPeer, serving

pytestmark = pytest.mark.unit

MiB = 1 << 20


async def echo(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
    return b"echo:" + payload


def server_with(**handlers: object) -> ttrpc.Server:
    server = ttrpc.Server()
    server.register(SERVICE, "Echo", echo)
    for name, handler in handlers.items():
        server.register(SERVICE, name, handler)  # type: ignore[arg-type]
    return server


def status_of(response: wire.Response) -> tuple[int, str]:
    assert response.status is not None
    return response.status.code, response.status.message


def test_a_unary_call_is_answered_on_its_stream_with_an_ok_status() -> None:
    async def scenario() -> None:
        async with serving(server_with()) as path:
            peer = await RawPeer.connect(path)
            await peer.request(1, "Echo", b"hi")
            stream_id, response = await peer.response()
            assert stream_id == 1
            assert response == wire.Response(wire.WireStatus(0, ""), b"echo:hi")
            await peer.close()

    asyncio.run(scenario())


def test_unknown_services_and_methods_are_unimplemented_as_ttrpc_words_it() -> None:
    async def scenario() -> None:
        async with serving(server_with()) as path:
            peer = await RawPeer.connect(path)
            req = wire.Request("no.such.Service", "Echo", b"")
            await peer.send(wire.frame(1, 1, 0, wire.encode_request(req)))
            assert status_of((await peer.response())[1]) == (12, "service no.such.Service")
            await peer.request(3, "Nope")
            assert status_of((await peer.response())[1]) == (12, "method Nope")
            # A name is echoed, but not a megabyte of it.
            await peer.request(5, "N" * MiB)
            code, message = status_of((await peer.response())[1])
            assert code == 12 and len(message) < 300
            await peer.close()

    asyncio.run(scenario())


def test_a_request_envelope_that_does_not_decode_is_invalid_argument() -> None:
    async def scenario() -> None:
        async with serving(server_with()) as path:
            peer = await RawPeer.connect(path)
            await peer.send(wire.frame(1, 1, 0, b"\xff\xff"))
            code, message = status_of((await peer.response())[1])
            assert code == 3 and message.startswith("unmarshal request error: ")
            await peer.request(3, "Echo", b"still served")
            assert (await peer.response())[1].payload == b"echo:still served"
            await peer.close()

    asyncio.run(scenario())


def test_even_and_reused_stream_ids_are_refused() -> None:
    async def scenario() -> None:
        async with serving(server_with()) as path:
            peer = await RawPeer.connect(path)
            await peer.request(2, "Echo")
            assert await peer.response() == (
                2,
                wire.Response(
                    wire.WireStatus(3, "StreamID must be odd for client initiated streams")
                ),
            )
            await peer.request(7, "Echo")
            assert (await peer.response())[0] == 7
            for reused in (7, 5):
                await peer.request(reused, "Echo")
                assert await peer.response() == (
                    reused,
                    wire.Response(
                        wire.WireStatus(3, "StreamID cannot be re-used and must increment")
                    ),
                )
            await peer.close()

    asyncio.run(scenario())


def test_an_oversized_frame_is_refused_from_its_header_and_the_connection_goes_on() -> None:
    async def scenario() -> None:
        async with serving(server_with()) as path:
            peer = await RawPeer.connect(path)
            length = 4 * MiB + 1
            # Only the header: the refusal comes before any of the data is sent.
            await peer.send(wire.HEADER.pack(length, 1, 1, 0))
            assert await peer.response() == (
                1,
                wire.Response(
                    wire.WireStatus(
                        8, "message length 4194305 exceed maximum message size of 4194304"
                    )
                ),
            )
            for _ in range(4):  # the data, skipped as it comes
                await peer.send(b"\0" * MiB)
            await peer.send(b"\0")
            await peer.request(3, "Echo", b"after")
            assert await peer.response() == (3, wire.Response(wire.WireStatus(), b"echo:after"))
            await peer.close()

    asyncio.run(scenario())


def test_metadata_and_deadline_reach_the_handler() -> None:
    seen: list[ttrpc.ServerContext] = []

    async def look(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        seen.append(ctx)
        return b""

    async def scenario() -> None:
        async with serving(server_with(Look=look)) as path:
            peer = await RawPeer.connect(path)
            md = (("containerd-namespace-ttrpc", "prod"), ("X-Trace", "a"), ("x-trace", "b"))
            await peer.request(1, "Look", metadata=md, timeout_nano=30_000_000_000)
            await peer.response()
            await peer.request(3, "Look")
            await peer.response()
            await peer.close()

    asyncio.run(scenario())
    ctx = seen[0]
    assert (ctx.service, ctx.method) == (SERVICE, "Look")
    assert ctx.metadata == (
        ("containerd-namespace-ttrpc", "prod"),
        ("X-Trace", "a"),
        ("x-trace", "b"),
    )
    assert ctx.get("CONTAINERD-NAMESPACE-TTRPC") == "prod"
    assert ctx.get("x-trace") == "a"  # the first value, as ttrpc's GetMetadataValue
    remaining = ctx.time_remaining()
    assert remaining is not None and 25 < remaining <= 30
    assert seen[1].deadline is None and seen[1].metadata == ()


def test_too_much_metadata_is_refused_before_the_handler_runs() -> None:
    called = []

    async def look(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        called.append(ctx)
        return b""

    async def scenario() -> None:
        async with serving(server_with(Look=look)) as path:
            peer = await RawPeer.connect(path)
            await peer.request(1, "Look", metadata=tuple(("k", "v") for _ in range(129)))
            code, message = status_of((await peer.response())[1])
            assert (code, message) == (8, "request metadata: more than 128 entries")
            await peer.request(3, "Look", metadata=(("k", "v" * (65 << 10)),))
            assert status_of((await peer.response())[1])[0] == 8
            await peer.close()

    asyncio.run(scenario())
    assert called == []


def test_a_handlers_status_error_is_the_calls_status() -> None:
    async def refuse(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        raise ttrpc.StatusError(ttrpc.Code.NOT_FOUND, "container x: not found")

    async def scenario() -> None:
        async with serving(server_with(Refuse=refuse)) as path:
            peer = await RawPeer.connect(path)
            await peer.request(1, "Refuse")
            assert status_of((await peer.response())[1]) == (5, "container x: not found")
            await peer.close()

    asyncio.run(scenario())


def test_an_unexpected_failure_is_unknown_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        raise KeyError("secret detail")

    async def not_bytes(payload: bytes, ctx: ttrpc.ServerContext) -> str:
        return "text"

    async def scenario() -> None:
        async with serving(server_with(Broken=broken, NotBytes=not_bytes)) as path:
            peer = await RawPeer.connect(path)
            await peer.request(1, "Broken")
            code, message = status_of((await peer.response())[1])
            assert code == 2 and "secret" not in message
            await peer.request(3, "NotBytes")
            assert status_of((await peer.response())[1])[0] == 2
            await peer.close()

    with caplog.at_level(logging.ERROR, logger="pycontainerd.ttrpc"):
        asyncio.run(scenario())
    assert "secret detail" in caplog.text


def test_a_call_past_its_timeout_is_cancelled_and_answered_deadline_exceeded() -> None:
    cancelled = asyncio.Event()

    async def slow(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    async def scenario() -> None:
        async with serving(server_with(Slow=slow)) as path:
            peer = await RawPeer.connect(path)
            loop = asyncio.get_running_loop()
            start = loop.time()
            await peer.request(1, "Slow", timeout_nano=100_000_000)
            assert status_of((await peer.response())[1]) == (4, "context deadline exceeded")
            assert 0.09 < loop.time() - start < 2
            assert cancelled.is_set()
            await peer.close()

    asyncio.run(scenario())


def test_concurrent_calls_on_one_connection_answer_as_they_finish() -> None:
    async def sleepy(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        await asyncio.sleep(float(payload))
        return payload

    async def scenario() -> None:
        async with serving(server_with(Sleep=sleepy)) as path:
            peer = await RawPeer.connect(path)
            for stream_id, delay in ((1, b"0.3"), (3, b"0.1"), (5, b"0.2"), (7, b"0")):
                await peer.request(stream_id, "Sleep", delay)
            order = [(await peer.response())[0] for _ in range(4)]
            assert order == [7, 3, 5, 1]
            await peer.close()

    asyncio.run(scenario())


def test_a_peer_that_disconnects_mid_call_cancels_its_handlers() -> None:
    started = asyncio.Event()
    cancelled: list[int] = []

    async def hang(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(int(payload))
            raise
        return b""

    async def scenario() -> None:
        server = server_with(Hang=hang)
        async with serving(server) as path:
            peer = await RawPeer.connect(path)
            await peer.request(1, "Hang", b"1")
            await peer.request(3, "Hang", b"3")
            # Half a frame, then gone.
            await peer.send(
                wire.frame(5, 1, 0, wire.encode_request(wire.Request(SERVICE, "Echo")))[:7]
            )
            await started.wait()
            await asyncio.sleep(0.05)
            await peer.close()
            for _ in range(100):
                if len(cancelled) == 2 and server.connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert sorted(cancelled) == [1, 3]
            assert server.connections == 0
            other = await RawPeer.connect(path)
            await other.request(1, "Echo", b"x")
            assert (await other.response())[1].payload == b"echo:x"
            await other.close()

    asyncio.run(scenario())


def test_calls_past_max_streams_wait_for_a_slot() -> None:
    running = 0
    most = 0

    async def busy(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return payload

    async def scenario() -> None:
        server = ttrpc.Server(max_streams=3)
        server.register(SERVICE, "Busy", busy)
        async with serving(server) as path:
            peer = await RawPeer.connect(path)
            for i in range(20):
                await peer.request(2 * i + 1, "Busy", str(i).encode())
            answers = [await peer.response() for _ in range(20)]
            assert sorted(sid for sid, _ in answers) == [2 * i + 1 for i in range(20)]
            assert all(status_of(r) == (0, "") for _, r in answers)
            await peer.close()

    asyncio.run(scenario())
    assert most == 3


def test_calls_past_the_waiting_room_are_refused_resource_exhausted() -> None:
    release = asyncio.Event()

    async def block(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        await release.wait()
        return b""

    async def scenario() -> None:
        server = ttrpc.Server(max_streams=1)  # one runs, 16 may wait
        server.register(SERVICE, "Block", block)
        async with serving(server) as path:
            peer = await RawPeer.connect(path)
            for i in range(18):
                await peer.request(2 * i + 1, "Block")
            stream_id, response = await peer.response()
            assert stream_id == 35
            assert status_of(response) == (8, "ttrpc: too many concurrent streams (limit 1)")
            release.set()
            done = sorted([(await peer.response())[0] for _ in range(17)])
            assert done == [2 * i + 1 for i in range(17)]
            await peer.close()

    asyncio.run(scenario())


def test_a_response_too_large_for_a_frame_becomes_resource_exhausted() -> None:
    async def huge(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        return b"x" * (4 * MiB)

    async def scenario() -> None:
        async with serving(server_with(Huge=huge)) as path:
            peer = await RawPeer.connect(path)
            await peer.request(1, "Huge")
            code, message = status_of((await peer.response())[1])
            assert code == 8 and message.startswith("message length ")
            await peer.close()

    asyncio.run(scenario())


def test_unknown_message_types_are_ignored_and_stray_data_is_refused() -> None:
    async def scenario() -> None:
        async with serving(server_with()) as path:
            peer = await RawPeer.connect(path)
            await peer.send(wire.frame(1, 9, 0, b"from the future"))
            await peer.send(wire.frame(9, 3, 0, b"data for no stream"))
            assert await peer.response() == (
                9,
                wire.Response(wire.WireStatus(3, "StreamID is no longer active")),
            )
            await peer.request(11, "Echo", b"ok")
            assert (await peer.response())[1].payload == b"echo:ok"
            await peer.close()

    asyncio.run(scenario())


def test_connections_past_the_limit_are_closed() -> None:
    async def scenario() -> None:
        server = ttrpc.Server(max_connections=1)
        server.register(SERVICE, "Echo", echo)
        async with serving(server) as path:
            first = await RawPeer.connect(path)
            await first.request(1, "Echo")
            await first.response()
            second = await RawPeer.connect(path)
            assert await asyncio.wait_for(second.reader.read(), 5) == b""
            await second.close()
            await first.close()

    asyncio.run(scenario())


def test_server_streams_send_data_then_an_empty_remote_closed_frame() -> None:
    async def count(payload: bytes, ctx: ttrpc.ServerContext) -> AsyncIterator[bytes]:
        for i in range(int(payload)):
            yield str(i).encode()

    async def scenario() -> None:
        server = ttrpc.Server()
        server.register(SERVICE, "Count", count, server_streaming=True)
        async with serving(server) as path:
            peer = await RawPeer.connect(path)
            await peer.request(1, "Count", b"3", flags=FLAG_REMOTE_CLOSED)
            frames = [await peer.frame() for _ in range(4)]
            assert frames == [
                wire.Frame(1, 3, 0, b"0"),
                wire.Frame(1, 3, 0, b"1"),
                wire.Frame(1, 3, 0, b"2"),
                wire.Frame(1, 3, FLAG_REMOTE_CLOSED | FLAG_NO_DATA, b""),
            ]
            await peer.close()

    asyncio.run(scenario())


def test_client_streams_take_data_frames_until_remote_closed() -> None:
    async def total(messages: AsyncIterator[bytes], ctx: ttrpc.ServerContext) -> bytes:
        return b",".join([m async for m in messages])

    async def scenario() -> None:
        server = ttrpc.Server()
        server.register(SERVICE, "Total", total, client_streaming=True)
        async with serving(server) as path:
            peer = await RawPeer.connect(path)
            await peer.request(1, "Total", None, flags=FLAG_REMOTE_OPEN)
            await peer.send(wire.frame(1, 3, 0, b"a"))
            await peer.send(wire.frame(1, 3, 0, b"b"))
            await peer.send(wire.frame(1, 3, FLAG_REMOTE_CLOSED | FLAG_NO_DATA, b""))
            assert await peer.response() == (1, wire.Response(wire.WireStatus(), b"a,b"))
            # The request's payload is the first message; a request without
            # the remote-open flag sends nothing more (a ttrpc 1.0 client).
            await peer.request(3, "Total", b"only")
            assert await peer.response() == (3, wire.Response(wire.WireStatus(), b"only"))
            await peer.close()

    asyncio.run(scenario())


def test_shutdown_lets_running_calls_finish_then_cancels_the_rest() -> None:
    async def sleepy(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
        await asyncio.sleep(float(payload))
        return payload

    async def scenario() -> None:
        server = server_with(Sleep=sleepy)
        async with serving(server) as path:
            quick = await RawPeer.connect(path)
            stuck = await RawPeer.connect(path)
            idle = await RawPeer.connect(path)
            await quick.request(1, "Sleep", b"0.1")
            await stuck.request(1, "Sleep", b"30")
            await asyncio.sleep(0.05)
            await server.shutdown(grace=0.5)
            assert (await quick.response())[1].payload == b"0.1"
            assert await asyncio.wait_for(quick.reader.read(), 5) == b""
            assert await asyncio.wait_for(idle.reader.read(), 5) == b""
            assert await asyncio.wait_for(stuck.reader.read(), 5) == b""  # cut, unanswered
            assert server.connections == 0
            for peer in (quick, stuck, idle):
                await peer.close()

    asyncio.run(scenario())
