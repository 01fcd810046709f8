"""The local snapshots service (containerd's ``snapshots-service``).

Every call names its snapshotter; the service hands it to that
snapshotter's namespaced store (:mod:`pycontainerd.metadata.snapshots`).
As containerd 1.6's service does, it publishes ``/snapshot/prepare``,
``/snapshot/commit`` and ``/snapshot/remove`` events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pycontainerd import errdefs, plugin
from pycontainerd.api.events import snapshot_pb2 as events_pb
from pycontainerd.events import Exchange
from pycontainerd.metadata import Metadata
from pycontainerd.mount import Mount
from pycontainerd.snapshots import Info, Snapshotter, Usage

__all__ = ["SnapshotsService"]

ID = "snapshots-service"


class SnapshotsService:
    """The snapshotters by name; ``exchange`` None publishes nothing (a
    snapshotter served alone, as a proxy plugin, has no event exchange)."""

    def __init__(self, snapshotters: Mapping[str, Snapshotter], exchange: Exchange | None) -> None:
        self._snapshotters = snapshotters
        self._events = exchange

    def _get(self, name: str) -> Snapshotter:
        if not name:
            raise errdefs.InvalidArgument("snapshotter argument missing")
        sn = self._snapshotters.get(name)
        if sn is None:
            raise errdefs.InvalidArgument(f"snapshotter not loaded: {name}")
        return sn

    async def _publish(self, topic: str, event: Any) -> None:
        if self._events is not None:
            await self._events.publish(topic, event)

    async def prepare(
        self, snapshotter: str, key: str, parent: str, labels: Mapping[str, str]
    ) -> list[Mount]:
        mounts = await self._get(snapshotter).prepare(key, parent, dict(labels))
        await self._publish("/snapshot/prepare", events_pb.SnapshotPrepare(key=key, parent=parent))
        return mounts

    async def view(
        self, snapshotter: str, key: str, parent: str, labels: Mapping[str, str]
    ) -> list[Mount]:
        return await self._get(snapshotter).view(key, parent, dict(labels))

    async def mounts(self, snapshotter: str, key: str) -> list[Mount]:
        return await self._get(snapshotter).mounts(key)

    async def commit(
        self, snapshotter: str, name: str, key: str, labels: Mapping[str, str]
    ) -> None:
        await self._get(snapshotter).commit(name, key, dict(labels))
        await self._publish("/snapshot/commit", events_pb.SnapshotCommit(key=key, name=name))

    async def remove(self, snapshotter: str, key: str) -> None:
        await self._get(snapshotter).remove(key)
        await self._publish("/snapshot/remove", events_pb.SnapshotRemove(key=key))

    async def stat(self, snapshotter: str, key: str) -> Info:
        return await self._get(snapshotter).stat(key)

    async def update(self, snapshotter: str, info: Info, paths: Sequence[str]) -> Info:
        return await self._get(snapshotter).update(info, paths)

    def walk(self, snapshotter: str, *filters: str) -> AsyncIterator[Info]:
        return self._get(snapshotter).walk(*filters)

    async def usage(self, snapshotter: str, key: str) -> Usage:
        return await self._get(snapshotter).usage(key)

    async def cleanup(self, snapshotter: str) -> None:
        await self._get(snapshotter).cleanup()


def _init(ctx: plugin.InitContext) -> SnapshotsService:
    metadata: Metadata = ctx.get(plugin.PluginType.METADATA)
    return SnapshotsService(metadata.snapshotters, ctx.events)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SERVICE,
        id=ID,
        init=_init,
        requires=(plugin.PluginType.METADATA,),
    )
)
