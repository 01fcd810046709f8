"""Clients for any containerd-compatible daemon: ``Client`` and ``AsyncClient``.

Both have the same methods; ``AsyncClient`` is written by hand and
``Client`` is generated from it (``make unasync``).  Each is imported on
first use, so that a program that needs one (pyctr needs only ``Client``)
does not pay for loading the other, nor for grpcio before it dials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycontainerd.client._shared import DEFAULT_ADDRESS, ServerInfo, Version

if TYPE_CHECKING:
    from pycontainerd.client._async.client import AsyncClient
    from pycontainerd.client._sync.client import Client

__all__ = ["DEFAULT_ADDRESS", "AsyncClient", "Client", "ServerInfo", "Version"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from pycontainerd.client._sync.client import Client

        return Client
    if name == "AsyncClient":
        from pycontainerd.client._async.client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'pycontainerd.client' has no attribute {name!r}")
