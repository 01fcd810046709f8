"""The registry side of distribution: containerd's ``remotes`` and ``remotes/docker``.

:class:`Resolver` resolves references (``busybox`` is
``docker.io/library/busybox:latest``) to root descriptors and makes a
:class:`Fetcher` (verified, resumable blob streams) and a :class:`Pusher`
(existence checks, cross-repository mounts, monolithic and chunked uploads)
for a repository.  Hosts, mirrors and TLS come from containerd's
``hosts.toml`` (:mod:`pycontainerd.remotes.hosts`); Basic and Bearer-token
auth from :mod:`pycontainerd.remotes.auth`.  The HTTP/1.1 client underneath
is ours (``_http``): keep-alive pools, redirects, ranges, and a bound on
everything it reads.

This package knows no content store: pull and push orchestration (writing
into the store, unpacking, progress) is built on top of it.
"""

from __future__ import annotations

from pycontainerd.remotes.auth import Credentials, static_credentials
from pycontainerd.remotes.hosts import RegistryHost, configure_hosts
from pycontainerd.remotes.registry import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    DescriptorLike,
    Fetcher,
    Pusher,
    PushResult,
    ResolvedDescriptor,
    Resolver,
)

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "Credentials",
    "DescriptorLike",
    "Fetcher",
    "PushResult",
    "Pusher",
    "RegistryHost",
    "ResolvedDescriptor",
    "Resolver",
    "configure_hosts",
    "static_credentials",
]
