"""The client, written async (``AsyncClient``); its sync twin is generated.

This file is the source of truth for both clients: ``tools/unasync.py``
turns it into ``client/_sync/client.py`` (``Client``) by dropping
``async``/``await`` and swapping ``grpc.aio`` for ``grpc``.  Keep to code
that survives that rewrite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import empty_pb2, field_mask_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pycontainerd import errdefs, leases, namespaces, typeurl
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from pycontainerd.client._async import transfer
from pycontainerd.client._async.containers import (
    AnyContainerOpt,
    AsyncContainer,
    AsyncContainers,
    has_client_opts,
)
from pycontainerd.client._async.containers import build as build_container
from pycontainerd.client._async.content import AsyncContent
from pycontainerd.client._async.diff import AsyncDiff
from pycontainerd.client._async.image import AsyncImage
from pycontainerd.client._async.images import AsyncImages
from pycontainerd.client._async.leases import AsyncLeases, AsyncLeaseScope
from pycontainerd.client._async.snapshots import AsyncSnapshotService
from pycontainerd.client._shared import (
    DEFAULT_ADDRESS,
    ServerInfo,
    Version,
    channel_target,
    metadata_for,
)
from pycontainerd.events.exchange import Envelope
from pycontainerd.wire import events as events_wire
from pycontainerd.wire import introspection as introspection_wire
from pycontainerd.wire.introspection import PluginInfo
from pycontainerd.wire.namespaces import NamespaceInfo, from_pb

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import IO, BinaryIO

    from pycontainerd import platforms
    from pycontainerd.images import Image as ImageRecord
    from pycontainerd.images.archive_import import RefTranslator

__all__ = ["AsyncClient"]


@dataclass(slots=True)
class _Call:
    """Where a namespaced call goes: channel, default namespace, timeout."""

    channel: grpc.aio.Channel
    namespace: str
    timeout: float | None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return metadata_for(namespaces.current() or self.namespace)

    async def unary(self, method: Any, request: Message) -> Any:
        """Make one unary call, turning a failed status into our error class."""
        try:
            return await method(request, metadata=self.metadata(), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc


class AsyncNamespaces:
    """``client.namespaces``: create, get, list, update labels, delete."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._stub = namespace_pb2_grpc.NamespacesStub(call.channel)

    async def create(self, name: str, labels: Mapping[str, str] | None = None) -> NamespaceInfo:
        req = namespace_pb2.CreateNamespaceRequest(
            namespace=namespace_pb2.Namespace(name=name, labels=dict(labels or {}))
        )
        resp = await self._call.unary(self._stub.Create, req)
        return from_pb(resp.namespace)

    async def get(self, name: str) -> NamespaceInfo:
        req = namespace_pb2.GetNamespaceRequest(name=name)
        resp = await self._call.unary(self._stub.Get, req)
        return from_pb(resp.namespace)

    async def list(self, filter: str = "") -> list[NamespaceInfo]:
        req = namespace_pb2.ListNamespacesRequest(filter=filter)
        resp = await self._call.unary(self._stub.List, req)
        return [from_pb(ns) for ns in resp.namespaces]

    async def set_labels(self, name: str, labels: Mapping[str, str]) -> NamespaceInfo:
        """Set (value) or remove (empty value) the given labels, keeping the rest."""
        req = namespace_pb2.UpdateNamespaceRequest(
            namespace=namespace_pb2.Namespace(
                name=name, labels={k: v for k, v in labels.items() if v}
            ),
            update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels]),
        )
        resp = await self._call.unary(self._stub.Update, req)
        return from_pb(resp.namespace)

    async def delete(self, name: str) -> None:
        req = namespace_pb2.DeleteNamespaceRequest(name=name)
        await self._call.unary(self._stub.Delete, req)


