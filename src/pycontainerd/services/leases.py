"""containerd.services.leases.v1.Leases."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd import leases, plugin
from pycontainerd.api.services.leases.v1 import leases_pb2 as pb
from pycontainerd.api.services.leases.v1 import leases_pb2_grpc as pb_grpc
from pycontainerd.metadata import Metadata
from pycontainerd.services import _gc
from pycontainerd.services._edge import servicer
from pycontainerd.wire.leases import resource_from_pb, resource_to_pb, to_pb


@servicer("containerd.services.leases.v1.Leases")
class LeasesService(pb_grpc.LeasesServicer):
    def __init__(self, metadata: Metadata, gc: _gc.Scheduler | None) -> None:
        self._manager = metadata.leases
        self._gc = gc

    async def Create(self, request: pb.CreateRequest, context: Any) -> pb.CreateResponse:
        lease = await self._manager.create(request.id or leases.random_id(), dict(request.labels))
        return pb.CreateResponse(lease=to_pb(lease))

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> empty_pb2.Empty:
        await self._manager.delete(request.id)
        if request.sync:
            await _gc.collect(self._gc)
        return empty_pb2.Empty()

    async def List(self, request: pb.ListRequest, context: Any) -> pb.ListResponse:
        return pb.ListResponse(
            leases=[to_pb(lease) for lease in await self._manager.list(*request.filters)]
        )

    async def AddResource(self, request: pb.AddResourceRequest, context: Any) -> empty_pb2.Empty:
        await self._manager.add_resource(request.id, resource_from_pb(request.resource))
        return empty_pb2.Empty()

    async def DeleteResource(
        self, request: pb.DeleteResourceRequest, context: Any
    ) -> empty_pb2.Empty:
        await self._manager.delete_resource(request.id, resource_from_pb(request.resource))
        return empty_pb2.Empty()

    async def ListResources(
        self, request: pb.ListResourcesRequest, context: Any
    ) -> pb.ListResourcesResponse:
        resources = self._manager.list_resources(request.id)
        return pb.ListResourcesResponse(resources=[resource_to_pb(r) for r in resources])

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_LeasesServicer_to_server(self, server)


def _init(ctx: plugin.InitContext) -> LeasesService:
    return LeasesService(ctx.get(plugin.PluginType.METADATA), _gc.scheduler(ctx))


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="leases",
        init=_init,
        requires=(plugin.PluginType.METADATA, plugin.PluginType.GC),
    )
)
