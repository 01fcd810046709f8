"""containerd.services.images.v1.Images."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd import errdefs, plugin
from pycontainerd.api.events import image_pb2 as events_pb
from pycontainerd.api.services.images.v1 import images_pb2 as pb
from pycontainerd.api.services.images.v1 import images_pb2_grpc as pb_grpc
from pycontainerd.events import Exchange
from pycontainerd.metadata import Metadata
from pycontainerd.services import _gc
from pycontainerd.services._edge import servicer
from pycontainerd.wire.images import from_pb, to_pb


@servicer("containerd.services.images.v1.Images")
class ImagesService(pb_grpc.ImagesServicer):
    def __init__(self, metadata: Metadata, exchange: Exchange, gc: _gc.Scheduler | None) -> None:
        self._store = metadata.images
        self._events = exchange
        self._gc = gc

    async def Get(self, request: pb.GetImageRequest, context: Any) -> pb.GetImageResponse:
        return pb.GetImageResponse(image=to_pb(self._store.get(request.name)))

    async def List(self, request: pb.ListImagesRequest, context: Any) -> pb.ListImagesResponse:
        images = await self._store.list(*request.filters)
        return pb.ListImagesResponse(images=[to_pb(i) for i in images])

    async def Create(self, request: pb.CreateImageRequest, context: Any) -> pb.CreateImageResponse:
        if not request.image.name:
            raise errdefs.InvalidArgument("Image.Name required")
        created = to_pb(await self._store.create(from_pb(request.image)))
        await self._events.publish(
            "/images/create", events_pb.ImageCreate(name=created.name, labels=created.labels)
        )
        return pb.CreateImageResponse(image=created)

    async def Update(self, request: pb.UpdateImageRequest, context: Any) -> pb.UpdateImageResponse:
        if not request.image.name:
            raise errdefs.InvalidArgument("Image.Name required")
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        updated = to_pb(await self._store.update(from_pb(request.image), *paths))
        await self._events.publish(
            "/images/update", events_pb.ImageUpdate(name=updated.name, labels=updated.labels)
        )
        return pb.UpdateImageResponse(image=updated)

    async def Delete(self, request: pb.DeleteImageRequest, context: Any) -> empty_pb2.Empty:
        await self._store.delete(request.name)
        await self._events.publish("/images/delete", events_pb.ImageDelete(name=request.name))
        if request.sync:
            await _gc.collect(self._gc)
        return empty_pb2.Empty()

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ImagesServicer_to_server(self, server)


def _init(ctx: plugin.InitContext) -> ImagesService:
    return ImagesService(ctx.get(plugin.PluginType.METADATA), ctx.events, _gc.scheduler(ctx))


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="images",
        init=_init,
        requires=(plugin.PluginType.METADATA, plugin.PluginType.GC),
    )
)
