"""The stream manager: names per namespace, bounds, and ends that always get through."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import any_pb2

from pycontainerd import errdefs, namespaces
from pycontainerd.services import streaming

pytestmark = pytest.mark.unit


def _msg(n: int) -> any_pb2.Any:
    return any_pb2.Any(type_url="t", value=bytes([n % 256]))


def test_names_are_per_namespace_and_taken_once() -> None:
    manager = streaming.StreamManager()
    with namespaces.namespace("a"):
        first = manager.register("progress-1")
        with pytest.raises(errdefs.AlreadyExists):
            manager.register("progress-1")
        with pytest.raises(errdefs.InvalidArgument):
            manager.register("no spaces")
    with namespaces.namespace("b"):
        with pytest.raises(errdefs.NotFound):
            manager.get("progress-1")
        assert manager.register("progress-1") is not first
    with namespaces.namespace("a"):
        assert manager.get("progress-1") is first
        manager.unregister(first)
        with pytest.raises(errdefs.NotFound):
            manager.get("progress-1")


def test_open_streams_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "MAX_STREAMS", 3)
    manager = streaming.StreamManager()
    with namespaces.namespace("a"):
        for i in range(3):
            manager.register(f"s{i}")
        with pytest.raises(errdefs.ResourceExhausted):
            manager.register("s3")


def test_a_client_that_stops_reading_never_stalls_the_sender() -> None:
    async def scenario() -> list[int]:
        stream = streaming.Stream("a", "p")
        offered = [stream.offer(_msg(i)) for i in range(streaming.OUT_QUEUE + 10)]
        assert offered.count(False) == 10
        stream.close()  # the end gets through even with the queue full
        got = [m.value[0] async for m in stream.outgoing()]
        assert not stream.offer(_msg(0))
        with pytest.raises(errdefs.Unavailable):
            await stream.send(_msg(0))
        return got

    got = asyncio.run(scenario())
    assert len(got) == streaming.OUT_QUEUE - 1


def test_recv_sees_the_clients_messages_then_the_end_every_time() -> None:
    async def scenario() -> None:
        stream = streaming.Stream("a", "p")
        await stream.deliver(_msg(7))
        stream.close()
        assert (await stream.recv()).value == b"\x07"
        for _ in range(2):
            with pytest.raises(errdefs.Unavailable):
                await stream.recv()

    asyncio.run(scenario())


def test_a_packed_message_is_known_by_its_name_with_or_without_googles_prefix() -> None:
    from pycontainerd import typeurl
    from pycontainerd.api.services.streaming.v1 import streaming_pb2
    from pycontainerd.api.types.transfer import progress_pb2

    bare = typeurl.marshal_any(streaming_pb2.StreamInit(id="s"))
    prefixed = any_pb2.Any()
    prefixed.Pack(streaming_pb2.StreamInit(id="s"))
    assert bare.type_url == "containerd.services.streaming.v1.StreamInit"
    assert typeurl.is_a(bare, streaming_pb2.StreamInit)
    assert typeurl.is_a(prefixed, streaming_pb2.StreamInit)
    assert not typeurl.is_a(bare, progress_pb2.Progress)
    # A name that merely ends the same is another type.
    assert not typeurl.is_a(
        any_pb2.Any(type_url="x.containerd.types.transfer.Progress"), progress_pb2.Progress
    )
