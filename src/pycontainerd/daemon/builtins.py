"""The plugins built into the daemon: importing a module registers it."""

from __future__ import annotations

import importlib

__all__ = ["load"]

MODULES = (
    "pycontainerd.metadata",
    "pycontainerd.services.version",
    "pycontainerd.services.healthcheck",
    "pycontainerd.services.namespaces",
    "pycontainerd.services.events",
    "pycontainerd.services.introspection",
)


def load() -> None:
    for name in MODULES:
        importlib.import_module(name)
