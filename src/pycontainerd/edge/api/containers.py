"""containerd.services.containers.v1.Containers over the local containers service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from google.protobuf import empty_pb2

from pycontainerd import namespaces, plugin
from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.containers import RawContainer
from pycontainerd.edge import Call, Frames, Method, describe
from pycontainerd.services import containers as local
from pycontainerd.wire.containers import from_pb, list_message, list_response, to_pb

__all__ = ["ContainersAPI"]

#: Containers per write of a ListStream (about 20 KiB of typical records).
_BATCH = 128


class ContainersAPI:
    def __init__(self, service: local.ContainersService) -> None:
        self._service = service
        # The last unfiltered listing's stream batches, per namespace, kept
        # while the store hands back the same records (see list_raw).
        self._streamed: dict[str, tuple[Sequence[RawContainer], list[Frames]]] = {}

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Containers"],
            {
                "Get": self.get,
                "List": self.list,
                "ListStream": self.list_stream,
                "Create": self.create,
                "Update": self.update,
                "Delete": self.delete,
            },
            # Records go from the store to the wire without decoding their specs.
            preserialized=("List", "ListStream"),
        )

    async def get(self, request: pb.GetContainerRequest, call: Call) -> pb.GetContainerResponse:
        return pb.GetContainerResponse(container=to_pb(self._service.get(request.id)))

    async def list(self, request: pb.ListContainersRequest, call: Call) -> bytes:
        return list_response(await self._service.list_raw(*request.filters))

    async def list_stream(
        self, request: pb.ListContainersRequest, call: Call
    ) -> AsyncIterator[Frames]:
        records = await self._service.list_raw(*request.filters)
        ns = namespaces.required()
        cached = self._streamed.get(ns)
        if cached is not None and cached[0] is records:
            batches = cached[1]
        else:
            batches = [
                Frames(list_message(c) for c in records[start : start + _BATCH])
                for start in range(0, len(records), _BATCH)
            ]
            if not request.filters:
                self._streamed[ns] = (records, batches)
        for batch in batches:
            yield batch

    async def create(
        self, request: pb.CreateContainerRequest, call: Call
    ) -> pb.CreateContainerResponse:
        created = await self._service.create(from_pb(request.container))
        return pb.CreateContainerResponse(container=to_pb(created))

    async def update(
        self, request: pb.UpdateContainerRequest, call: Call
    ) -> pb.UpdateContainerResponse:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        updated = await self._service.update(from_pb(request.container), *paths)
        return pb.UpdateContainerResponse(container=to_pb(updated))

    async def delete(self, request: pb.DeleteContainerRequest, call: Call) -> empty_pb2.Empty:
        await self._service.delete(request.id)
        return empty_pb2.Empty()


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="containers",
        init=lambda ctx: ContainersAPI(ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)),
        requires=(plugin.PluginType.SERVICE,),
    )
)
