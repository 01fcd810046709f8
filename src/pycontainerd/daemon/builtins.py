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
    "pycontainerd.services.version",
    "pycontainerd.services.healthcheck",
    "pycontainerd.services.namespaces",
    "pycontainerd.services.containers",
    "pycontainerd.services.images",
    "pycontainerd.services.leases",
    "pycontainerd.services.content",
    "pycontainerd.services.snapshots",
    "pycontainerd.diff.walking",
    "pycontainerd.diff.ordered",
    "pycontainerd.services.diff",
    "pycontainerd.services.events",
    "pycontainerd.services.introspection",
)


def load() -> None:
    for name in MODULES:
        importlib.import_module(name)
