"""The in-process client: a daemon embedded in this process, called without
its socket, answers as it does over the socket.

Each test starts a real daemon on the test's event loop.  It listens on its
socket as well, so the same calls can be made both ways and compared: the
same records, the same events, the same errors with the same words.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd import errdefs
from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.client import AsyncClient, Client
from pycontainerd.daemon.server import Server
from pycontainerd.edge.inprocess import InProcessChannel
from pycontainerd.events.exchange import Envelope
from pycontainerd.oci import spec as oci
from tests.support import daemons, inprocess
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

T = TypeVar("T")
NS = "inproc"
MD = (("containerd-namespace", NS),)
VERSION = "containerd.services.version.v1.Version"


def with_daemon(body: Callable[[Server], Awaitable[T]], config: str | None = None) -> T:
    """Run ``body`` on a fresh event loop with a daemon started on it."""

    async def main() -> T:
        async with inprocess.serving(config) as server:
            return await body(server)

    return asyncio.run(main())


@contextlib.asynccontextmanager
async def both(server: Server) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    """An in-process client and a socket client of ``server``, in namespace NS."""
    async with (
        AsyncClient(str(server.address), NS, channel=server.channel()) as inproc,
        AsyncClient(str(server.address), NS) as socket,
    ):
        yield inproc, socket
    await socket_clients_gone()


async def socket_clients_gone() -> None:
    """Let the daemon see the socket clients' connections close before it stops.

    Its stop() leaves a connection still open unclosed (reported), and a
    grpc.aio channel keeps its connection while a failed call is alive --
    one held by the traceback of an error a test caught, until collected --
    then closes it from grpcio's own thread.
    """
    gc.collect()
    await asyncio.sleep(0.2)


async def collect(
    server: Server, client: AsyncClient, into: list[Envelope], ready: asyncio.Event
) -> None:
    """Subscribe ``client`` and set ``ready`` once the daemon counts the new
    subscription.  Start one at a time: the count cannot tell two apart."""
    before = server.events.subscriber_count
    subscription = client.events.subscribe(f'namespace=="{NS}"')
    first = asyncio.ensure_future(anext(subscription))
    # The call gives no sign when it listens: the daemon's count tells.
    async with asyncio.timeout(10):
        while server.events.subscriber_count == before:
            await asyncio.sleep(0.01)
    ready.set()
    into.append(await first)
    async for envelope in subscription:
        into.append(envelope)


def test_version_namespaces_and_containers_answer_as_over_the_socket() -> None:
    async def body(server: Server) -> None:
        async with both(server) as (inproc, socket):
            assert await inproc.version() == await socket.version()
            assert await inproc.is_serving()
            await inproc.namespaces.create(NS, {"made": "in-process"})
            assert await inproc.namespaces.list() == await socket.namespaces.list()
            for i in range(3):
                spec = oci.generate(NS, f"c{i}")
                await inproc.new_container(f"c{i}", labels={"n": str(i)}, spec=spec)
            mine = await inproc.containers.list()
            theirs = await socket.containers.list()
            assert [c.id for c in mine] == ["c0", "c1", "c2"]
            assert mine == theirs
            assert (await inproc.containers.get("c1")) == (await socket.containers.get("c1"))
            assert [c.id for c in await inproc.list_containers("labels.n==2")] == ["c2"]

    with_daemon(body)


def test_container_events_arrive_in_process_as_over_the_socket() -> None:
    async def body(server: Server) -> None:
        async with both(server) as (inproc, socket):
            seen_inproc: list[Envelope] = []
            seen_socket: list[Envelope] = []
            tasks: list[asyncio.Task[None]] = []
            for client, seen in ((inproc, seen_inproc), (socket, seen_socket)):
                ready = asyncio.Event()
                tasks.append(asyncio.create_task(collect(server, client, seen, ready)))
                await asyncio.wait_for(ready.wait(), 10)
            await inproc.new_container("web", spec=oci.generate(NS, "web"))
            await inproc.containers.update((await inproc.containers.get("web")), "labels.x")
            await inproc.containers.delete("web")
            async with asyncio.timeout(10):
                while len(seen_inproc) < 3 or len(seen_socket) < 3:
                    await asyncio.sleep(0.02)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            topics = [e.topic for e in seen_inproc]
            assert topics == ["/containers/create", "/containers/update", "/containers/delete"]
            assert seen_inproc == seen_socket

    with_daemon(body)


async def _error_of(call: Awaitable[object]) -> tuple[type[BaseException], str]:
    with pytest.raises(errdefs.ContainerdError) as info:
        await call
    return type(info.value), str(info.value)


def test_errors_are_typed_and_worded_as_over_the_socket(shared_daemon: RunningDaemon) -> None:
    # Compared with a daemon process: in this one, a failed call's connection
    # would outlive the daemon's stop() (see socket_clients_gone).
    async def errors(client: AsyncClient) -> list[tuple[type[BaseException], str]]:
        async with client:
            return [
                await _error_of(client.load_container("absent")),
                await _error_of(client.namespaces.create("-bad")),
                await _error_of(client.content.info("sha256:nothex")),
            ]

    async def body(server: Server) -> None:
        inproc = await errors(AsyncClient(str(server.address), NS, channel=server.channel()))
        socket = await errors(AsyncClient(shared_daemon.address, NS))
        assert inproc == socket
        assert inproc[0] == (errdefs.NotFound, f'container "absent" in namespace "{NS}"')
        assert [kind for kind, _ in inproc[1:]] == [errdefs.InvalidArgument] * 2

    with_daemon(body)


async def _status_of(call: Callable[[], Awaitable[object]]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    return info.value.code(), info.value.details() or ""


async def failures(
    client: AsyncClient, channel: grpc.aio.Channel
) -> list[tuple[grpc.StatusCode, str]]:
    """How calls over ``channel`` fail: a deadline, an unknown service and an
    unknown method, a request too large for the client and one too large for
    the daemon, a response too large for the client (a blob ``client`` writes)."""
    events = events_pb2_grpc.EventsStub(channel)
    content = content_pb2_grpc.ContentStub(channel)

    async def subscribe() -> None:
        async for _ in events.Subscribe(events_pb2.SubscribeRequest(), metadata=MD, timeout=0.3):
            pass

    def publish(size: int) -> Awaitable[object]:
        event = any_pb2.Any(type_url="test/x", value=b"x" * size)
        request = events_pb2.PublishRequest(topic="/test/x", event=event)
        return events.Publish(request, metadata=MD)  # type: ignore[no-any-return]

    blob = b"x" * 4096
    # Under a lease: the collector keeps the blob while it is read.
    async with client, client.lease():
        digest = await client.content.write_blob("big", blob, size=len(blob))

        async def read() -> None:
            request = content_pb2.ReadContentRequest(digest=digest)
            async for _ in content.Read(request, metadata=MD):
                pass

        outcomes = [
            await _status_of(subscribe),
            await _status_of(lambda: channel.unary_unary("/no.Such/Method")(b"")),
            await _status_of(lambda: channel.unary_unary(f"/{VERSION}/Nope")(b"")),
            await _status_of(lambda: publish(17 << 20)),
            await _status_of(lambda: publish(2 << 20)),
            await _status_of(read),
        ]
    await channel.close()
    return outcomes


def test_failed_calls_have_the_sockets_status_codes_and_words() -> None:
    # The socket side is a daemon process of its own: in this process, the
    # connections these failures leave behind outlive the daemon's stop().
    config = "version = 2\n[grpc]\n  max_recv_message_size = 1048576\n"

    async def body(server: Server) -> None:
        inproc = await failures(
            AsyncClient(str(server.address), NS, channel=server.channel()),
            InProcessChannel(
                server.methods,
                max_receive_message_length=1024,
                max_server_receive_message_length=server.config.grpc.max_recv_message_size,
            ),
        )
        socket = await failures(
            AsyncClient(remote.address, NS),
            grpc.aio.insecure_channel(
                f"unix://{remote.address}",
                options=[
                    ("grpc.max_receive_message_length", 1024),
                    ("grpc.max_send_message_length", 16 << 20),  # as AsyncClient dials
                ],
            ),
        )
        # A deadline is a race over the socket: grpcio's timer ("Deadline
        # Exceeded") or the daemon's ("context deadline exceeded"), whichever
        # fires first; in-process the two are one, and grpcio's words are used.
        assert inproc[0] == (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        assert socket[0][1] in ("Deadline Exceeded", "context deadline exceeded")
        assert inproc[1:] == socket[1:]
        assert [code for code, _ in socket] == [
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNIMPLEMENTED,
            grpc.StatusCode.UNIMPLEMENTED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ]

    with daemons.pycontainerd(config=config) as remote:
        with_daemon(body, config)


def test_sync_client_calls_from_another_thread() -> None:
    async def body(server: Server) -> None:
        loop = asyncio.get_running_loop()
        subscribers = server.events.subscriber_count

        def sync() -> None:
            with Client(str(server.address), NS, channel=server.sync_channel(loop)) as client:
                assert client.version().revision == "pycontainerd"
                client.new_container("s1", spec=oci.generate(NS, "s1"))
                assert [c.id for c in client.list_containers()] == ["s1"]
                with pytest.raises(errdefs.NotFound, match='container "nope"'):
                    client.load_container("nope")
                with client.lease():
                    dgst = client.content.write_blob("s", b"sync bytes", size=10)
                    assert client.content.read(dgst) == b"sync bytes"

                topics: list[str] = []

                def listen() -> None:
                    events = client.events.subscribe(f'namespace=="{NS}"')
                    topics.extend(e.topic for e in itertools.islice(events, 1))
                    events.close()

                listener = threading.Thread(target=listen)
                listener.start()
                deadline = time.monotonic() + 5
                while server.events.subscriber_count == subscribers:
                    assert time.monotonic() < deadline, "no subscription"
                    time.sleep(0.01)
                client.containers.delete("s1")
                listener.join(5)
                assert not listener.is_alive()
                assert topics == ["/containers/delete"]

        await asyncio.to_thread(sync)
        assert server.events.subscriber_count == subscribers
        assert not [t for t in threading.enumerate() if t.name == "inprocess-requests"]
        # On the daemon's own loop the sync channel would deadlock; it refuses.
        with (
            Client(str(server.address), NS, channel=server.sync_channel(loop)) as client,
            pytest.raises(RuntimeError, match="own event loop"),
        ):
            client.version()

    with_daemon(body)


def test_close_cancels_running_calls_and_leaves_no_task() -> None:
    async def body(server: Server) -> None:
        before = asyncio.all_tasks()
        subscribers = server.events.subscriber_count
        client = AsyncClient(str(server.address), NS, channel=server.channel())
        ready = asyncio.Event()
        seen: list[Envelope] = []
        subscription = asyncio.create_task(collect(server, client, seen, ready))
        await ready.wait()
        writer = await client.content.writer(f"held-{uuid.uuid4().hex[:6]}")
        await writer.write(b"partial")
        assert server.events.subscriber_count == subscribers + 1
        await client.close()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(subscription, 5)
        assert server.events.subscriber_count == subscribers
        assert asyncio.all_tasks() <= before
        with pytest.raises(grpc.aio.UsageError):
            await client.version()

    with_daemon(body)


def test_a_cancelled_call_ends_the_daemons_side() -> None:
    async def body(server: Server) -> None:
        async with AsyncClient(str(server.address), NS, channel=server.channel()) as client:
            before = server.events.subscriber_count
            stub = events_pb2_grpc.EventsStub(client._call.channel)
            call = stub.Subscribe(events_pb2.SubscribeRequest(), metadata=MD)
            async with asyncio.timeout(5):
                while server.events.subscriber_count == before:
                    await asyncio.sleep(0.01)
            assert call.cancel()
            assert not call.cancel()
            assert await call.code() == grpc.StatusCode.CANCELLED
            with pytest.raises(asyncio.CancelledError):
                await call.read()
            async with asyncio.timeout(5):
                while server.events.subscriber_count != before:
                    await asyncio.sleep(0.01)

    with_daemon(body)
