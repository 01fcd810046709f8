"""Registration through the service edge: pre-serialized responses, the rest untouched."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import grpc
import pytest

from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.services._edge import add_to_server

pytestmark = pytest.mark.unit

SERVICE = "containerd.services.containers.v1.Containers"


class FakeServer:
    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, Mapping[str, grpc.RpcMethodHandler[Any, Any]]] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.registered[service] = handlers


def test_named_methods_send_their_bytes_as_they_are() -> None:
    server = FakeServer()
    servicer = pb_grpc.ContainersServicer()
    add_to_server(
        cast(grpc.aio.Server, server),
        pb_grpc.add_ContainersServicer_to_server,
        servicer,
        preserialized=("List", "ListStream"),
    )
    handlers = server.registered[SERVICE]
    assert set(handlers) == {"Get", "List", "ListStream", "Create", "Update", "Delete"}
    stream = handlers["ListStream"]
    assert stream.response_streaming and not stream.request_streaming
    assert stream.unary_stream == servicer.ListStream
    assert stream.request_deserializer is not None
    assert stream.request_deserializer(b"\n\x01x") == pb.ListContainersRequest(filters=["x"])
    for name in ("List", "ListStream"):
        serialize = handlers[name].response_serializer
        assert serialize is not None and serialize(b"\x0a\x00") == b"\x0a\x00"
    # Everything else is what the generated registration gives.
    get = handlers["Get"].response_serializer
    assert get is not None
    assert get(pb.GetContainerResponse(container=pb.Container(id="a"))) == b"\n\x03\n\x01a"
    # And the generic handler (the fallback lookup) resolves to the same handlers.
    assert len(server.generic) == 1


def test_an_unknown_method_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no method Lsit"):
        add_to_server(
            cast(grpc.aio.Server, FakeServer()),
            pb_grpc.add_ContainersServicer_to_server,
            pb_grpc.ContainersServicer(),
            preserialized=("Lsit",),
        )
