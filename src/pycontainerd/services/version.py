"""containerd.services.version.v1.Version."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.version.v1 import version_pb2 as pb
from pycontainerd.api.services.version.v1 import version_pb2_grpc as pb_grpc
from pycontainerd.services._edge import servicer
from pycontainerd.version import REVISION, VERSION


@servicer("containerd.services.version.v1.Version")
class VersionService(pb_grpc.VersionServicer):
    _response = pb.VersionResponse(version=VERSION, revision=REVISION)

    async def Version(self, request: empty_pb2.Empty, context: Any) -> pb.VersionResponse:
        return self._response

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_VersionServicer_to_server(self, server)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC, id="version", init=lambda ctx: VersionService()
    )
)
