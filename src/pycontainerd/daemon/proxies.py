"""Proxy plugins: ``[proxy_plugins.NAME]`` entries become plugins.

containerd lets a config name external gRPC servers as plugins.  An entry
of ``type = "snapshot"`` becomes the snapshotter ``NAME``
(``io.containerd.snapshotter.v1.NAME``), a
:class:`~pycontainerd.snapshots.proxy.ProxySnapshotter` over the entry's
``address``; the metadata layer then wraps it like any other snapshotter.
Other types are not supported yet and are logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pycontainerd import errdefs, plugin
from pycontainerd.daemon.config import ProxyPlugin
from pycontainerd.snapshots.proxy import ProxySnapshotter

__all__ = ["register"]

log = logging.getLogger(__name__)

# Registrations are process-wide; the address a name stands for is looked up
# at init, so a later config (an embedder's second daemon) is honoured.
_addresses: dict[str, str] = {}


def _init_snapshot(name: str) -> plugin.InitFunc:
    def init(ctx: plugin.InitContext) -> ProxySnapshotter:
        address = _addresses[name]
        ctx.exports["address"] = address
        return ProxySnapshotter(address, name)

    return init


def register(proxies: Mapping[str, ProxyPlugin]) -> None:
    """Register a plugin for each proxy entry of a type we know."""
    for name, proxy in proxies.items():
        if proxy.type != "snapshot":
            log.warning("unsupported proxy plugin type", extra={"name": name, "type": proxy.type})
            continue
        first = name not in _addresses
        _addresses[name] = proxy.address
        if not first:
            continue
        try:
            plugin.register(
                plugin.Registration(
                    type=plugin.PluginType.SNAPSHOT, id=name, init=_init_snapshot(name)
                )
            )
        except errdefs.AlreadyExists:
            log.warning("proxy plugin shadows a built-in", extra={"name": name})
