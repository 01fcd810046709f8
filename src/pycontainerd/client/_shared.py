"""What the sync and async clients share: the default address, results, targets.

Kept light (pyctr reads ``DEFAULT_ADDRESS`` for its ``--help``): the
request metadata is built by the client's ``_Call``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_ADDRESS", "ServerInfo", "Version", "channel_target"]

DEFAULT_ADDRESS = "/run/pycontainerd/pycontainerd.sock"


@dataclass(frozen=True, slots=True)
class Version:
    version: str
    revision: str


@dataclass(frozen=True, slots=True)
class ServerInfo:
    uuid: str


def channel_target(address: str) -> str:
    """A gRPC target for a socket path (``unix://`` and ``unix:`` accepted)."""
    if address.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return address
    return f"unix://{address}"
