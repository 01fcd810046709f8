"""The local containers service (containerd's ``containers-service``).

Container records in the namespaced metadata store, and the
``/containers/*`` events their changes publish.  Every transport reaches
containers through this class, so a caller in the same process sees the
events and errors a gRPC client sees.
"""

from __future__ import annotations

from collections.abc import Sequence

from pycontainerd import errdefs, plugin
from pycontainerd.api.events import container_pb2 as events_pb
from pycontainerd.containers import Container, RawContainer
from pycontainerd.events import Exchange
from pycontainerd.metadata import Metadata

__all__ = ["ContainersService"]

ID = "containers-service"


class ContainersService:
    def __init__(self, metadata: Metadata, exchange: Exchange) -> None:
        self._store = metadata.containers
        self._events = exchange

    def get(self, id: str) -> Container:
        return self._store.get(id)

    async def list_raw(self, *filters: str) -> Sequence[RawContainer]:
        """The records as stored (specs not decoded); the same sequence object
        again while nothing in the namespace changed."""
        return await self._store.list_raw(*filters)

    async def create(self, container: Container) -> Container:
        created = await self._store.create(container)
        await self._events.publish(
            "/containers/create",
            events_pb.ContainerCreate(
                id=created.id,
                image=created.image,
                runtime=events_pb.ContainerCreate.Runtime(
                    name=created.runtime.name, options=created.runtime.options
                ),
            ),
        )
        return created

    async def update(self, container: Container, *paths: str) -> Container:
        if not container.id:
            raise errdefs.InvalidArgument("Container.ID required")
        updated = await self._store.update(container, *paths)
        await self._events.publish(
            "/containers/update",
            events_pb.ContainerUpdate(
                id=updated.id,
                image=updated.image,
                labels=updated.labels,
                snapshot_key=updated.snapshot_key,
            ),
        )
        return updated

    async def delete(self, id: str) -> None:
        await self._store.delete(id)
        await self._events.publish("/containers/delete", events_pb.ContainerDelete(id=id))


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SERVICE,
        id=ID,
        init=lambda ctx: ContainersService(ctx.get(plugin.PluginType.METADATA), ctx.events),
        requires=(plugin.PluginType.METADATA,),
    )
)
