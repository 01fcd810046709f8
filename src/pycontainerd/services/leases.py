"""The local leases service (containerd's ``leases-service``): the metadata
lease manager, and a garbage collection on a synchronous delete."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pycontainerd import leases, plugin
from pycontainerd.leases import Lease, Resource
from pycontainerd.metadata import Metadata
from pycontainerd.services import _gc

__all__ = ["LeasesService"]

ID = "leases-service"


class LeasesService:
    def __init__(self, metadata: Metadata, gc: _gc.Scheduler | None) -> None:
        self._manager = metadata.leases
        self._gc = gc

    async def create(self, lease_id: str, labels: Mapping[str, str]) -> Lease:
        """A new lease; an empty id gets a random one, as containerd's."""
        return await self._manager.create(lease_id or leases.random_id(), dict(labels))

    async def delete(self, lease_id: str, *, sync: bool = False) -> None:
        """Delete a lease; with ``sync``, collect what it held before returning."""
        await self._manager.delete(lease_id)
        if sync:
            await _gc.collect(self._gc)

    async def list(self, *filters: str) -> Sequence[Lease]:
        return await self._manager.list(*filters)

    async def add_resource(self, lease_id: str, resource: Resource) -> None:
        await self._manager.add_resource(lease_id, resource)

    async def delete_resource(self, lease_id: str, resource: Resource) -> None:
        await self._manager.delete_resource(lease_id, resource)

    def list_resources(self, lease_id: str) -> Sequence[Resource]:
        return self._manager.list_resources(lease_id)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SERVICE,
        id=ID,
        init=lambda ctx: LeasesService(ctx.get(plugin.PluginType.METADATA), _gc.scheduler(ctx)),
        requires=(plugin.PluginType.METADATA, plugin.PluginType.GC),
    )
)
