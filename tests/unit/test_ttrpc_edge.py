"""The edge over ttrpc: methods served by the ttrpc package, the namespace
from ttrpc's header, errors as status codes."""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from google.protobuf import any_pb2, empty_pb2

from pycontainerd import errdefs, leases, namespaces, ttrpc
from pycontainerd.api.events import task_pb2
from pycontainerd.api.services.events.v1 import events_pb2 as grpc_events_pb2
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.edge.api.ttrpc_events import TTRPCEventsAPI
from pycontainerd.edge.ttrpc_server import TtrpcServer, call_of
from pycontainerd.events import Envelope

pytestmark = pytest.mark.unit

EVENTS = "containerd.services.events.ttrpc.v1.Events"
NS = namespaces.TTRPC_HEADER


class FakeEvents:
    """The local events service's face, recording what it is asked."""

    def __init__(self) -> None:
        self.forwarded: list[tuple[Envelope, str | None]] = []

    async def forward(self, envelope: Envelope) -> None:
        if envelope.topic == "/refused":
            raise errdefs.InvalidArgument("topic refused")
        self.forwarded.append((envelope, namespaces.current()))

    async def subscribe(self, filters: Sequence[str]) -> AsyncIterator[Envelope]:
        for topic in filters:
            yield Envelope(
                timestamp=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                namespace="default",
                topic=topic,
                event=any_pb2.Any(),
            )


def forward_request(topic: str = "/tasks/exit") -> bytes:
    req = pb.ForwardRequest()
    req.envelope.namespace = "default"
    req.envelope.topic = topic
    req.envelope.timestamp.FromDatetime(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    req.envelope.event.Pack(task_pb2.TaskExit(container_id="web", exit_status=3))
    return req.SerializeToString()


def test_the_ttrpc_namespace_header_is_the_namespace_the_edge_reads() -> None:
    ctx = ttrpc.ServerContext(
        service="s",
        method="m",
        metadata=(
            ("containerd-namespace", "sneaky"),  # not read by containerd over ttrpc
            ("Containerd-Namespace-TTRPC", "prod"),
            (NS, "second"),
            (leases.TTRPC_HEADER, "lease-1"),
            ("X-Other", "kept"),
        ),
        deadline=123.0,
    )
    assert call_of(ctx) == Call(
        metadata=(
            (namespaces.GRPC_HEADER, "prod"),
            (leases.GRPC_HEADER, "lease-1"),
            ("x-other", "kept"),
        ),
        deadline=123.0,
    )


def _serve_and_call(api_methods: list[Method], scenario: object) -> None:
    async def main() -> None:
        server = TtrpcServer(api_methods)
        with tempfile.TemporaryDirectory(prefix="ttrpc-", dir="/tmp") as d:
            path = str(Path(d) / "t.sock")
            await server.start(path)
            try:
                async with await ttrpc.Client.connect(path) as client:
                    await scenario(client)  # type: ignore[operator]
            finally:
                await server.stop(grace=0)

    asyncio.run(main())


def test_forward_reaches_the_local_service_in_the_callers_namespace() -> None:
    service = FakeEvents()

    async def scenario(client: ttrpc.Client) -> None:
        reply = await client.call(EVENTS, "Forward", forward_request(), metadata=[(NS, "prod")])
        assert empty_pb2.Empty.FromString(reply) == empty_pb2.Empty()

    _serve_and_call(TTRPCEventsAPI(service).methods(), scenario)  # type: ignore[arg-type]
    [(envelope, ns)] = service.forwarded
    assert ns == "prod"
    assert (envelope.namespace, envelope.topic) == ("default", "/tasks/exit")
    assert envelope.timestamp == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    exit_event = task_pb2.TaskExit()
    assert envelope.event.Unpack(exit_event) and exit_event.exit_status == 3


def test_errors_leave_as_ttrpc_statuses_with_their_codes() -> None:
    async def scenario(client: ttrpc.Client) -> None:
        with pytest.raises(ttrpc.StatusError) as info:
            await client.call(EVENTS, "Forward", forward_request("/refused"))
        assert info.value.code == ttrpc.Code.INVALID_ARGUMENT
        assert info.value.message == "topic refused: invalid argument"
        with pytest.raises(ttrpc.StatusError) as info:
            await client.call(EVENTS, "Forward", b"\xff")
        assert info.value.code == ttrpc.Code.INTERNAL
        assert info.value.message.startswith("failed to decode request")
        with pytest.raises(ttrpc.StatusError) as info:
            await client.call(EVENTS, "Publish", b"")
        assert (info.value.code, info.value.message) == (ttrpc.Code.UNIMPLEMENTED, "method Publish")

    _serve_and_call(TTRPCEventsAPI(FakeEvents()).methods(), scenario)  # type: ignore[arg-type]


def test_a_server_stream_method_streams_over_ttrpc() -> None:
    service = FakeEvents()

    async def subscribe(
        request: grpc_events_pb2.SubscribeRequest, call: Call
    ) -> AsyncIterator[grpc_events_pb2.Envelope]:
        async for env in service.subscribe(list(request.filters)):
            yield grpc_events_pb2.Envelope(namespace=env.namespace, topic=env.topic)

    methods = describe(
        grpc_events_pb2.DESCRIPTOR.services_by_name["Events"], {"Subscribe": subscribe}
    )

    async def scenario(client: ttrpc.Client) -> None:
        request = grpc_events_pb2.SubscribeRequest(filters=["/a", "/b"]).SerializeToString()
        stream = await client.stream(
            "containerd.services.events.v1.Events",
            "Subscribe",
            request,
            client_streaming=False,
            server_streaming=True,
        )
        topics = [grpc_events_pb2.Envelope.FromString(m).topic async for m in stream]
        assert topics == ["/a", "/b"]

    _serve_and_call(methods, scenario)
