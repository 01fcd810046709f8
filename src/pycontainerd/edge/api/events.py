"""containerd.services.events.v1.Events over the local events service."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.events.v1 import events_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services import events as local
from pycontainerd.wire import events as wire

__all__ = ["EventsAPI"]


class EventsAPI:
    def __init__(self, service: local.EventsService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Events"],
            {"Publish": self.publish, "Forward": self.forward, "Subscribe": self.subscribe},
        )

    async def publish(self, request: pb.PublishRequest, call: Call) -> empty_pb2.Empty:
        event = request.event if request.HasField("event") else None
        await self._service.publish(request.topic, event)
        return empty_pb2.Empty()

    async def forward(self, request: pb.ForwardRequest, call: Call) -> empty_pb2.Empty:
        await self._service.forward(wire.from_pb(request.envelope))
        return empty_pb2.Empty()

    async def subscribe(
        self, request: pb.SubscribeRequest, call: Call
    ) -> AsyncIterator[pb.Envelope]:
        async for env in self._service.subscribe(list(request.filters)):
            yield wire.to_pb(env)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="events",
        init=lambda ctx: EventsAPI(ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)),
        requires=(plugin.PluginType.SERVICE,),
    )
)
