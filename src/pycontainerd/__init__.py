"""pycontainerd: containerd, written in Python.

``pycontainerd.Client`` and ``pycontainerd.AsyncClient`` talk to any
containerd-compatible daemon; they are loaded on first use so the daemon
side never imports the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycontainerd.version import VERSION as __version__

if TYPE_CHECKING:
    from pycontainerd.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "AsyncClient"):
        from pycontainerd import client

        return getattr(client, name)
    raise AttributeError(f"module 'pycontainerd' has no attribute {name!r}")
