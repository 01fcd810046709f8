"""containerd.services.streaming.v1 on our daemon: a named stream is
acknowledged, its name is free again once the client closes it, and a
stream that does not start with a StreamInit is refused."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd import typeurl
from pycontainerd.api.services.streaming.v1 import streaming_pb2 as pb
from pycontainerd.api.services.streaming.v1 import streaming_pb2_grpc as pb_grpc
from tests.support import daemons

pytestmark = pytest.mark.integration

METADATA = [("containerd-namespace", "default")]


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    with daemons.pycontainerd() as d, grpc.insecure_channel(f"unix://{d.address}") as ch:
        yield ch


def _open(
    channel: grpc.Channel, name: str
) -> tuple[queue.Queue[any_pb2.Any | None], Iterator[any_pb2.Any]]:
    sends: queue.Queue[any_pb2.Any | None] = queue.Queue()

    def requests() -> Iterator[any_pb2.Any]:
        yield typeurl.marshal_any(pb.StreamInit(id=name))
        while (message := sends.get()) is not None:
            yield message

    return sends, pb_grpc.StreamingStub(channel).Stream(requests(), metadata=METADATA, timeout=10)


def test_a_stream_is_acknowledged_and_its_name_freed_when_the_client_closes(
    channel: grpc.Channel,
) -> None:
    sends, responses = _open(channel, "progress-a")
    assert next(responses).type_url == "google.protobuf.Empty"
    _, again = _open(channel, "progress-a")
    with pytest.raises(grpc.RpcError) as taken:
        next(again)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    sends.put(None)
    assert list(responses) == []
    reopened, responses = _open(channel, "progress-a")
    assert next(responses).type_url == "google.protobuf.Empty"
    reopened.put(None)
    assert list(responses) == []


def test_a_stream_must_start_with_a_stream_init(channel: grpc.Channel) -> None:
    first = any_pb2.Any(type_url="google.protobuf.Empty")
    stream = pb_grpc.StreamingStub(channel).Stream(iter([first]), metadata=METADATA, timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        list(stream)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "StreamInit" in (refused.value.details() or "")
