"""The containers service answers List and ListStream with pre-encoded records.

Those bytes skip the protobuf encoder, so check on the wire, with the
generated stubs, that they say exactly what Get says, message by message --
over the socket, and over the in-process channel, which passes them through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.client import Client
from pycontainerd.oci import spec as oci
from tests.support import inprocess
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

NS = (("containerd-namespace", "svc"),)


@dataclass
class Face:
    """How a test reaches its daemon: a client, and a channel for the stubs."""

    client: Callable[[str], Client]
    channel: Callable[[], grpc.Channel]


@pytest.fixture(params=["socket", "inprocess"])
def face(request: pytest.FixtureRequest) -> Iterator[Face]:
    """A fresh daemon process over its socket, or one in this process over
    its in-process channel."""
    if request.param == "socket":
        daemon: RunningDaemon = request.getfixturevalue("daemon")
        yield Face(
            lambda ns: Client(daemon.address, ns),
            lambda: grpc.insecure_channel(f"unix://{daemon.address}"),
        )
        return
    with inprocess.in_thread() as embedded:
        address = str(embedded.server.address)
        yield Face(lambda ns: Client(address, ns, channel=embedded.channel()), embedded.channel)


def test_list_and_list_stream_match_get(face: Face) -> None:
    with face.client("svc") as client:
        client.new_container(
            "a",
            labels={"app": "web", "ü": "ß"},
            image="docker.io/library/busybox:latest",
            spec=oci.generate("svc", "a"),
            extensions={"x": any_pb2.Any(type_url="ext.v1", value=b"\x00\xff")},
        )
        client.new_container("b", spec=oci.generate("svc", "b"), snapshotter="overlayfs")
    with face.channel() as channel:
        stub = pb_grpc.ContainersStub(channel)
        gets = [stub.Get(pb.GetContainerRequest(id=i), metadata=NS).container for i in "ab"]
        streamed = list(stub.ListStream(pb.ListContainersRequest(), metadata=NS))
        assert [m.container for m in streamed] == gets
        listed = stub.List(pb.ListContainersRequest(), metadata=NS)
        assert list(listed.containers) == gets

        web = pb.ListContainersRequest(filters=["labels.app==web"])
        assert [m.container.id for m in stub.ListStream(web, metadata=NS)] == ["a"]
        assert [c.id for c in stub.List(web, metadata=NS).containers] == ["a"]
        assert (
            list(
                stub.List(
                    pb.ListContainersRequest(), metadata=(("containerd-namespace", "none"),)
                ).containers
            )
            == []
        )

        with pytest.raises(grpc.RpcError) as info:
            list(stub.ListStream(pb.ListContainersRequest(filters=["id=="]), metadata=NS))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
