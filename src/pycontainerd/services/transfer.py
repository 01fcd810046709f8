"""The local transfer service (containerd 1.7's ``io.containerd.transfer.v1``
``local``): the daemon pulls an image from a registry into its own stores,
or pushes one from them, while the client only watches progress.

A pull (``OCIRegistry`` → ``ImageStore``) runs :func:`pycontainerd.distribution
.pull.pull` on the daemon's namespaced content store under a lease of its
own (removed at the end, as containerd's ``withLease``; after a failure
with a garbage collection at once, so that nothing of it stays), writes the image
record through the images service (so ``/images/create`` is published),
and unpacks into each snapshotter the image store names while the layers
download: the first layer whose parent is already applied streams from the
network straight into the applier (:class:`StreamingUnpacker`); the others
are applied from the store as soon as they and their parent are in.  A push
(``ImageStore`` → ``OCIRegistry``) runs :func:`pycontainerd.distribution.push`.

Progress goes to the stream the client named (:mod:`pycontainerd.services
.streaming`) as ``containerd.types.transfer.Progress``: ``waiting``,
``downloading`` (at most every :data:`PROGRESS_INTERVAL` per blob),
``complete``, ``already exists``, then ``saved`` and sentences for the
whole, as containerd's.  Credentials: when the registry resolver names an
auth stream, the daemon asks on it once per transfer (an ``AuthRequest``
for the reference's host) and uses the answer for every host of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2

from pycontainerd import errdefs, leases, plugin, typeurl
from pycontainerd import platforms as pf
from pycontainerd import reference as references
from pycontainerd.api.types.transfer import imagestore_pb2, progress_pb2, registry_pb2
from pycontainerd.content import Info
from pycontainerd.diff.ordered import SERVICE_ID as DIFF_SERVICE
from pycontainerd.distribution import pull as pulling
from pycontainerd.distribution import push as pushing
from pycontainerd.images import Descriptor
from pycontainerd.images.identity import chain_ids
from pycontainerd.images.unpack import (
    DEFAULT_SNAPSHOTTER,
    LABEL_UNCOMPRESSED,
    Layer,
    gc_snapshot_label,
    unpack_key,
)
from pycontainerd.metadata import Metadata
from pycontainerd.mount import Mount
from pycontainerd.remotes import Resolver, static_credentials
from pycontainerd.services._stream_unpack import Placement, StreamSink
from pycontainerd.services.images import ImagesService
from pycontainerd.services.leases import LeasesService
from pycontainerd.services.snapshots import SnapshotsService
from pycontainerd.services.streaming import Stream, StreamManager
from pycontainerd.snapshots import LABEL_UNPACKED_REF

__all__ = ["PROGRESS_INTERVAL", "TransferConfig", "TransferService"]

log = logging.getLogger(__name__)

ID = "local"
#: The least time between two ``downloading`` reports of one blob.
PROGRESS_INTERVAL = 0.1
#: How long the daemon waits for a client to answer a credentials request.
AUTH_TIMEOUT = 30.0
#: Tries at a fresh extraction key when one is taken (a concurrent unpack).
_KEY_ATTEMPTS = 3

_STATE_EVENTS = {
    "waiting": "waiting",
    "downloading": "downloading",
    "uploading": "uploading",
    "done": "complete",
    "exists": "already exists",
    "mounted": "mounted",
    "failed": "failed",
}


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """``[plugins."io.containerd.transfer.v1.local"]``."""

    max_concurrent_downloads: int = pulling.DEFAULT_MAX_CONCURRENT_DOWNLOADS


def _unpack(message: any_pb2.Any, what: str) -> Any:
    for cls in (registry_pb2.OCIRegistry, imagestore_pb2.ImageStore):
        if typeurl.is_a(message, cls):
            return cls.FromString(message.value)
    raise errdefs.NotImplemented(f"transfer {what} of type {message.type_url!r} is not supported")


def _platform(p: Any) -> pf.Platform:
    return pf.normalize(pf.Platform(p.os, p.architecture, p.variant))


class _Progress:
    """Progress messages onto the client's stream, ``downloading`` throttled."""

    def __init__(self, stream: Stream | None, root: str) -> None:
        self._stream = stream
        self._root = root
        self._last: dict[str, float] = {}

    def event(self, event: str, name: str = "", progress: int = 0, total: int = 0) -> None:
        if self._stream is None:
            return
        message = progress_pb2.Progress(event=event, name=name, progress=progress, total=total)
        if name and name != self._root:
            message.parents.append(self._root)
        self._stream.offer(typeurl.marshal_any(message))

    def blob(self, p: pulling.Progress | pushing.PushProgress) -> None:
        if p.state in ("downloading", "uploading"):
            now = time.monotonic()
            if now - self._last.get(p.ref, 0.0) < PROGRESS_INTERVAL:
                return
            self._last[p.ref] = now
        self.event(_STATE_EVENTS.get(p.state, p.state), p.ref, p.offset, p.total)


