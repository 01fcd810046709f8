"""containerd.services.diff.v1.Diff.

A thin adapter over the diff service plugin
(``io.containerd.service.v1.diff-service``, :mod:`pycontainerd.diff.ordered`):
Apply unpacks a layer blob onto mounts, Diff writes the changes between two
mount sets into the content store.
"""

from __future__ import annotations

from typing import Any

import grpc

from pycontainerd import plugin
from pycontainerd.api.services.diff.v1 import diff_pb2 as pb
from pycontainerd.api.services.diff.v1 import diff_pb2_grpc as pb_grpc
from pycontainerd.diff import Differ
from pycontainerd.diff.ordered import SERVICE_ID
from pycontainerd.services._edge import servicer
from pycontainerd.wire.images import descriptor_from_pb, descriptor_to_pb
from pycontainerd.wire.mounts import list_from_pb

__all__ = ["DiffService"]


@servicer("containerd.services.diff.v1.Diff")
class DiffService(pb_grpc.DiffServicer):
    def __init__(self, differ: Differ) -> None:
        self._differ = differ

    async def Apply(self, request: pb.ApplyRequest, context: Any) -> pb.ApplyResponse:
        applied = await self._differ.apply(
            descriptor_from_pb(request.diff),
            list_from_pb(request.mounts),
            payloads=dict(request.payloads) or None,
        )
        return pb.ApplyResponse(applied=descriptor_to_pb(applied))

    async def Diff(self, request: pb.DiffRequest, context: Any) -> pb.DiffResponse:
        desc = await self._differ.compare(
            list_from_pb(request.left),
            list_from_pb(request.right),
            media_type=request.media_type,
            ref=request.ref,
            labels=dict(request.labels) or None,
        )
        return pb.DiffResponse(diff=descriptor_to_pb(desc))

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_DiffServicer_to_server(self, server)


def _init(ctx: plugin.InitContext) -> DiffService:
    differ: Differ = ctx.plugins.get_by_id(plugin.PluginType.SERVICE, SERVICE_ID)
    return DiffService(differ)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="diff",
        init=_init,
        requires=(plugin.PluginType.SERVICE,),
    )
)
