"""pycontainerd: containerd, written in Python.

``pycontainerd.Client`` and ``pycontainerd.AsyncClient`` talk to any
containerd-compatible daemon; they are loaded on first use so the daemon
side never imports the client.

Every process of ours imports this module first -- among them the shim's
``start`` and ``delete``, twice per ``ctr run`` -- so it imports nothing
but the version constant: not even ``typing`` (about 5 ms at start-up).
"""

from __future__ import annotations

from pycontainerd.version import VERSION as __version__

# typing's own idiom without importing typing: type checkers take it as True.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycontainerd.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "AsyncClient"):
        from pycontainerd import client

        return getattr(client, name)
    raise AttributeError(f"module 'pycontainerd' has no attribute {name!r}")
