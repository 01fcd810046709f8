"""containerd.services.introspection.v1.Introspection over the local service."""

from __future__ import annotations

from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.introspection.v1 import introspection_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services import introspection as local
from pycontainerd.wire.introspection import to_pb

__all__ = ["IntrospectionAPI"]


class IntrospectionAPI:
    def __init__(self, service: local.IntrospectionService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Introspection"],
            {"Plugins": self.plugins, "Server": self.server},
        )

    async def plugins(self, request: pb.PluginsRequest, call: Call) -> pb.PluginsResponse:
        infos = await self._service.plugins(*request.filters)
        return pb.PluginsResponse(plugins=[to_pb(i) for i in infos])

    async def server(self, request: empty_pb2.Empty, call: Call) -> pb.ServerResponse:
        return pb.ServerResponse(uuid=self._service.server_uuid())


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="introspection",
        init=lambda ctx: IntrospectionAPI(
            ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)
        ),
        requires=("*",),
    )
)
