"""containerd.services.diff.v1.Diff over the local diff service
(``io.containerd.service.v1.diff-service``, :mod:`pycontainerd.diff.ordered`):
Apply unpacks a layer blob onto mounts, Diff writes the changes between two
mount sets into the content store.
"""

from __future__ import annotations

from pycontainerd import plugin
from pycontainerd.api.services.diff.v1 import diff_pb2 as pb
from pycontainerd.diff import Differ
from pycontainerd.diff.ordered import SERVICE_ID
from pycontainerd.edge import Call, Method, describe
from pycontainerd.wire.images import descriptor_from_pb, descriptor_to_pb
from pycontainerd.wire.mounts import list_from_pb

__all__ = ["DiffAPI"]


class DiffAPI:
    def __init__(self, differ: Differ) -> None:
        self._differ = differ

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Diff"], {"Apply": self.apply, "Diff": self.diff}
        )

    async def apply(self, request: pb.ApplyRequest, call: Call) -> pb.ApplyResponse:
        applied = await self._differ.apply(
            descriptor_from_pb(request.diff),
            list_from_pb(request.mounts),
            payloads=dict(request.payloads) or None,
        )
        return pb.ApplyResponse(applied=descriptor_to_pb(applied))

    async def diff(self, request: pb.DiffRequest, call: Call) -> pb.DiffResponse:
        desc = await self._differ.compare(
            list_from_pb(request.left),
            list_from_pb(request.right),
            media_type=request.media_type,
            ref=request.ref,
            labels=dict(request.labels) or None,
        )
        return pb.DiffResponse(diff=descriptor_to_pb(desc))


def _init(ctx: plugin.InitContext) -> DiffAPI:
    differ: Differ = ctx.plugins.get_by_id(plugin.PluginType.SERVICE, SERVICE_ID)
    return DiffAPI(differ)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="diff",
        init=_init,
        requires=(plugin.PluginType.SERVICE,),
    )
)