class _Snapshots:
    """One snapshotter of the snapshots service, as an unpack uses it."""

    def __init__(self, service: SnapshotsService, snapshotter: str) -> None:
        self._service = service
        self.name = snapshotter

    async def exists(self, key: str) -> bool:
        try:
            await self._service.stat(self.name, key)
        except errdefs.NotFound:
            return False
        return True

    async def prepare(self, key: str, parent: str, labels: Mapping[str, str]) -> list[Mount]:
        return await self._service.prepare(self.name, key, parent, labels)

    async def commit(self, name: str, key: str, labels: Mapping[str, str]) -> None:
        await self._service.commit(self.name, name, key, labels)

    async def remove_quietly(self, key: str) -> None:
        try:
            await self._service.remove(self.name, key)
        except errdefs.ContainerdError as exc:
            log.warning("extraction snapshot %r removal failed: %s", key, exc)


class Unpacker:
    """Applies each kept manifest's layers into the snapshotters asked for,
    in order, each as soon as it and its parent are in (a pull's ``unpacker``),
    and streams a layer into the first snapshotter while it downloads when
    its parent is already there (a pull's ``layer_sink``)."""

    def __init__(
        self,
        service: TransferService,
        targets: Sequence[tuple[pf.Matcher, str]],
    ) -> None:
        self._service = service
        self._targets = targets
        self.unpacked: list[tuple[str, str]] = []
        #: Layer digest -> (job, index, snapshotter) once a job names it.
        self._positions: dict[str, asyncio.Future[tuple[pulling.UnpackJob, int, str] | None]] = {}
        self._sinks: dict[str, StreamSink] = {}

    def _position(self, digest: str) -> asyncio.Future[tuple[pulling.UnpackJob, int, str] | None]:
        future = self._positions.get(digest)
        if future is None:
            future = self._positions[digest] = asyncio.get_running_loop().create_future()
        return future

    async def unpack(self, job: pulling.UnpackJob) -> None:
        config = job.image_config.platform
        platform = job.manifest.platform or pf.normalize(
            pf.Platform(config.os, config.architecture)
        )
        snapshotters = [name for matcher, name in self._targets if matcher.match(platform)]
        for index, layer in enumerate(job.layers):
            position = self._position(layer.blob.digest)
            if not position.done():
                position.set_result((job, index, snapshotters[0]) if snapshotters else None)
        for snapshotter in snapshotters:
            await self._unpack_into(job, snapshotter)

    async def _unpack_into(self, job: pulling.UnpackJob, snapshotter: str) -> None:
        sn = _Snapshots(self._service.snapshots, snapshotter)
        chain = chain_ids(job.image_config.diff_ids)
        store = self._service.content
        for i, layer in enumerate(job.layers):
            await job.fetched(i)
            sink = self._sinks.get(layer.blob.digest)
            if sink is not None and sink.streaming and sink.snapshotter == snapshotter:
                applied = await sink.result
            else:
                parent = chain[i - 1] if i else ""
                applied = await self._service.apply_layer(sn, layer, chain[i], parent)
            if applied:
                # Only now has the apply verified the uncompressed digest.
                await _set_labels(store, layer.blob.digest, {LABEL_UNCOMPRESSED: layer.diff_id})
        if chain:
            await _set_labels(store, job.config.digest, {gc_snapshot_label(snapshotter): chain[-1]})
        self.unpacked.append((job.manifest.digest, snapshotter))

    # --- streaming ------------------------------------------------------------------------

    async def layer_sink(self, desc: Descriptor) -> StreamSink:
        sink = StreamSink(desc, lambda: self._place(desc))
        self._sinks.setdefault(desc.digest, sink)
        return sink

    async def _place(self, desc: Descriptor) -> Placement | None:
        where = await asyncio.shield(self._position(desc.digest))
        if where is None or self._sinks.get(desc.digest) is None:
            return None
        job, index, snapshotter = where
        sn = _Snapshots(self._service.snapshots, snapshotter)
        chain = chain_ids(job.image_config.diff_ids)
        parent = chain[index - 1] if index else ""
        if await sn.exists(chain[index]) or (parent and not await sn.exists(parent)):
            return None
        self._sinks[desc.digest].snapshotter = snapshotter
        labels = {LABEL_UNPACKED_REF: chain[index]}

        async def prepare() -> tuple[str, list[Mount]]:
            return await _prepare(sn, chain[index], parent, labels)

        async def commit(key: str) -> bool:
            try:
                await sn.commit(chain[index], key, labels)
            except errdefs.AlreadyExists:
                await sn.remove_quietly(key)
                return False
            return True

        return Placement(
            chain[index], job.layers[index].diff_id, prepare, commit, sn.remove_quietly
        )


