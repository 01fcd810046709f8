"""containerd.services.snapshots.v1.Snapshots over the local snapshots service;
a listing streams in batches of :data:`LIST_BATCH` records, as containerd's."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services import snapshots as local
from pycontainerd.wire import mounts as mounts_wire
from pycontainerd.wire import snapshots as wire

__all__ = ["LIST_BATCH", "SnapshotsAPI"]

#: Records per ListSnapshotsResponse (containerd sends 100 at a time).
LIST_BATCH = 100


class SnapshotsAPI:
    def __init__(self, service: local.SnapshotsService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Snapshots"],
            {
                "Prepare": self.prepare,
                "View": self.view,
                "Mounts": self.mounts,
                "Commit": self.commit,
                "Remove": self.remove,
                "Stat": self.stat,
                "Update": self.update,
                "List": self.list,
                "Usage": self.usage,
                "Cleanup": self.cleanup,
            },
        )

    async def prepare(
        self, request: pb.PrepareSnapshotRequest, call: Call
    ) -> pb.PrepareSnapshotResponse:
        mounts = await self._service.prepare(
            request.snapshotter, request.key, request.parent, request.labels
        )
        return pb.PrepareSnapshotResponse(mounts=mounts_wire.list_to_pb(mounts))

    async def view(self, request: pb.ViewSnapshotRequest, call: Call) -> pb.ViewSnapshotResponse:
        mounts = await self._service.view(
            request.snapshotter, request.key, request.parent, request.labels
        )
        return pb.ViewSnapshotResponse(mounts=mounts_wire.list_to_pb(mounts))

    async def mounts(self, request: pb.MountsRequest, call: Call) -> pb.MountsResponse:
        mounts = await self._service.mounts(request.snapshotter, request.key)
        return pb.MountsResponse(mounts=mounts_wire.list_to_pb(mounts))

    async def commit(self, request: pb.CommitSnapshotRequest, call: Call) -> empty_pb2.Empty:
        await self._service.commit(request.snapshotter, request.name, request.key, request.labels)
        return empty_pb2.Empty()

    async def remove(self, request: pb.RemoveSnapshotRequest, call: Call) -> empty_pb2.Empty:
        await self._service.remove(request.snapshotter, request.key)
        return empty_pb2.Empty()

    async def stat(self, request: pb.StatSnapshotRequest, call: Call) -> pb.StatSnapshotResponse:
        info = await self._service.stat(request.snapshotter, request.key)
        return pb.StatSnapshotResponse(info=wire.info_to_pb(info))

    async def update(
        self, request: pb.UpdateSnapshotRequest, call: Call
    ) -> pb.UpdateSnapshotResponse:
        info = await self._service.update(
            request.snapshotter, wire.info_from_pb(request.info), wire.update_paths(request)
        )
        return pb.UpdateSnapshotResponse(info=wire.info_to_pb(info))

    async def list(
        self, request: pb.ListSnapshotsRequest, call: Call
    ) -> AsyncIterator[pb.ListSnapshotsResponse]:
        batch: list[pb.Info] = []
        async for info in self._service.walk(request.snapshotter, *request.filters):
            batch.append(wire.info_to_pb(info))
            if len(batch) >= LIST_BATCH:
                yield pb.ListSnapshotsResponse(info=batch)
                batch = []
        if batch:
            yield pb.ListSnapshotsResponse(info=batch)

    async def usage(self, request: pb.UsageRequest, call: Call) -> pb.UsageResponse:
        return wire.usage_to_pb(await self._service.usage(request.snapshotter, request.key))

    async def cleanup(self, request: pb.CleanupRequest, call: Call) -> empty_pb2.Empty:
        await self._service.cleanup(request.snapshotter)
        return empty_pb2.Empty()


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="snapshots",
        init=lambda ctx: SnapshotsAPI(ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)),
        requires=(plugin.PluginType.SERVICE,),
    )
)
