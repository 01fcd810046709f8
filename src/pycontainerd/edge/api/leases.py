"""containerd.services.leases.v1.Leases over the local leases service."""

from __future__ import annotations

from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.leases.v1 import leases_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services import leases as local
from pycontainerd.wire.leases import resource_from_pb, resource_to_pb, to_pb

__all__ = ["LeasesAPI"]


class LeasesAPI:
    def __init__(self, service: local.LeasesService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Leases"],
            {
                "Create": self.create,
                "Delete": self.delete,
                "List": self.list,
                "AddResource": self.add_resource,
                "DeleteResource": self.delete_resource,
                "ListResources": self.list_resources,
            },
        )

    async def create(self, request: pb.CreateRequest, call: Call) -> pb.CreateResponse:
        return pb.CreateResponse(
            lease=to_pb(await self._service.create(request.id, request.labels))
        )

    async def delete(self, request: pb.DeleteRequest, call: Call) -> empty_pb2.Empty:
        await self._service.delete(request.id, sync=request.sync)
        return empty_pb2.Empty()

    async def list(self, request: pb.ListRequest, call: Call) -> pb.ListResponse:
        return pb.ListResponse(
            leases=[to_pb(lease) for lease in await self._service.list(*request.filters)]
        )

    async def add_resource(self, request: pb.AddResourceRequest, call: Call) -> empty_pb2.Empty:
        await self._service.add_resource(request.id, resource_from_pb(request.resource))
        return empty_pb2.Empty()

    async def delete_resource(
        self, request: pb.DeleteResourceRequest, call: Call
    ) -> empty_pb2.Empty:
        await self._service.delete_resource(request.id, resource_from_pb(request.resource))
        return empty_pb2.Empty()

    async def list_resources(
        self, request: pb.ListResourcesRequest, call: Call
    ) -> pb.ListResourcesResponse:
        resources = self._service.list_resources(request.id)
        return pb.ListResourcesResponse(resources=[resource_to_pb(r) for r in resources])


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="leases",
        init=lambda ctx: LeasesAPI(ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)),
        requires=(plugin.PluginType.SERVICE,),
    )
)
