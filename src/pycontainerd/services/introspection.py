"""containerd.services.introspection.v1.Introspection: plugins and server identity."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd import errdefs, filters, plugin
from pycontainerd.api.services.introspection.v1 import introspection_pb2 as pb
from pycontainerd.api.services.introspection.v1 import introspection_pb2_grpc as pb_grpc
from pycontainerd.services._edge import servicer
from pycontainerd.wire.introspection import PluginError, PluginInfo, to_pb


def plugin_info(p: plugin.Plugin) -> PluginInfo:
    err = None
    if p.error is not None:
        if isinstance(p.error, plugin.SkipPlugin):
            err = PluginError(grpc.StatusCode.UNKNOWN.value[0], f"{p.error}: skip plugin")
        else:
            code = errdefs.to_grpc_code(p.error).value[0]
            err = PluginError(code, errdefs.wire_message(p.error))
    return PluginInfo(
        type=p.registration.type,
        id=p.registration.id,
        requires=[str(r) for r in p.registration.requires],
        platforms=p.platforms,
        exports=p.exports,
        capabilities=p.capabilities,
        init_err=err,
    )


def _adapt(info: PluginInfo) -> filters.AdaptorLike:
    return info


def load_or_create_uuid(path: Path) -> str:
    """The server UUID, created once and kept under root (atomic write)."""
    try:
        value = path.read_text().strip()
        uuid.UUID(value)
        return value
    except (FileNotFoundError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    value = str(uuid.uuid4())
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(value)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return value


@servicer("containerd.services.introspection.v1.Introspection")
class IntrospectionService(pb_grpc.IntrospectionServicer):
    def __init__(self, plugins: plugin.PluginSet, uuid: str) -> None:
        self._plugins = plugins
        self._uuid = uuid

    async def Plugins(self, request: pb.PluginsRequest, context: Any) -> pb.PluginsResponse:
        flt = await filters.parse_async(request.filters)
        infos = await filters.select(flt, [plugin_info(p) for p in self._plugins], _adapt)
        return pb.PluginsResponse(plugins=[to_pb(i) for i in infos])

    async def Server(self, request: empty_pb2.Empty, context: Any) -> pb.ServerResponse:
        return pb.ServerResponse(uuid=self._uuid)

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_IntrospectionServicer_to_server(self, server)


def _init(ctx: plugin.InitContext) -> IntrospectionService:
    return IntrospectionService(ctx.plugins, load_or_create_uuid(ctx.root / "uuid"))


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC, id="introspection", init=_init, requires=("*",)
    )
)
