"""The plugins built into the daemon: importing a module registers it."""

from __future__ import annotations

import importlib

__all__ = ["load"]

MODULES = (
    "pycontainerd.content.local",
    "pycontainerd.snapshots.overlay",
    "pycontainerd.snapshots.native",
    "pycontainerd.metadata",
    "pycontainerd.gc.scheduler",
    "pycontainerd.diff.walking",
    "pycontainerd.diff.ordered",
    "pycontainerd.runtime.manager",
    # The local services (io.containerd.service.v1) ...
    "pycontainerd.services.namespaces",
    "pycontainerd.services.containers",
    "pycontainerd.services.images",
    "pycontainerd.services.leases",
    "pycontainerd.services.content",
    "pycontainerd.services.snapshots",
    "pycontainerd.services.tasks",
    "pycontainerd.services.events",
    "pycontainerd.services.introspection",
    "pycontainerd.services.streaming",
    "pycontainerd.services.transfer",
    # The restart monitor (io.containerd.internal.v1), over the local services.
    "pycontainerd.services.restart",
    # ... and containerd's API over them (io.containerd.grpc.v1).
    "pycontainerd.edge.api.version",
    "pycontainerd.edge.api.health",
    "pycontainerd.edge.api.namespaces",
    "pycontainerd.edge.api.containers",
    "pycontainerd.edge.api.images",
    "pycontainerd.edge.api.leases",
    "pycontainerd.edge.api.content",
    "pycontainerd.edge.api.snapshots",
    "pycontainerd.edge.api.tasks",
    "pycontainerd.edge.api.diff",
    "pycontainerd.edge.api.events",
    "pycontainerd.edge.api.introspection",
    "pycontainerd.edge.api.streaming",
    "pycontainerd.edge.api.transfer",
    # ... and over ttrpc (io.containerd.ttrpc.v1), for the shims.
    "pycontainerd.edge.api.ttrpc_events",
)


def load() -> None:
    for name in MODULES:
        importlib.import_module(name)
