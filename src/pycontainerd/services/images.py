"""The local images service (containerd's ``images-service``): image
records in metadata, the ``/images/*`` events, and a garbage collection on
a synchronous delete."""

from __future__ import annotations

from collections.abc import Sequence

from pycontainerd import errdefs, plugin
from pycontainerd.api.events import image_pb2 as events_pb
from pycontainerd.events import Exchange
from pycontainerd.images import Image
from pycontainerd.metadata import Metadata
from pycontainerd.services import _gc

__all__ = ["ImagesService"]

ID = "images-service"


class ImagesService:
    def __init__(self, metadata: Metadata, exchange: Exchange, gc: _gc.Scheduler | None) -> None:
        self._store = metadata.images
        self._events = exchange
        self._gc = gc

    def get(self, name: str) -> Image:
        return self._store.get(name)

    async def list(self, *filters: str) -> Sequence[Image]:
        return await self._store.list(*filters)

    async def create(self, image: Image) -> Image:
        if not image.name:
            raise errdefs.InvalidArgument("Image.Name required")
        created = await self._store.create(image)
        await self._events.publish(
            "/images/create", events_pb.ImageCreate(name=created.name, labels=created.labels)
        )
        return created

    async def update(self, image: Image, *paths: str) -> Image:
        if not image.name:
            raise errdefs.InvalidArgument("Image.Name required")
        updated = await self._store.update(image, *paths)
        await self._events.publish(
            "/images/update", events_pb.ImageUpdate(name=updated.name, labels=updated.labels)
        )
        return updated

    async def delete(self, name: str, *, sync: bool = False) -> None:
        """Delete an image; with ``sync``, collect what it held before returning."""
        await self._store.delete(name)
        await self._events.publish("/images/delete", events_pb.ImageDelete(name=name))
        if sync:
            await _gc.collect(self._gc)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SERVICE,
        id=ID,
        init=lambda ctx: ImagesService(
            ctx.get(plugin.PluginType.METADATA), ctx.events, _gc.scheduler(ctx)
        ),
        requires=(plugin.PluginType.METADATA, plugin.PluginType.GC),
    )
)
