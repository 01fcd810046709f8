"""The diff service plugin: ``io.containerd.service.v1.diff-service``.

It holds the configured differs in order of preference
(``[plugins."io.containerd.service.v1.diff-service"] default = ["walking"]``)
and hands each request to the first one that does not answer
NotImplemented, as containerd's ``services/diff/local.go`` does; the gRPC
service (:mod:`pycontainerd.edge.api.diff`) is a thin adapter over it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pycontainerd import errdefs, plugin
from pycontainerd.diff import Differ, Payloads
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount

__all__ = ["DiffServiceConfig", "OrderedDiffer"]

#: The service plugin's id (containerd's ``services.DiffService``).
SERVICE_ID = "diff-service"


@dataclass(frozen=True, slots=True)
class DiffServiceConfig:
    """``[plugins."io.containerd.service.v1.diff-service"]``."""

    #: Differ plugin ids, most preferred first.
    default: tuple[str, ...] = ("walking",)


class OrderedDiffer:
    """Tries each differ in turn; the first answer other than NotImplemented wins."""

    def __init__(self, differs: Sequence[Differ]) -> None:
        if not differs:
            raise errdefs.InvalidArgument("no differs configured")
        self._differs = tuple(differs)

    async def apply(
        self, desc: Descriptor, mounts: Sequence[Mount], *, payloads: Payloads | None = None
    ) -> Descriptor:
        last: errdefs.NotImplemented | None = None
        for differ in self._differs:
            try:
                return await differ.apply(desc, mounts, payloads=payloads)
            except errdefs.NotImplemented as exc:
                last = exc
        assert last is not None
        raise last

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        last: errdefs.NotImplemented | None = None
        for differ in self._differs:
            try:
                return await differ.compare(
                    lower, upper, media_type=media_type, ref=ref, labels=labels
                )
            except errdefs.NotImplemented as exc:
                last = exc
        assert last is not None
        raise last


def _init(ctx: plugin.InitContext) -> OrderedDiffer:
    config = ctx.config if isinstance(ctx.config, DiffServiceConfig) else DiffServiceConfig()
    differs: list[Differ] = []
    for name in config.default:
        try:
            instance = ctx.plugins.get_by_id(plugin.PluginType.DIFF, name)
        except errdefs.NotFound:
            raise errdefs.NotFound(f"needed differ not loaded: {name}") from None
        except errdefs.FailedPrecondition as exc:
            raise errdefs.FailedPrecondition(
                f"could not load required differ due plugin init error: {name}: {exc.message}"
            ) from None
        if not isinstance(instance, Differ):
            raise errdefs.InvalidArgument(
                f"differ does not implement Comparer and Applier interface: {name}"
            )
        differs.append(instance)
    return OrderedDiffer(differs)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SERVICE,
        id=SERVICE_ID,
        init=_init,
        requires=(plugin.PluginType.DIFF,),
        config=DiffServiceConfig,
    )
)
