"""The ttrpc client against our server (round trips, streams, deadlines),
against a crafted server (what it refuses), and its flow control."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pycontainerd import ttrpc
from pycontainerd.ttrpc import _channel
from pycontainerd.ttrpc import _wire as wire
from tests.unit._ttrpc import SERVICE, serving

pytestmark = pytest.mark.unit

MiB = 1 << 20


async def echo(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
    return b"|".join([payload, *(f"{k}={v}".encode() for k, v in ctx.metadata)])


async def sleepy(payload: bytes, ctx: ttrpc.ServerContext) -> bytes:
    await asyncio.sleep(float(payload))
    return payload


async def count(payload: bytes, ctx: ttrpc.ServerContext) -> AsyncIterator[bytes]:
    n, _, fail = payload.partition(b"!")
    for i in range(int(n)):
        yield str(i).encode()
    if fail:
        raise ttrpc.StatusError(ttrpc.Code.ABORTED, fail.decode())


async def total(messages: AsyncIterator[bytes], ctx: ttrpc.ServerContext) -> bytes:
    return str(sum([int(m) async for m in messages])).encode()


async def upper(messages: AsyncIterator[bytes], ctx: ttrpc.ServerContext) -> AsyncIterator[bytes]:
    async for m in messages:
        yield m.upper()


def make_server() -> ttrpc.Server:
    server = ttrpc.Server()
    server.register(SERVICE, "Echo", echo)
    server.register(SERVICE, "Sleep", sleepy)
    server.register(SERVICE, "Count", count, server_streaming=True)
    server.register(SERVICE, "Total", total, client_streaming=True)
    server.register(SERVICE, "Upper", upper, client_streaming=True, server_streaming=True)
    return server


def run_with_client(scenario: object, **client_kw: object) -> None:
    async def main() -> None:
        async with serving(make_server()) as path:
            client = await ttrpc.Client.connect(path, **client_kw)  # type: ignore[arg-type]
            async with client:
                await scenario(client)  # type: ignore[operator]

    asyncio.run(main())


def test_a_unary_call_round_trips_with_its_metadata() -> None:
    async def scenario(client: ttrpc.Client) -> None:
        reply = await client.call(
            SERVICE, "Echo", b"hi", metadata=[("containerd-namespace-ttrpc", "default")]
        )
        assert reply == b"hi|client=pyctr|containerd-namespace-ttrpc=default"

    run_with_client(scenario, metadata=[("client", "pyctr")])


def test_many_concurrent_calls_share_one_connection() -> None:
    async def scenario(client: ttrpc.Client) -> None:
        delays = [b"0.%d" % (i % 5) for i in range(200)]
        replies = await asyncio.gather(*(client.call(SERVICE, "Sleep", d) for d in delays))
        assert replies == delays

    run_with_client(scenario)


def test_a_server_status_is_raised_as_status_error() -> None:
    async def scenario(client: ttrpc.Client) -> None:
        with pytest.raises(ttrpc.StatusError) as info:
            await client.call(SERVICE, "Missing", b"")
        assert (info.value.code, info.value.message) == (ttrpc.Code.UNIMPLEMENTED, "method Missing")
        assert str(info.value) == "ttrpc: UNIMPLEMENTED: method Missing"
        assert not isinstance(info.value, ConnectionError)

    run_with_client(scenario)


def test_a_timeout_is_the_servers_deadline_and_the_clients() -> None:
    async def scenario(client: ttrpc.Client) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ttrpc.StatusError) as info:
            await client.call(SERVICE, "Sleep", b"5", timeout=0.2)
        assert info.value.code == ttrpc.Code.DEADLINE_EXCEEDED
        assert info.value.message == "context deadline exceeded"
        assert loop.time() - start < 2
        assert await client.call(SERVICE, "Sleep", b"0", timeout=5) == b"0"
        with pytest.raises(ttrpc.StatusError, match="deadline"):
            await client.call(SERVICE, "Echo", b"", timeout=0)

    run_with_client(scenario)


def test_a_request_too_large_is_refused_before_it_is_sent() -> None:
    async def scenario(client: ttrpc.Client) -> None:
        with pytest.raises(ttrpc.StatusError) as info:
            await client.call(SERVICE, "Echo", b"x" * (4 * MiB))
        assert info.value.code == ttrpc.Code.RESOURCE_EXHAUSTED
        assert await client.call(SERVICE, "Echo", b"ok") == b"ok"

    run_with_client(scenario)


def test_server_client_and_bidirectional_streams() -> None:
    async def scenario(client: ttrpc.Client) -> None:
        stream = await client.stream(
            SERVICE, "Count", b"3", server_streaming=True, client_streaming=False
        )
        assert [m async for m in stream] == [b"0", b"1", b"2"]

        stream = await client.stream(
            SERVICE, "Count", b"2!gave up", server_streaming=True, client_streaming=False
        )
        assert await stream.recv() == b"0"
        assert await stream.recv() == b"1"
        with pytest.raises(ttrpc.StatusError, match="gave up"):
            await stream.recv()

        stream = await client.stream(
            SERVICE, "Total", b"1", client_streaming=True, server_streaming=False
        )
        for i in range(2, 101):
            await stream.send(str(i).encode())
        assert await stream.response() == b"5050"

        stream = await client.stream(SERVICE, "Upper", client_streaming=True, server_streaming=True)
        await stream.send(b"a")
        assert await stream.recv() == b"A"
        await stream.send(b"b")
        await stream.close_send()
        assert [m async for m in stream] == [b"B"]

    run_with_client(scenario)


@contextlib.asynccontextmanager
async def crafted_server(*answers: bytes) -> AsyncIterator[str]:
    """A server that answers its n-th request with ``answers[n]`` (``$ID``
    stands for the request's stream id), and the rest with an OK "fine"."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue = list(answers)
        try:
            while True:
                head = await reader.readexactly(wire.HEADER_LENGTH)
                length, stream_id, _, _ = wire.HEADER.unpack(head)
                await reader.readexactly(length)
                if queue:
                    writer.write(queue.pop(0).replace(b"$ID", stream_id.to_bytes(4, "big")))
                else:
                    ok = wire.encode_response(wire.Response(wire.WireStatus(), b"fine"))
                    writer.write(wire.frame(stream_id, 2, 0, ok))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    with tempfile.TemporaryDirectory(prefix="ttrpc-", dir="/tmp") as d:
        path = str(Path(d) / "c.sock")
        server = await asyncio.start_unix_server(handle, path)
        async with server:
            yield path


def _response_frame(data: bytes, length: int | None = None) -> bytes:
    size = len(data) if length is None else length
    return size.to_bytes(4, "big") + b"$ID\x02\x00" + data


def test_a_response_without_status_is_ok_and_an_undecodable_one_a_protocol_error() -> None:
    # ttrpc's Go server leaves the status out of a successful response.
    async def scenario() -> None:
        async with (
            crafted_server(_response_frame(b"\x12\x02ok"), _response_frame(b"\x0a\x05")) as path,
            await ttrpc.Client.connect(path) as client,
        ):
            assert await client.call(SERVICE, "Echo", b"") == b"ok"
            with pytest.raises(ttrpc.ProtocolError, match="undecodable response"):
                await client.call(SERVICE, "Echo", b"")
            assert await client.call(SERVICE, "Echo", b"") == b"fine"

    asyncio.run(scenario())


def test_an_oversized_response_fails_its_call_and_the_connection_goes_on() -> None:
    async def scenario() -> None:
        huge = 4 * MiB + 1
        async with (
            crafted_server(_response_frame(b"\0" * huge)) as path,
            await ttrpc.Client.connect(path) as client,
        ):
            with pytest.raises(ttrpc.StatusError) as info:
                await client.call(SERVICE, "Echo", b"")
            assert info.value.code == ttrpc.Code.RESOURCE_EXHAUSTED
            assert await client.call(SERVICE, "Echo", b"") == b"fine"

    asyncio.run(scenario())


def test_calls_fail_with_connection_closed_when_the_server_goes_away() -> None:
    async def scenario() -> None:
        server = make_server()
        async with serving(server) as path:
            client = await ttrpc.Client.connect(path)
            pending = asyncio.ensure_future(client.call(SERVICE, "Sleep", b"30"))
            await asyncio.sleep(0.1)
            await server.shutdown(grace=0)
            with pytest.raises(ttrpc.ConnectionClosed):
                await pending
            await client.wait_closed()
            assert client.closed
            with pytest.raises(ttrpc.ConnectionClosed):
                await client.call(SERVICE, "Echo", b"")
            await client.close()

    asyncio.run(scenario())


def test_a_cancelled_call_leaves_the_connection_usable() -> None:
    async def scenario(client: ttrpc.Client) -> None:
        pending = asyncio.ensure_future(client.call(SERVICE, "Sleep", b"0.3"))
        await asyncio.sleep(0.05)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await asyncio.sleep(0.4)  # its late response arrives for no one
        assert await client.call(SERVICE, "Echo", b"x") == b"x"

    run_with_client(scenario)


def test_an_abandoned_stream_stops_holding_the_connection() -> None:
    async def scenario(client: ttrpc.Client) -> None:
        async with await client.stream(
            SERVICE, "Count", b"1000", server_streaming=True, client_streaming=False
        ) as stream:
            assert await stream.recv() == b"0"
            await asyncio.sleep(0.2)  # the rest fill its inbox; reading stops
        # Left: its messages are dropped and the connection reads again.
        assert await client.call(SERVICE, "Echo", b"x", timeout=5) == b"x"

    run_with_client(scenario)


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False


def test_a_full_inbox_stops_reading_until_its_reader_catches_up() -> None:
    async def scenario() -> None:
        channel = _channel.Channel()
        transport = _FakeTransport()
        channel.connection_made(transport)
        inbox = _channel.Inbox(channel)
        for _ in range(_channel.INBOX_MESSAGES - 1):
            inbox.put(b"m")
        assert not transport.paused
        inbox.put(b"m")
        assert transport.paused
        assert await inbox.get() == b"m"
        assert not transport.paused
        # Bytes count too: one large message is enough.
        other = _channel.Inbox(channel)
        other.put(b"x" * _channel.INBOX_BYTES)
        assert transport.paused
        other.discard()
        assert not transport.paused
        # And the connection as a whole.
        boxes = [_channel.Inbox(channel) for _ in range(5)]
        for box in boxes:
            box.put(b"x" * (_channel.QUEUED_BYTES // 5))
        assert transport.paused
        await boxes[0].get()
        assert not transport.paused

    asyncio.run(scenario())


def test_the_ttrpc_package_exports_are_pinned() -> None:
    assert sorted(ttrpc.__all__) == [
        "Client",
        "ClientStream",
        "Code",
        "ConnectionClosed",
        "DEFAULT_MAX_CONNECTIONS",
        "DEFAULT_MAX_STREAMS",
        "Handler",
        "MAX_MESSAGE_LENGTH",
        "MAX_METADATA_BYTES",
        "MAX_METADATA_ENTRIES",
        "Metadata",
        "ProtocolError",
        "Server",
        "ServerContext",
        "StatusError",
        "TTRPCError",
    ]