class AsyncEvents:
    """``client.events``: publish and subscribe."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._stub = events_pb2_grpc.EventsStub(call.channel)

    async def publish(self, topic: str, event: Message) -> None:
        req = events_pb2.PublishRequest(topic=topic, event=typeurl.marshal_any(event))
        await self._call.unary(self._stub.Publish, req)

    async def forward(self, envelope: Envelope) -> None:
        req = events_pb2.ForwardRequest(envelope=events_wire.to_pb(envelope))
        await self._call.unary(self._stub.Forward, req)

    async def subscribe(self, *filters: str) -> AsyncIterator[Envelope]:
        """Envelopes matching any of ``filters`` until the caller stops iterating."""
        call = self._stub.Subscribe(
            events_pb2.SubscribeRequest(filters=list(filters)), metadata=self._call.metadata()
        )
        try:
            async for msg in call:
                yield events_wire.from_pb(msg)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise errdefs.from_grpc(exc) from exc
        finally:
            call.cancel()


class AsyncClient:
    """A connection to a containerd-compatible daemon (ours or containerd)."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        namespace: str = namespaces.DEFAULT,
        *,
        timeout: float | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.address = address
        self.namespace = namespace
        self._channel = grpc.aio.insecure_channel(
            channel_target(address),
            options=[
                ("grpc.max_receive_message_length", 16 << 20),
                ("grpc.max_send_message_length", 16 << 20),
                ("grpc.default_authority", "localhost"),
                *options,
            ],
        )
        call = _Call(self._channel, namespace, timeout)
        self._call = call
        self.namespaces = AsyncNamespaces(call)
        self.events = AsyncEvents(call)
        self.containers = AsyncContainers(call)
        self.images = AsyncImages(call)
        self.leases = AsyncLeases(call)
        self.content = AsyncContent(call)
        self.diff = AsyncDiff(call)
        self._version = version_pb2_grpc.VersionStub(self._channel)
        self._introspection = introspection_pb2_grpc.IntrospectionStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncClient:
        """Address and namespace from CONTAINERD_ADDRESS / CONTAINERD_NAMESPACE."""
        return cls(
            os.environ.get("CONTAINERD_ADDRESS") or DEFAULT_ADDRESS,
            os.environ.get("CONTAINERD_NAMESPACE") or namespaces.DEFAULT,
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
        # Snapshots the options create are held by a lease until the record
        # holds them, as containerd's NewContainer does.
        needs_lease = has_client_opts(opts) and leases.current() is None
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
        return AsyncContainer(self, await self.containers.get(id))

    async def list_containers(self, *filters: str) -> list[AsyncContainer]:
        """Containers matching any of ``filters`` (``labels.app==web``...)."""
        return [AsyncContainer(self, r) for r in await self.containers.list(*filters)]

    # --- images -----------------------------------------------------------------

    async def get_image(
        self, name: str, *, platform: platforms.Matcher | None = None
    ) -> AsyncImage:
        """The image ``name`` (NotFound if none), for ``platform`` (default: the host's)."""
        return AsyncImage(self, await self.images.get(name), platform=platform)

    async def list_images(self, *filters: str) -> list[AsyncImage]:
        """Images matching any of ``filters`` (``name==...``, ``labels.k==v``...)."""
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

    def lease(
        self,
        id: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        expiration: dt.timedelta | None = leases.DEFAULT_EXPIRATION,
        sync: bool = False,
    ) -> AsyncLeaseScope:
        """``async with client.lease() as lease:`` -- requests in the block carry
        the lease; it expires after ``expiration`` (None: never) and is deleted
        when the block ends."""
        return AsyncLeaseScope(self.leases, id, labels, expiration, sync)

    def snapshot_service(self, name: str = "overlayfs") -> AsyncSnapshotService:
        """The snapshotter ``name`` of the daemon, as a ``Snapshotter`` in this
        client's namespace (requests carry the context's lease)."""
        return AsyncSnapshotService(self._call, name)

    async def plugins(self, *filters: str) -> list[PluginInfo]:
        req = introspection_pb2.PluginsRequest(filters=list(filters))
        resp = await self._call.unary(self._introspection.Plugins, req)
        return [introspection_wire.from_pb(p) for p in resp.plugins]
