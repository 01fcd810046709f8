"""containerd.services.images.v1.Images over the local images service."""

from __future__ import annotations

from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.images.v1 import images_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services import images as local
from pycontainerd.wire.images import from_pb, to_pb

__all__ = ["ImagesAPI"]


class ImagesAPI:
    def __init__(self, service: local.ImagesService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Images"],
            {
                "Get": self.get,
                "List": self.list,
                "Create": self.create,
                "Update": self.update,
                "Delete": self.delete,
            },
        )

    async def get(self, request: pb.GetImageRequest, call: Call) -> pb.GetImageResponse:
        return pb.GetImageResponse(image=to_pb(self._service.get(request.name)))

    async def list(self, request: pb.ListImagesRequest, call: Call) -> pb.ListImagesResponse:
        images = await self._service.list(*request.filters)
        return pb.ListImagesResponse(images=[to_pb(i) for i in images])

    async def create(self, request: pb.CreateImageRequest, call: Call) -> pb.CreateImageResponse:
        return pb.CreateImageResponse(
            image=to_pb(await self._service.create(from_pb(request.image)))
        )

    async def update(self, request: pb.UpdateImageRequest, call: Call) -> pb.UpdateImageResponse:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        updated = await self._service.update(from_pb(request.image), *paths)
        return pb.UpdateImageResponse(image=to_pb(updated))

    async def delete(self, request: pb.DeleteImageRequest, call: Call) -> empty_pb2.Empty:
        await self._service.delete(request.name, sync=request.sync)
        return empty_pb2.Empty()


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="images",
        init=lambda ctx: ImagesAPI(ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)),
        requires=(plugin.PluginType.SERVICE,),
    )
)
