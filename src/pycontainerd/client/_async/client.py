"""The client, written async (``AsyncClient``); its sync twin is generated.

This file is the source of truth for both clients: ``tools/unasync.py``
turns it into ``client/_sync/client.py`` (``Client``) by dropping
``async``/``await`` and swapping ``grpc.aio`` for ``grpc``.  Keep to code
that survives that rewrite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pycontainerd import errdefs
from pycontainerd import leases as lease_context
from pycontainerd import namespaces as namespace_context
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from pycontainerd.client._shared import DEFAULT_ADDRESS, ServerInfo, Version
from pycontainerd.dialer import channel_target

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import IO, BinaryIO

    from google.protobuf.message import Message

    from pycontainerd import platforms
    from pycontainerd.client._async.containers import (
        AnyContainerOpt,
        AsyncContainer,
        AsyncContainers,
    )
    from pycontainerd.client._async.content import AsyncContent
    from pycontainerd.client._async.diff import AsyncDiff
    from pycontainerd.client._async.events import AsyncEvents
    from pycontainerd.client._async.image import AsyncImage
    from pycontainerd.client._async.images import AsyncImages
    from pycontainerd.client._async.leases import AsyncLeases, AsyncLeaseScope
    from pycontainerd.client._async.namespaces import AsyncNamespaces
    from pycontainerd.client._async.snapshots import AsyncSnapshotService
    from pycontainerd.client._async.task import AsyncTasks
    from pycontainerd.distribution.pull import ProgressFunc
    from pycontainerd.distribution.push import PushProgressFunc
    from pycontainerd.images import Image as ImageRecord
    from pycontainerd.images.archive_import import RefTranslator
    from pycontainerd.wire.introspection import PluginInfo

__all__ = ["AsyncClient"]


@dataclass(slots=True)
class _Call:
    """Where a namespaced call goes: channel, default namespace, timeout."""

    channel: grpc.aio.Channel
    namespace: str
    timeout: float | None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Request metadata: the namespace, and the lease of this context if any."""
        namespace = namespace_context.current() or self.namespace
        md: tuple[tuple[str, str], ...] = (
            ((namespace_context.GRPC_HEADER, namespace),) if namespace else ()
        )
        lease_id = lease_context.current()
        if lease_id:
            md += ((lease_context.GRPC_HEADER, lease_id),)
        return md

    async def unary(self, method: Any, request: Message) -> Any:
        """Make one unary call, turning a failed status into our error class."""
        try:
            return await method(request, metadata=self.metadata(), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc


class AsyncClient:
    """A connection to a containerd-compatible daemon (ours or containerd)."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        namespace: str = namespace_context.DEFAULT,
        *,
        timeout: float | None = None,
        options: Sequence[tuple[str, Any]] = (),
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        """Dial ``address``, or call over ``channel`` when one is given: the
        in-process channel of a daemon this program embeds (see
        ``Server.client()``).  The client owns its channel: close() closes it."""
        self.address = address
        self.namespace = namespace
        self._channel = channel if channel is not None else grpc.aio.insecure_channel(
            channel_target(address),
            options=[
                ("grpc.max_receive_message_length", 16 << 20),
                ("grpc.max_send_message_length", 16 << 20),
                ("grpc.default_authority", "localhost"),
                *options,
            ],
        )
        self._call = _Call(self._channel, namespace, timeout)
        self._version = version_pb2_grpc.VersionStub(self._channel)
        self._introspection = introspection_pb2_grpc.IntrospectionStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # The services are made on first use, each importing its module then: a
    # program that only asks the version (pyctr version) loads none of the
    # image, content or transfer code.

    @functools.cached_property
    def namespaces(self) -> AsyncNamespaces:
        from pycontainerd.client._async.namespaces import AsyncNamespaces

        return AsyncNamespaces(self._call)

    @functools.cached_property
    def events(self) -> AsyncEvents:
        from pycontainerd.client._async.events import AsyncEvents

        return AsyncEvents(self._call)

    @functools.cached_property
    def containers(self) -> AsyncContainers:
        from pycontainerd.client._async.containers import AsyncContainers

        return AsyncContainers(self._call)

    @functools.cached_property
    def tasks(self) -> AsyncTasks:
        from pycontainerd.client._async.task import AsyncTasks

        return AsyncTasks(self._call)

    @functools.cached_property
    def images(self) -> AsyncImages:
        from pycontainerd.client._async.images import AsyncImages

        return AsyncImages(self._call)

    @functools.cached_property
    def leases(self) -> AsyncLeases:
        from pycontainerd.client._async.leases import AsyncLeases

        return AsyncLeases(self._call)

    @functools.cached_property
    def content(self) -> AsyncContent:
        from pycontainerd.client._async.content import AsyncContent

        return AsyncContent(self._call)

    @functools.cached_property
    def diff(self) -> AsyncDiff:
        from pycontainerd.client._async.diff import AsyncDiff

        return AsyncDiff(self._call)

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncClient:
        """Address and namespace from CONTAINERD_ADDRESS / CONTAINERD_NAMESPACE."""
        return cls(
            os.environ.get("CONTAINERD_ADDRESS") or DEFAULT_ADDRESS,
            os.environ.get("CONTAINERD_NAMESPACE") or namespace_context.DEFAULT,
            **kwargs,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def version(self) -> Version:
        resp = await self._call.unary(self._version.Version, empty_pb2.Empty())
        return Version(version=resp.version, revision=resp.revision)

    async def server(self) -> ServerInfo:
        resp = await self._call.unary(self._introspection.Server, empty_pb2.Empty())
        return ServerInfo(uuid=resp.uuid)

    async def is_serving(self) -> bool:
        """True once the daemon answers its health check as SERVING."""
        try:
            resp = await self._health.Check(
                health_pb2.HealthCheckRequest(), timeout=self._call.timeout or 5.0
            )
        except grpc.RpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    async def wait_ready(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the daemon to accept calls.

        A dial timeout, like containerd's ``WithTimeout``: without it the
        first call fails at once when the socket is not there yet.  Raises
        ``Unavailable`` when the deadline passes.
        """
        try:
            await self._health.Check(
                health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return  # connected; the daemon just has no health service
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise errdefs.Unavailable(
                    f"failed to dial {errdefs.q(self.address)}: context deadline exceeded"
                ) from exc
            raise errdefs.from_grpc(exc) from exc

    # --- containers and leases ------------------------------------------------

    async def new_container(
        self,
        id: str,
        *opts: AnyContainerOpt,
        labels: Mapping[str, str] | None = None,
        image: str | None = None,
        runtime: str | None = None,
        runtime_options: Any = None,
        spec: Mapping[str, Any] | Any = None,
        snapshotter: str | None = None,
        snapshot_key: str | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> AsyncContainer:
        """Create a container record; keyword fields first, then ``opts`` in order.

        ``spec`` is an OCI spec as a mapping (see :mod:`pycontainerd.oci.spec`)
        or a packed Any; ``runtime`` defaults to ``io.containerd.runc.v2``.
        """
        from pycontainerd.client._async.containers import AsyncContainer, has_client_opts
        from pycontainerd.client._async.containers import build as build_container

        # Snapshots the options create are held by a lease until the record
        # holds them, as containerd's NewContainer does.
        needs_lease = has_client_opts(opts) and lease_context.current() is None
        async with self.lease() if needs_lease else contextlib.nullcontext():
            record = await build_container(
                self,
                id,
                opts,
                labels=dict(labels) if labels is not None else None,
                image=image,
                runtime=runtime,
                runtime_options=runtime_options,
                spec=spec,
                snapshotter=snapshotter,
                snapshot_key=snapshot_key,
                extensions=dict(extensions) if extensions is not None else None,
            )
            return AsyncContainer(self, await self.containers.create(record))

    async def load_container(self, id: str) -> AsyncContainer:
        """The container ``id`` of the current namespace (NotFound if none)."""
        from pycontainerd.client._async.containers import AsyncContainer

        return AsyncContainer(self, await self.containers.get(id))

    async def list_containers(self, *filters: str) -> list[AsyncContainer]:
        """Containers matching any of ``filters`` (``labels.app==web``...)."""
        from pycontainerd.client._async.containers import AsyncContainer

        return [AsyncContainer(self, r) for r in await self.containers.list(*filters)]

    # --- images -----------------------------------------------------------------

    async def get_image(
        self, name: str, *, platform: platforms.Matcher | None = None
    ) -> AsyncImage:
        """The image ``name`` (NotFound if none), for ``platform`` (default: the host's)."""
        from pycontainerd.client._async.image import AsyncImage

        return AsyncImage(self, await self.images.get(name), platform=platform)

    async def list_images(self, *filters: str) -> list[AsyncImage]:
        """Images matching any of ``filters`` (``name==...``, ``labels.k==v``...)."""
        from pycontainerd.client._async.image import AsyncImage

        return [AsyncImage(self, r) for r in await self.images.list(*filters)]

    async def import_archive(
        self,
        stream: IO[bytes],
        *,
        ref_translator: RefTranslator | None = None,
        digest_ref: Callable[[str], str] | None = None,
        skip_digest_for_named: bool = False,
        index_name: str = "",
        platform: platforms.Matcher | None = None,
        all_platforms: bool = False,
        compress_blobs: bool = False,
    ) -> list[ImageRecord]:
        """Import an OCI layout or ``docker save`` tar; the image records made or updated."""
        from pycontainerd.client._async import transfer

        return await transfer.import_archive(
            self,
            stream,
            ref_translator=ref_translator,
            digest_ref=digest_ref,
            skip_digest_for_named=skip_digest_for_named,
            index_name=index_name,
            platform=platform,
            all_platforms=all_platforms,
            compress_blobs=compress_blobs,
        )

    async def export(
        self,
        out: BinaryIO,
        *names: str,
        platforms: Sequence[platforms.Platform] = (),
        all_platforms: bool = False,
        skip_manifest_json: bool = False,
        skip_non_distributable: bool = False,
    ) -> None:
        """Write images to ``out`` as an OCI layout tar with Docker's manifest.json."""
        from pycontainerd.client._async import transfer

        await transfer.export(
            self,
            out,
            names,
            platforms=platforms,
            all_platforms=all_platforms,
            skip_manifest_json=skip_manifest_json,
            skip_non_distributable=skip_non_distributable,
        )

    async def import_rootfs(
        self,
        source: str | Path,
        name: str,
        *,
        platform: platforms.Platform | None = None,
        cmd: Sequence[str] = (),
        entrypoint: Sequence[str] = (),
        env: Sequence[str] = (),
        workdir: str = "",
    ) -> ImageRecord:
        """Build a one-layer image from a directory or tar and name it ``name``."""
        from pycontainerd.client._async import transfer

        return await transfer.import_rootfs(
            self,
            source,
            name,
            platform=platform,
            cmd=cmd,
            entrypoint=entrypoint,
            env=env,
            workdir=workdir,
        )

    # --- registries -----------------------------------------------------------------

    async def pull(
        self,
        ref: str,
        *,
        unpack: bool = True,
        snapshotter: str = "",
        platform: str | platforms.Platform | None = None,
        all_platforms: bool = False,
        all_metadata: bool = False,
        plain_http: bool = False,
        hosts_dir: str | Path | None = None,
        user: str | None = None,
        refresh_token: str | None = None,
        skip_verify: bool = False,
        ca_files: Sequence[str] = (),
        client_certs: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        http_dump: bool = False,
        http_trace: bool = False,
        labels: Mapping[str, str] | None = None,
        progress: ProgressFunc | None = None,
        max_concurrent_downloads: int = 3,
    ) -> AsyncImage:
        """Pull ``ref`` from its registry (containerd's ``Pull``): the best manifest
        for ``platform`` (default: the host's; all with ``all_platforms``), its
        config and layers (and every other entry's manifest and config with
        ``all_metadata``), fetched concurrently into content under a lease,
        each layer unpacked into ``snapshotter`` as soon as it and its parent
        are in (``unpack``); then the image record.  ``user`` is
        ``"name:password"``; without it, ``refresh_token`` is an OAuth2 refresh
        token for the registry's token server; ``ca_files`` and
        ``client_certs`` (``(cert, key)`` files) are TLS settings for every
        registry host, before those of ``hosts_dir``; ``http_dump`` and
        ``http_trace`` log the HTTP heads and connections on the
        ``pycontainerd.remotes.http`` logger; ``progress`` gets every blob's
        state and bytes."""
        from pycontainerd.client._async.image import AsyncImage, apply_layer, resolve_snapshotter
        from pycontainerd.client._distribution import (
            AsyncDistribution,
            RemoteOptions,
            platform_matcher,
        )

        options = RemoteOptions(
            plain_http=plain_http,
            hosts_dir=hosts_dir,
            user=user,
            refresh_token=refresh_token,
            skip_verify=skip_verify,
            ca_files=ca_files,
            client_certs=client_certs,
            headers=headers,
            http_dump=http_dump,
            http_trace=http_trace,
            max_concurrent_downloads=max_concurrent_downloads,
        )
        record = await AsyncDistribution(self, apply_layer).pull(
            ref,
            unpack=unpack,
            snapshotter=await resolve_snapshotter(self, snapshotter) if unpack else "",
            platform=platform,
            all_platforms=all_platforms,
            all_metadata=all_metadata,
            labels=labels,
            progress=progress,
            options=options,
        )
        return AsyncImage(self, record, platform=platform_matcher(platform))

    async def fetch(
        self,
        ref: str,
        *,
        platform: str | platforms.Platform | None = None,
        all_platforms: bool = False,
        all_metadata: bool = False,
        metadata_only: bool = False,
        plain_http: bool = False,
        hosts_dir: str | Path | None = None,
        user: str | None = None,
        refresh_token: str | None = None,
        skip_verify: bool = False,
        ca_files: Sequence[str] = (),
        client_certs: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        http_dump: bool = False,
        http_trace: bool = False,
        labels: Mapping[str, str] | None = None,
        progress: ProgressFunc | None = None,
        max_concurrent_downloads: int = 3,
    ) -> ImageRecord:
        """Fetch ``ref``'s content without unpacking (containerd's ``Fetch``):
        every manifest matching ``platform`` (default: the host's; every
        other one's manifest and config too with ``all_metadata``; those
        alone, no layers, with ``metadata_only``), and the image record,
        which is created or updated."""
        from pycontainerd.client._async.image import apply_layer
        from pycontainerd.client._distribution import AsyncDistribution, RemoteOptions

        options = RemoteOptions(
            plain_http=plain_http,
            hosts_dir=hosts_dir,
            user=user,
            refresh_token=refresh_token,
            skip_verify=skip_verify,
            ca_files=ca_files,
            client_certs=client_certs,
            headers=headers,
            http_dump=http_dump,
            http_trace=http_trace,
            max_concurrent_downloads=max_concurrent_downloads,
        )
        return await AsyncDistribution(self, apply_layer).pull(
            ref,
            unpack=False,
            platform=platform,
            all_platforms=all_platforms,
            all_metadata=all_metadata,
            metadata_only=metadata_only,
            labels=labels,
            progress=progress,
            options=options,
            limit=0,
        )

    async def push(
        self,
        ref: str,
        image: str | ImageRecord | AsyncImage,
        *,
        platform: str | platforms.Platform | None = None,
        plain_http: bool = False,
        hosts_dir: str | Path | None = None,
        user: str | None = None,
        refresh_token: str | None = None,
        skip_verify: bool = False,
        ca_files: Sequence[str] = (),
        client_certs: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        http_dump: bool = False,
        http_trace: bool = False,
        progress: PushProgressFunc | None = None,
        max_concurrent_uploads: int = 3,
    ) -> None:
        """Push ``image`` (a name or an image) to ``ref`` (containerd's ``Push``):
        layers and config first, blobs the registry has skipped, blobs known
        to come from another repository of that registry mounted, then the
        manifests and the root under ``ref``'s tag.  ``platform`` limits an
        index to that platform's manifests."""
        from pycontainerd.client._async.image import apply_layer
        from pycontainerd.client._distribution import AsyncDistribution, RemoteOptions

        if isinstance(image, str):
            image = await self.images.get(image)
        options = RemoteOptions(
            plain_http=plain_http,
            hosts_dir=hosts_dir,
            user=user,
            refresh_token=refresh_token,
            skip_verify=skip_verify,
            ca_files=ca_files,
            client_certs=client_certs,
            headers=headers,
            http_dump=http_dump,
            http_trace=http_trace,
            max_concurrent_uploads=max_concurrent_uploads,
        )
        await AsyncDistribution(self, apply_layer).push(
            ref, image.target, platform=platform, progress=progress, options=options
        )

    def lease(
        self,
        id: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        expiration: dt.timedelta | None = lease_context.DEFAULT_EXPIRATION,
        sync: bool = False,
    ) -> AsyncLeaseScope:
        """``async with client.lease() as lease:`` -- requests in the block carry
        the lease; it expires after ``expiration`` (None: never) and is deleted
        when the block ends."""
        from pycontainerd.client._async.leases import AsyncLeaseScope

        return AsyncLeaseScope(self.leases, id, labels, expiration, sync)

    def snapshot_service(self, name: str = "overlayfs") -> AsyncSnapshotService:
        """The snapshotter ``name`` of the daemon, as a ``Snapshotter`` in this
        client's namespace (requests carry the context's lease)."""
        from pycontainerd.client._async.snapshots import AsyncSnapshotService

        return AsyncSnapshotService(self._call, name)

    async def plugins(self, *filters: str) -> list[PluginInfo]:
        from pycontainerd.wire import introspection as introspection_wire

        req = introspection_pb2.PluginsRequest(filters=list(filters))
        resp = await self._call.unary(self._introspection.Plugins, req)
        return [introspection_wire.from_pb(p) for p in resp.plugins]
