"""What the sync and async clients share: defaults, results, wire metadata."""

from __future__ import annotations

from dataclasses import dataclass

from pycontainerd import leases, namespaces

__all__ = ["DEFAULT_ADDRESS", "ServerInfo", "Version", "channel_target", "metadata_for"]

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


def metadata_for(namespace: str | None) -> tuple[tuple[str, str], ...]:
    """Request metadata: the namespace, and the lease of this context if any."""
    md: tuple[tuple[str, str], ...] = ((namespaces.GRPC_HEADER, namespace),) if namespace else ()
    lease_id = leases.current()
    if lease_id:
        md += ((leases.GRPC_HEADER, lease_id),)
    return md
