"""The local introspection service (containerd's ``introspection-service``):
the plugins as loaded, and the server's identity."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from pycontainerd import errdefs, filters, plugin
from pycontainerd.wire.introspection import PluginError, PluginInfo

__all__ = ["IntrospectionService", "load_or_create_uuid", "plugin_info"]

ID = "introspection-service"


def plugin_info(p: plugin.Plugin) -> PluginInfo:
    err = None
    if p.error is not None:
        if isinstance(p.error, plugin.SkipPlugin):
            err = PluginError(errdefs.CODES["UNKNOWN"], f"{p.error}: skip plugin")
        else:
            code = errdefs.CODES[errdefs.code_name(p.error)]
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


class IntrospectionService:
    def __init__(self, plugins: plugin.PluginSet, uuid: str) -> None:
        self._plugins = plugins
        self._uuid = uuid

    async def plugins(self, *filter_texts: str) -> Sequence[PluginInfo]:
        flt = await filters.parse_async(filter_texts)
        return await filters.select(flt, [plugin_info(p) for p in self._plugins], _adapt)

    def server_uuid(self) -> str:
        return self._uuid


def _init(ctx: plugin.InitContext) -> IntrospectionService:
    # The plugin set is read when asked, so every plugin shows, whatever
    # loads after this one.  The UUID stays where containerd keeps it, under
    # the introspection API plugin's root.
    uuid_file = ctx.root.parent / f"{plugin.PluginType.GRPC}.introspection" / "uuid"
    return IntrospectionService(ctx.plugins, load_or_create_uuid(uuid_file))


plugin.register(plugin.Registration(type=plugin.PluginType.SERVICE, id=ID, init=_init))
