"""How an address becomes a gRPC target, for the client and for proxy plugins alike.

containerd's addresses are unix socket paths (``pkg/dialer``); ``unix://``
may already be in front.  A target naming one of gRPC's own resolvers
(``dns:``, ``ipv4:``, ``ipv6:``) is passed on as it is, so a client can be
pointed at a daemon over TCP; anything else is a path.
"""

from __future__ import annotations

__all__ = ["channel_target"]

#: Prefixes of targets gRPC resolves itself; ``unix:`` covers ``unix://``.
_GRPC_SCHEMES = ("unix:", "dns:", "ipv4:", "ipv6:")


def channel_target(address: str) -> str:
    """The gRPC target for ``address``, a socket path unless gRPC resolves it."""
    if address.startswith(_GRPC_SCHEMES):
        return address
    # gRPC reads ``unix://`` as the start of an authority: only an absolute
    # path may follow it, a relative one takes the ``unix:`` form.
    return f"unix://{address}" if address.startswith("/") else f"unix:{address}"
