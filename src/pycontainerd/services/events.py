"""containerd.services.events.v1.Events: publish, forward, subscribe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd import errdefs, namespaces, plugin
from pycontainerd.api.services.events.v1 import events_pb2 as pb
from pycontainerd.api.services.events.v1 import events_pb2_grpc as pb_grpc
from pycontainerd.events import Exchange
from pycontainerd.services._edge import servicer
from pycontainerd.wire import events as wire


@servicer("containerd.services.events.v1.Events")
class EventsService(pb_grpc.EventsServicer):
    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def Publish(self, request: pb.PublishRequest, context: Any) -> empty_pb2.Empty:
        ns = namespaces.required()
        if not request.HasField("event"):
            raise errdefs.InvalidArgument("event must not be empty")
        await self._exchange.publish(request.topic, request.event, namespace=ns)
        return empty_pb2.Empty()

    async def Forward(self, request: pb.ForwardRequest, context: Any) -> empty_pb2.Empty:
        await self._exchange.forward(wire.from_pb(request.envelope))
        return empty_pb2.Empty()

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Any
    ) -> AsyncIterator[pb.Envelope]:
        async for env in self._exchange.subscribe(list(request.filters)):
            yield wire.to_pb(env)

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_EventsServicer_to_server(self, server)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC, id="events", init=lambda ctx: EventsService(ctx.events)
    )
)