async def _prepare(
    sn: _Snapshots, chain: str, parent: str, labels: Mapping[str, str]
) -> tuple[str, list[Mount]]:
    """A fresh extraction snapshot for ``chain`` on ``parent``: its key and mounts."""
    key = unpack_key(chain)
    for attempt in range(_KEY_ATTEMPTS):
        try:
            return key, await sn.prepare(key, parent, labels)
        except errdefs.AlreadyExists:
            if attempt == _KEY_ATTEMPTS - 1:
                raise
            key = unpack_key(chain)
    raise AssertionError("unreachable")


async def _set_labels(store: Any, digest: str, labels: Mapping[str, str]) -> None:
    info = await store.info(digest)
    await store.update(
        Info(digest=info.digest, size=info.size, labels=dict(labels)),
        [f"labels.{k}" for k in labels],
    )


class TransferService:
    def __init__(
        self,
        metadata: Metadata,
        images: ImagesService,
        snapshots: SnapshotsService,
        differ: Any,
        leases_service: LeasesService,
        streams: StreamManager,
        config: TransferConfig,
    ) -> None:
        assert metadata.content is not None
        self.content = metadata.content
        self.images = images
        self.snapshots = snapshots
        self.differ = differ
        self.leases = leases_service
        self.streams = streams
        self.config = config

    async def transfer(
        self, source: any_pb2.Any, destination: any_pb2.Any, progress_stream: str = ""
    ) -> None:
        src = _unpack(source, "source")
        dst = _unpack(destination, "destination")
        stream = self.streams.get(progress_stream) if progress_stream else None
        if isinstance(src, registry_pb2.OCIRegistry) and isinstance(dst, imagestore_pb2.ImageStore):
            await self._pull(src, dst, stream)
        elif isinstance(src, imagestore_pb2.ImageStore) and isinstance(
            dst, registry_pb2.OCIRegistry
        ):
            await self._push(src, dst, stream)
        else:
            raise errdefs.NotImplemented(
                f"unable to transfer from {type(src).__name__} to {type(dst).__name__}"
            )

    # --- registry access ------------------------------------------------------------------

    async def _resolver(self, registry: registry_pb2.OCIRegistry) -> Resolver:
        if not registry.reference:
            raise errdefs.InvalidArgument("registry reference is required")
        options = registry.resolver
        credentials = None
        if options.auth_stream:
            credentials = await self._ask_credentials(options.auth_stream, registry.reference)
        return Resolver(
            hosts_dir=options.host_dir or None,
            plain_http=options.default_scheme == "http",
            credentials=credentials,
            headers=dict(options.headers),
            # Into the daemon's own log, on the pycontainerd.remotes.http logger.
            http_dump=options.http_debug,
            http_trace=options.http_trace,
        )

    async def _ask_credentials(self, stream_id: str, ref: str) -> Callable[[str], Any] | None:
        stream = self.streams.get(stream_id)
        parsed = references.parse_docker_ref(ref)
        await stream.send(
            typeurl.marshal_any(registry_pb2.AuthRequest(host=parsed.domain, reference=ref))
        )
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                answer = await stream.recv()
        except TimeoutError:
            raise errdefs.DeadlineExceeded(
                f"no credentials for {parsed.domain} in {AUTH_TIMEOUT:.0f}s"
            ) from None
        if not typeurl.is_a(answer, registry_pb2.AuthResponse):
            raise errdefs.InvalidArgument(f"expected an AuthResponse, got {answer.type_url!r}")
        auth = registry_pb2.AuthResponse.FromString(answer.value)
        if auth.authType == registry_pb2.CREDENTIALS:
            return static_credentials(auth.username, auth.secret)
        if auth.authType == registry_pb2.REFRESH:
            # No username: the token server gets the secret as a refresh token.
            return static_credentials("", auth.secret)
        if auth.authType == registry_pb2.NONE:
            return None
        raise errdefs.NotImplemented(f"auth type {registry_pb2.AuthType.Name(auth.authType)}")

    # --- pull -----------------------------------------------------------------------------

    async def _pull(
        self,
        source: registry_pb2.OCIRegistry,
        store: imagestore_pb2.ImageStore,
        stream: Stream | None,
    ) -> None:
        progress = _Progress(stream, source.reference)
        resolver = await self._resolver(source)
        targets = [
            (
                pf.only(_platform(u.platform)) if u.HasField("platform") else pf.default_strict(),
                u.snapshotter or DEFAULT_SNAPSHOTTER,
            )
            for u in store.unpacks
        ]
        if store.platforms:
            matcher = pf.ordered(*(_platform(p) for p in store.platforms))
            limit = store.manifest_limit
        elif targets:
            matcher, limit = targets[0][0], 1
        else:
            matcher, limit = pf.default_strict(), 1
        unpacker = Unpacker(self, targets) if targets else None
        progress.event(f"Resolving from {source.reference}")
        async with resolver, self._lease():
            image = await pulling.fetch(
                resolver,
                source.reference,
                self.content,
                platform=matcher,
                limit=limit,
                max_concurrent_downloads=self.config.max_concurrent_downloads,
                progress=progress.blob,
                unpacker=unpacker,
                layer_sink=unpacker.layer_sink if unpacker is not None else None,
                labels=dict(store.labels),
                all_metadata=store.all_metadata,
            )
            if store.name:
                image = type(image)(name=store.name, target=image.target, labels=image.labels)
            saved = await pulling.save_image(self.images, image)
        progress.event("saved", saved.name)
        progress.event(f"Completed pull from {source.reference}")

    @contextlib.asynccontextmanager
    async def _lease(self) -> Any:
        """A lease for the transfer's content and snapshots, removed at the
        end (the image record and the config's gc labels hold them then)."""
        lease = await self.leases.create(
            "", {leases.EXPIRE_LABEL: leases.expire_label(leases.DEFAULT_EXPIRATION)}
        )
        failed = True
        try:
            with leases.lease(lease.id):
                yield lease
            failed = False
        finally:
            try:
                # A failed transfer's blobs (manifests, configs fetched before
                # the failure) are collected at once: it leaves nothing behind.
                await self.leases.delete(lease.id, sync=failed)
            except errdefs.ContainerdError as exc:
                log.warning("removing transfer lease %s: %s", lease.id, exc)

    async def apply_layer(self, sn: _Snapshots, layer: Layer, chain: str, parent: str) -> bool:
        """Apply ``layer`` on ``parent`` into a snapshot committed as ``chain``;
        False if that snapshot exists (from this or another unpack)."""
        if await sn.exists(chain):
            return False
        labels = {LABEL_UNPACKED_REF: chain}
        key, mounts = await _prepare(sn, chain, parent, labels)
        try:
            try:
                diff = await self.differ.apply(layer.blob, mounts)
            except errdefs.ContainerdError as exc:
                raise type(exc)(f"failed to extract layer {layer.diff_id}: {exc.message}") from exc
            if diff.digest != layer.diff_id:
                raise errdefs.FailedPrecondition(
                    f"wrong diff id calculated on extraction {diff.digest!r} "
                    f"(the image config says {layer.diff_id!r})"
                )
            await sn.commit(chain, key, labels)
        except errdefs.AlreadyExists:
            await sn.remove_quietly(key)
            return False
        except BaseException:
            await sn.remove_quietly(key)
            raise
        return True

    # --- push -----------------------------------------------------------------------------

    async def _push(
        self,
        store: imagestore_pb2.ImageStore,
        target: registry_pb2.OCIRegistry,
        stream: Stream | None,
    ) -> None:
        progress = _Progress(stream, target.reference)
        name = store.name or target.reference
        image = self.images.get(name)
        resolver = await self._resolver(target)
        matcher = (
            pf.ordered(*(_platform(p) for p in store.platforms))
            if store.platforms
            else pf.any_platform()
        )
        progress.event(f"Pushing to {target.reference}")
        async with resolver:
            await pushing.push(
                resolver.pusher(target.reference),
                target.reference,
                self.content,
                image.target,
                platform=matcher,
                progress=progress.blob,
            )
        progress.event(f"Completed push to {target.reference}")


def _init(ctx: plugin.InitContext) -> TransferService:
    metadata: Metadata = ctx.get(plugin.PluginType.METADATA)
    if metadata.content is None:
        raise plugin.SkipPlugin("metadata has no content store")
    services = ctx.plugins
    return TransferService(
        metadata,
        services.get_by_id(plugin.PluginType.SERVICE, "images-service"),
        services.get_by_id(plugin.PluginType.SERVICE, "snapshots-service"),
        services.get_by_id(plugin.PluginType.SERVICE, DIFF_SERVICE),
        services.get_by_id(plugin.PluginType.SERVICE, "leases-service"),
        services.get_by_id(plugin.PluginType.STREAMING, "manager"),
        ctx.config,
    )


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.TRANSFER,
        id=ID,
        init=_init,
        requires=(
            plugin.PluginType.METADATA,
            plugin.PluginType.SERVICE,
            plugin.PluginType.DIFF,
            plugin.PluginType.STREAMING,
        ),
        config=TransferConfig,
    )
)
