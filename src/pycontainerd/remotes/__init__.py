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
into the store, unpacking, progress) is built on top of it::

    async with Resolver(hosts_dir="/etc/containerd/certs.d",
                        credentials=static_credentials("me", "secret")) as resolver:
        name, root = await resolver.resolve("busybox")      # HEAD, else GET
        fetcher = resolver.fetcher(name)
        index = await fetcher.fetch_bytes(root)             # verified, <= 4 MiB
        async with contextlib.aclosing(fetcher.fetch(layer)) as chunks:
            async for chunk in chunks:                      # ~1 MiB each
                ingest.write(chunk)                         # commit only on normal end
        pusher = resolver.pusher("registry.example/me/app:v1")
        await pusher.push(layer, opener, source_repository="library/busybox")
        await pusher.push(manifest, manifest_bytes, tag=True)

One resolver is meant to be shared by a whole pull (its pool and token
cache serve concurrent fetches); each fetch holds one connection.
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
