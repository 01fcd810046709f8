"""containerd.services.snapshots.v1.Snapshots.

Every request names its snapshotter; the service hands it to that
snapshotter's namespaced store (:mod:`pycontainerd.metadata.snapshots`).
As containerd 1.6's service does, it publishes ``/snapshot/prepare``,
``/snapshot/commit`` and ``/snapshot/remove`` events, and streams a listing
in batches of :data:`LIST_BATCH` records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd import errdefs, plugin
from pycontainerd.api.events import snapshot_pb2 as events_pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from pycontainerd.events import Exchange
from pycontainerd.metadata import Metadata
from pycontainerd.services._edge import servicer
from pycontainerd.snapshots import Snapshotter
from pycontainerd.wire import mounts as mounts_wire
from pycontainerd.wire import snapshots as wire

__all__ = ["LIST_BATCH", "SnapshotsService"]

#: Records per ListSnapshotsResponse (containerd sends 100 at a time).
LIST_BATCH = 100


@servicer("containerd.services.snapshots.v1.Snapshots")
class SnapshotsService(pb_grpc.SnapshotsServicer):
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

    async def Prepare(
        self, request: pb.PrepareSnapshotRequest, context: Any
    ) -> pb.PrepareSnapshotResponse:
        sn = self._get(request.snapshotter)
        mounts = await sn.prepare(request.key, request.parent, dict(request.labels))
        await self._publish(
            "/snapshot/prepare", events_pb.SnapshotPrepare(key=request.key, parent=request.parent)
        )
        return pb.PrepareSnapshotResponse(mounts=mounts_wire.list_to_pb(mounts))

    async def View(self, request: pb.ViewSnapshotRequest, context: Any) -> pb.ViewSnapshotResponse:
        sn = self._get(request.snapshotter)
        mounts = await sn.view(request.key, request.parent, dict(request.labels))
        return pb.ViewSnapshotResponse(mounts=mounts_wire.list_to_pb(mounts))

    async def Mounts(self, request: pb.MountsRequest, context: Any) -> pb.MountsResponse:
        mounts = await self._get(request.snapshotter).mounts(request.key)
        return pb.MountsResponse(mounts=mounts_wire.list_to_pb(mounts))

    async def Commit(self, request: pb.CommitSnapshotRequest, context: Any) -> empty_pb2.Empty:
        sn = self._get(request.snapshotter)
        await sn.commit(request.name, request.key, dict(request.labels))
        await self._publish(
            "/snapshot/commit", events_pb.SnapshotCommit(key=request.key, name=request.name)
        )
        return empty_pb2.Empty()

    async def Remove(self, request: pb.RemoveSnapshotRequest, context: Any) -> empty_pb2.Empty:
        await self._get(request.snapshotter).remove(request.key)
        await self._publish("/snapshot/remove", events_pb.SnapshotRemove(key=request.key))
        return empty_pb2.Empty()

    async def Stat(self, request: pb.StatSnapshotRequest, context: Any) -> pb.StatSnapshotResponse:
        info = await self._get(request.snapshotter).stat(request.key)
        return pb.StatSnapshotResponse(info=wire.info_to_pb(info))

    async def Update(
        self, request: pb.UpdateSnapshotRequest, context: Any
    ) -> pb.UpdateSnapshotResponse:
        sn = self._get(request.snapshotter)
        info = await sn.update(wire.info_from_pb(request.info), wire.update_paths(request))
        return pb.UpdateSnapshotResponse(info=wire.info_to_pb(info))

    async def List(
        self, request: pb.ListSnapshotsRequest, context: Any
    ) -> AsyncIterator[pb.ListSnapshotsResponse]:
        sn = self._get(request.snapshotter)
        batch: list[pb.Info] = []
        async for info in sn.walk(*request.filters):
            batch.append(wire.info_to_pb(info))
            if len(batch) >= LIST_BATCH:
                yield pb.ListSnapshotsResponse(info=batch)
                batch = []
        if batch:
            yield pb.ListSnapshotsResponse(info=batch)

    async def Usage(self, request: pb.UsageRequest, context: Any) -> pb.UsageResponse:
        return wire.usage_to_pb(await self._get(request.snapshotter).usage(request.key))

    async def Cleanup(self, request: pb.CleanupRequest, context: Any) -> empty_pb2.Empty:
        await self._get(request.snapshotter).cleanup()
        return empty_pb2.Empty()

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_SnapshotsServicer_to_server(self, server)


def _init(ctx: plugin.InitContext) -> SnapshotsService:
    metadata: Metadata = ctx.get(plugin.PluginType.METADATA)
    return SnapshotsService(metadata.snapshotters, ctx.events)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="snapshots",
        init=_init,
        requires=(plugin.PluginType.METADATA,),
    )
)
