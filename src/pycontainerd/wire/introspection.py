"""Introspection messages <-> :class:`PluginInfo`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.rpc import status_pb2

from pycontainerd.api.services.introspection.v1 import introspection_pb2 as pb
from pycontainerd.api.types import platform_pb2

__all__ = ["PluginError", "PluginInfo", "from_pb", "to_pb"]


@dataclass(frozen=True, slots=True)
class PluginError:
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """A plugin as introspection reports it; ``status`` is what ctr prints."""

    type: str
    id: str
    requires: Sequence[str] = ()
    platforms: Sequence[str] = ()
    exports: Mapping[str, str] = field(default_factory=dict)
    capabilities: Sequence[str] = ()
    init_err: PluginError | None = None

    @property
    def status(self) -> str:
        if self.init_err is None:
            return "ok"
        # ctr prints "skip" when the error carries containerd's skip marker.
        return "skip" if "skip plugin" in self.init_err.message else "error"

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        """Filter adaptor: ``type`` and ``id``, as containerd's introspection offers."""
        if len(path) == 1 and path[0] == "type":
            return self.type, bool(self.type)
        if len(path) == 1 and path[0] == "id":
            return self.id, bool(self.id)
        return "", False


def _platform_pb(spec: str) -> platform_pb2.Platform:
    parts = spec.split("/")
    return platform_pb2.Platform(
        os=parts[0],
        architecture=parts[1] if len(parts) > 1 else "",
        variant=parts[2] if len(parts) > 2 else "",
    )


def to_pb(info: PluginInfo) -> pb.Plugin:
    msg = pb.Plugin(
        type=info.type,
        id=info.id,
        requires=list(info.requires),
        platforms=[_platform_pb(p) for p in info.platforms],
        exports=dict(info.exports),
        capabilities=list(info.capabilities),
    )
    if info.init_err is not None:
        msg.init_err.CopyFrom(
            status_pb2.Status(code=info.init_err.code, message=info.init_err.message)
        )
    return msg


def from_pb(msg: pb.Plugin) -> PluginInfo:
    platforms = ["/".join(x for x in (p.os, p.architecture, p.variant) if x) for p in msg.platforms]
    return PluginInfo(
        type=msg.type,
        id=msg.id,
        requires=list(msg.requires),
        platforms=platforms,
        exports=dict(msg.exports),
        capabilities=list(msg.capabilities),
        init_err=(
            PluginError(msg.init_err.code, msg.init_err.message)
            if msg.HasField("init_err")
            else None
        ),
    )
