"""Clients for any containerd-compatible daemon: ``Client`` and ``AsyncClient``.

Both have the same methods; ``AsyncClient`` is written by hand and
``Client`` is generated from it (``make unasync``).
"""

from pycontainerd.client._async.client import AsyncClient
from pycontainerd.client._shared import DEFAULT_ADDRESS, ServerInfo, Version
from pycontainerd.client._sync.client import Client

__all__ = ["DEFAULT_ADDRESS", "AsyncClient", "Client", "ServerInfo", "Version"]
