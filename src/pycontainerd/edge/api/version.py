"""containerd.services.version.v1.Version: the daemon's version, nothing else."""

from __future__ import annotations

from google.protobuf import empty_pb2

from pycontainerd import plugin
from pycontainerd.api.services.version.v1 import version_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.version import REVISION, VERSION

__all__ = ["VersionAPI"]

_RESPONSE = pb.VersionResponse(version=VERSION, revision=REVISION).SerializeToString()


class VersionAPI:
    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Version"],
            {"Version": self.version},
            preserialized=("Version",),
        )

    async def version(self, request: empty_pb2.Empty, call: Call) -> bytes:
        return _RESPONSE


plugin.register(
    plugin.Registration(type=plugin.PluginType.GRPC, id="version", init=lambda ctx: VersionAPI())
)
