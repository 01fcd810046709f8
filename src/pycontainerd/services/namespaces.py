"""containerd.services.namespaces.v1.Namespaces."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd import filters, namespaces, plugin
from pycontainerd.api.events import namespace_pb2 as events_pb
from pycontainerd.api.services.namespaces.v1 import namespace_pb2 as pb
from pycontainerd.api.services.namespaces.v1 import namespace_pb2_grpc as pb_grpc
from pycontainerd.events import Exchange
from pycontainerd.metadata import Metadata
from pycontainerd.metadata.namespaces import Namespace
from pycontainerd.services._edge import servicer
from pycontainerd.wire.namespaces import to_pb


def _event_namespace() -> str:
    """Namespace events go out in the caller's namespace, else ``default``."""
    return namespaces.current() or namespaces.DEFAULT


def _adapt(ns: Namespace) -> filters.FieldFunc:
    return filters.adapt_mapping({"name": ns.name, "labels": dict(ns.labels)})


@servicer("containerd.services.namespaces.v1.Namespaces")
class NamespacesService(pb_grpc.NamespacesServicer):
    def __init__(self, metadata: Metadata, exchange: Exchange) -> None:
        self._store = metadata.namespaces
        self._events = exchange

    async def Get(self, request: pb.GetNamespaceRequest, context: Any) -> pb.GetNamespaceResponse:
        ns = self._store.get(request.name)
        return pb.GetNamespaceResponse(namespace=to_pb(ns.name, ns.labels))

    async def List(
        self, request: pb.ListNamespacesRequest, context: Any
    ) -> pb.ListNamespacesResponse:
        flt = await filters.parse_async([request.filter] if request.filter else [])
        listed = await filters.select(flt, self._store.list(), _adapt)
        return pb.ListNamespacesResponse(namespaces=[to_pb(ns.name, ns.labels) for ns in listed])

    async def Create(
        self, request: pb.CreateNamespaceRequest, context: Any
    ) -> pb.CreateNamespaceResponse:
        ns = await self._store.create(request.namespace.name, dict(request.namespace.labels))
        await self._events.publish(
            "/namespaces/create",
            events_pb.NamespaceCreate(name=ns.name, labels=dict(ns.labels)),
            namespace=_event_namespace(),
        )
        return pb.CreateNamespaceResponse(namespace=to_pb(ns.name, ns.labels))

    async def Update(
        self, request: pb.UpdateNamespaceRequest, context: Any
    ) -> pb.UpdateNamespaceResponse:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else None
        ns = await self._store.update_labels(
            request.namespace.name, dict(request.namespace.labels), paths
        )
        await self._events.publish(
            "/namespaces/update",
            events_pb.NamespaceUpdate(name=ns.name, labels=dict(ns.labels)),
            namespace=_event_namespace(),
        )
        return pb.UpdateNamespaceResponse(namespace=to_pb(ns.name, ns.labels))

    async def Delete(self, request: pb.DeleteNamespaceRequest, context: Any) -> empty_pb2.Empty:
        await self._store.delete(request.name)
        # containerd publishes the delete in the deleted namespace itself, so a
        # subscriber filtering on namespace==NAME sees its namespace go away.
        await self._events.publish(
            "/namespaces/delete",
            events_pb.NamespaceDelete(name=request.name),
            namespace=request.name,
        )
        return empty_pb2.Empty()

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_NamespacesServicer_to_server(self, server)


def _init(ctx: plugin.InitContext) -> NamespacesService:
    return NamespacesService(ctx.get(plugin.PluginType.METADATA), ctx.events)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="namespaces",
        init=_init,
        requires=(plugin.PluginType.METADATA,),
    )
)
