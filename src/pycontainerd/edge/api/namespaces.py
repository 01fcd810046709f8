"""containerd.services.namespaces.v1.Namespaces over the local namespaces service."""

from __future__ import annotations

from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.namespaces.v1 import namespace_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services import namespaces as local
from pycontainerd.wire.namespaces import to_pb

__all__ = ["NamespacesAPI"]


class NamespacesAPI:
    def __init__(self, service: local.NamespacesService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Namespaces"],
            {
                "Get": self.get,
                "List": self.list,
                "Create": self.create,
                "Update": self.update,
                "Delete": self.delete,
            },
        )

    async def get(self, request: pb.GetNamespaceRequest, call: Call) -> pb.GetNamespaceResponse:
        ns = self._service.get(request.name)
        return pb.GetNamespaceResponse(namespace=to_pb(ns.name, ns.labels))

    async def list(
        self, request: pb.ListNamespacesRequest, call: Call
    ) -> pb.ListNamespacesResponse:
        listed = await self._service.list(request.filter)
        return pb.ListNamespacesResponse(namespaces=[to_pb(ns.name, ns.labels) for ns in listed])

    async def create(
        self, request: pb.CreateNamespaceRequest, call: Call
    ) -> pb.CreateNamespaceResponse:
        ns = await self._service.create(request.namespace.name, request.namespace.labels)
        return pb.CreateNamespaceResponse(namespace=to_pb(ns.name, ns.labels))

    async def update(
        self, request: pb.UpdateNamespaceRequest, call: Call
    ) -> pb.UpdateNamespaceResponse:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else None
        ns = await self._service.update(request.namespace.name, request.namespace.labels, paths)
        return pb.UpdateNamespaceResponse(namespace=to_pb(ns.name, ns.labels))

    async def delete(self, request: pb.DeleteNamespaceRequest, call: Call) -> empty_pb2.Empty:
        await self._service.delete(request.name)
        return empty_pb2.Empty()


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="namespaces",
        init=lambda ctx: NamespacesAPI(ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)),
        requires=(plugin.PluginType.SERVICE,),
    )
)
