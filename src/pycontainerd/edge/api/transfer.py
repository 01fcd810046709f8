"""containerd.services.transfer.v1.Transfer over the local transfer service."""

from __future__ import annotations

from google.protobuf import empty_pb2

from pycontainerd import errdefs, plugin
from pycontainerd.api.services.transfer.v1 import transfer_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services.transfer import ID, TransferService

__all__ = ["TransferAPI"]


class TransferAPI:
    def __init__(self, service: TransferService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(pb.DESCRIPTOR.services_by_name["Transfer"], {"Transfer": self.transfer})

    async def transfer(self, request: pb.TransferRequest, call: Call) -> empty_pb2.Empty:
        if not request.HasField("source") or not request.HasField("destination"):
            raise errdefs.InvalidArgument("transfer needs a source and a destination")
        await self._service.transfer(
            request.source, request.destination, request.options.progress_stream
        )
        return empty_pb2.Empty()


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="transfer",
        init=lambda ctx: TransferAPI(ctx.plugins.get_by_id(plugin.PluginType.TRANSFER, ID)),
        requires=(plugin.PluginType.TRANSFER,),
    )
)
