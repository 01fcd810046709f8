"""containerd.services.events.ttrpc.v1.Events over the local events service.

The daemon's ttrpc socket serves it: shims forward the events they make
(task exit, OOM, ...) with ``Forward``, and the daemon re-broadcasts them.
"""

from __future__ import annotations

from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services import events as local
from pycontainerd.wire import events as wire

__all__ = ["TTRPCEventsAPI"]


class TTRPCEventsAPI:
    def __init__(self, service: local.EventsService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(pb.DESCRIPTOR.services_by_name["Events"], {"Forward": self.forward})

    async def forward(self, request: pb.ForwardRequest, call: Call) -> empty_pb2.Empty:
        await self._service.forward(wire.from_pb(request.envelope))
        return empty_pb2.Empty()


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.TTRPC,
        id="events",
        init=lambda ctx: TTRPCEventsAPI(ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)),
        requires=(plugin.PluginType.SERVICE,),
    )
)
