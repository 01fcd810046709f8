"""containerd.services.containers.v1.Containers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd import errdefs, namespaces, plugin
from pycontainerd.api.events import container_pb2 as events_pb
from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.containers import RawContainer
from pycontainerd.events import Exchange
from pycontainerd.metadata import Metadata
from pycontainerd.services._edge import Frames, add_to_server, servicer
from pycontainerd.wire.containers import from_pb, list_message, list_response, to_pb

#: Containers per write of a ListStream (about 20 KiB of typical records).
_BATCH = 128


@servicer("containerd.services.containers.v1.Containers")
class ContainersService(pb_grpc.ContainersServicer):
    def __init__(self, metadata: Metadata, exchange: Exchange) -> None:
        self._store = metadata.containers
        self._events = exchange
        # The last unfiltered listing's stream batches, per namespace, kept
        # while the store hands back the same records (see list_raw).
        self._streamed: dict[str, tuple[Sequence[RawContainer], list[Frames]]] = {}

    async def Get(self, request: pb.GetContainerRequest, context: Any) -> pb.GetContainerResponse:
        return pb.GetContainerResponse(container=to_pb(self._store.get(request.id)))

    # List and ListStream answer with serialized messages (see register):
    # records go from the store to the wire without decoding their specs.

    async def List(self, request: pb.ListContainersRequest, context: Any) -> bytes:
        return list_response(await self._store.list_raw(*request.filters))

    async def ListStream(
        self, request: pb.ListContainersRequest, context: Any
    ) -> AsyncIterator[Frames]:
        records = await self._store.list_raw(*request.filters)
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

    async def Create(
        self, request: pb.CreateContainerRequest, context: Any
    ) -> pb.CreateContainerResponse:
        created = to_pb(await self._store.create(from_pb(request.container)))
        await self._events.publish(
            "/containers/create",
            events_pb.ContainerCreate(
                id=created.id,
                image=created.image,
                runtime=events_pb.ContainerCreate.Runtime(
                    name=created.runtime.name,
                    options=created.runtime.options
                    if created.runtime.HasField("options")
                    else None,
                ),
            ),
        )
        return pb.CreateContainerResponse(container=created)

    async def Update(
        self, request: pb.UpdateContainerRequest, context: Any
    ) -> pb.UpdateContainerResponse:
        if not request.container.id:
            raise errdefs.InvalidArgument("Container.ID required")
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        updated = to_pb(await self._store.update(from_pb(request.container), *paths))
        await self._events.publish(
            "/containers/update",
            events_pb.ContainerUpdate(
                id=updated.id,
                image=updated.image,
                labels=updated.labels,
                snapshot_key=updated.snapshot_key,
            ),
        )
        return pb.UpdateContainerResponse(container=updated)

    async def Delete(self, request: pb.DeleteContainerRequest, context: Any) -> empty_pb2.Empty:
        await self._store.delete(request.id)
        await self._events.publish("/containers/delete", events_pb.ContainerDelete(id=request.id))
        return empty_pb2.Empty()

    def register(self, server: grpc.aio.Server) -> None:
        add_to_server(
            server,
            pb_grpc.add_ContainersServicer_to_server,
            self,
            preserialized=("List", "ListStream"),
        )


def _init(ctx: plugin.InitContext) -> ContainersService:
    return ContainersService(ctx.get(plugin.PluginType.METADATA), ctx.events)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="containers",
        init=_init,
        requires=(plugin.PluginType.METADATA,),
    )
)
