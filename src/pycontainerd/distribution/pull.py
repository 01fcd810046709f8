"""Pulling an image from a registry into a content store: containerd's
``client.Pull``/``Fetch`` orchestration, usable by the client and the daemon.

The walk starts at the root descriptor a reference resolves to and follows
index → manifests (the platform's, or all) → config and layers, as
containerd's ``images.Dispatch`` with ``FetchHandler``, ``ChildrenHandler``,
``SetChildrenMappedLabels``, ``FilterPlatforms``/``LimitManifests`` and
``AppendDistributionSourceLabel``.  With ``all_metadata`` (ctr's
``--all-metadata``, containerd's ``FilterManifestByPlatformHandler``) an
index's every manifest is fetched, but one for another platform brings
only its config, not its layers, and gets no unpack job:

* every blob is fetched at most once, at most ``max_concurrent_downloads``
  at a time (containerd's default is 3); a blob the store already has is
  not fetched (``exists``); a partial ingest of a layer is resumed from its
  offset with a ranged request;
* each blob is written through ``writer(ref, total=size, expected=digest)``
  with containerd's ingest refs (``index-``, ``manifest-``, ``config-``,
  ``layer-``, ``unknown-`` + digest) and committed with its size and digest
  checked, carrying ``containerd.io/distribution.source.<host>=<repo>`` (the
  host without its port, as containerd writes it) and,
  on indexes and manifests, the ``containerd.io/gc.ref.content.*`` labels
  of its children, so a new blob needs no label update after its commit;
* a blob that fails (wrong bytes, a registry error, a connection that
  cannot be resumed, a manifest over the cap) raises a typed error; its
  ingest is aborted, nothing is committed for it, the other fetches are
  cancelled (their ingests aborted too) and no image record is written.

Two hooks let a caller work while bytes arrive:

* ``layer_sink(desc)`` is awaited before a layer's download starts from its
  first byte; the :class:`LayerSink` it returns gets every chunk as it is
  written to the store, then ``close()`` once the layer is verified and
  committed, or ``abort(error)`` when it fails.  The bytes are unverified
  until ``close()``.  A layer the store has, or resumes, gets no sink (its
  bytes are read from the store once :meth:`UnpackJob.fetched` says so).
* ``unpacker`` gets one :class:`UnpackJob` per manifest the pull keeps, as
  soon as its config is in, and runs while the layers still download: it
  awaits :meth:`UnpackJob.fetched` for each layer in order, so a layer is
  applied as soon as it and its parent are in.  The pull waits for every
  job; an unpack error fails the pull like a fetch error.

Bounds: manifests, indexes and configs are read into memory up to
:data:`~pycontainerd.images.manifest.MAX_MANIFEST_SIZE` each; layers
stream in the fetcher's chunks; at most :data:`MAX_BLOBS` descriptors are
visited per pull (a hostile index cannot make the walk unbounded); time is
bounded by the registry client's timeouts, and a ref another writer holds
is waited for at most 60 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pycontainerd import errdefs
from pycontainerd import platforms as pf
from pycontainerd import reference as references
from pycontainerd.content import Info, Provider, Writer, read_blob
from pycontainerd.images import Descriptor, Image
from pycontainerd.images import mediatypes as mt
from pycontainerd.images.manifest import (
    MAX_MANIFEST_SIZE,
    ImageConfig,
    filter_platforms,
    gc_labels,
    parse_config,
    parse_index,
    parse_manifest,
    sort_by_platform,
    verify_blob,
)
from pycontainerd.images.unpack import Layer, pair_layers

__all__ = [
    "DEFAULT_MAX_CONCURRENT_DOWNLOADS",
    "DISTRIBUTION_SOURCE_PREFIX",
    "MAX_BLOBS",
    "BlobState",
    "ContentStore",
    "Fetcher",
    "ImageStore",
    "LayerSink",
    "LayerSinkFactory",
    "Progress",
    "ProgressFunc",
    "Resolver",
    "UnpackJob",
    "Unpacker",
    "append_distribution_source",
    "distribution_source_label",
    "fetch",
    "hostname",
    "pull",
    "ref_key",
    "save_image",
]

log = logging.getLogger(__name__)

#: containerd's ``max_concurrent_downloads`` default.
DEFAULT_MAX_CONCURRENT_DOWNLOADS = 3
#: Most descriptors one pull visits (an index of indexes cannot grow it past this).
MAX_BLOBS = 10_000
#: Content label prefix naming the registry repositories a blob came from.
DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."

BlobState = Literal["waiting", "downloading", "done", "exists", "failed"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where one blob of a pull stands."""

    ref: str  #: the ingest ref, as ctr shows it (``layer-sha256:...``)
    descriptor: Descriptor
    state: BlobState
    offset: int = 0  #: bytes in the store so far
    total: int = 0
    error: str = ""


ProgressFunc = Callable[[Progress], None]


# -- what the pull works on ------------------------------------------------------


class ContentStore(Provider, Protocol):
    """The parts of a content store a pull uses (the local store, its metadata
    view in the daemon, or the client's content proxy through an adapter)."""

    async def info(self, digest: str) -> Info: ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info: ...

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> Writer: ...

    async def abort(self, ref: str) -> None: ...


class ImageStore(Protocol):
    """Image records, as the metadata store (and the images service) keep them."""

    async def create(self, image: Image) -> Image: ...

    async def update(self, image: Image, *fieldpaths: str) -> Image: ...


class Fetcher(Protocol):
    """:class:`pycontainerd.remotes.Fetcher`'s shape.

    A fetch from byte 0 checks the blob's size and digest and raises before
    the iterator ends when they do not match: a :class:`LayerSink` relies
    on it (only such fetches get one).
    """

    def fetch(self, desc: Any, *, offset: int = 0) -> AsyncIterator[bytes]: ...

    async def fetch_bytes(self, desc: Any, *, limit: int = ...) -> bytes: ...


class Resolver(Protocol):
    """:class:`pycontainerd.remotes.Resolver`'s shape."""

    async def resolve(self, ref: str) -> tuple[str, Any]: ...

    def fetcher(self, ref: str) -> Fetcher: ...


class LayerSink(Protocol):
    """Gets a layer's bytes as they arrive (see the module docstring)."""

    async def write(self, chunk: bytes) -> None: ...

    async def close(self) -> None:
        """Every byte was delivered, verified and committed."""
        ...

    async def abort(self, error: BaseException) -> None:
        """The download failed or was cancelled; discard what was written."""
        ...


LayerSinkFactory = Callable[[Descriptor], Awaitable[LayerSink | None]]


@dataclass(frozen=True, slots=True)
class UnpackJob:
    """One manifest to unpack while its layers download."""

    name: str
    manifest: Descriptor
    config: Descriptor
    image_config: ImageConfig
    layers: Sequence[Layer]
    _ready: Mapping[str, asyncio.Future[None]] = field(repr=False)

    async def fetched(self, index: int) -> None:
        """Wait until layer ``index`` is committed in the store (or was there);
        raises the error that failed its download."""
        await asyncio.shield(self._ready[self.layers[index].blob.digest])


class Unpacker(Protocol):
    async def unpack(self, job: UnpackJob) -> None: ...


# -- labels and refs --------------------------------------------------------------


def ref_key(desc: Descriptor) -> str:
    """The ingest ref containerd's fetch uses for ``desc`` (remotes.MakeRefKey)."""
    media_type = desc.media_type
    if media_type in (mt.DOCKER_MANIFEST, mt.OCI_MANIFEST):
        prefix = "manifest-"
    elif media_type in (mt.DOCKER_MANIFEST_LIST, mt.OCI_INDEX):
        prefix = "index-"
    elif mt.is_layer(media_type):
        prefix = "layer-"
    elif mt.is_config(media_type):
        prefix = "config-"
    else:
        prefix = "unknown-"
    return prefix + desc.digest


def distribution_source_label(ref: str) -> tuple[str, str]:
    """The label key and repository containerd records a blob pulled from ``ref`` under:
    (``containerd.io/distribution.source.<host>``, ``<repository path>``)."""
    parsed = references.parse_docker_ref(ref)
    return DISTRIBUTION_SOURCE_PREFIX + hostname(parsed.domain), parsed.path


def hostname(domain: str) -> str:
    """A reference's domain without its port (and an IPv6 address without
    brackets), as containerd keys distribution sources: ``127.0.0.1:5000``
    and ``127.0.0.1:5001`` share one label."""
    if domain.startswith("["):
        return domain[1:].partition("]")[0]
    host, sep, port = domain.rpartition(":")
    return host if sep and port.isdigit() else domain


def append_distribution_source(current: str, repository: str) -> str:
    """``current`` (a comma-separated list) with ``repository`` added: sorted, no duplicates."""
    repos = {r for r in current.split(",") if r} if current else set()
    repos.add(repository)
    return ",".join(sorted(repos))


# -- the walk ---------------------------------------------------------------------


class _Pull:
    """The state of one fetch: the blobs seen, the labels to set, the jobs."""

    def __init__(
        self,
        name: str,
        fetcher: Fetcher,
        store: ContentStore,
        *,
        matcher: pf.Matcher,
        limit: int,
        max_concurrent_downloads: int,
        progress: ProgressFunc | None,
        layer_sink: LayerSinkFactory | None,
        unpacker: Unpacker | None,
        all_metadata: bool = False,
    ) -> None:
        self.name = name
        self.fetcher = fetcher
        self.store = store
        self.matcher = matcher
        self.limit = limit
        self.semaphore = asyncio.Semaphore(max(1, max_concurrent_downloads))
        self.progress = progress
        self.layer_sink = layer_sink
        self.unpacker = unpacker
        self.source_key, self.source_repo = distribution_source_label(name)
        self.visited: dict[str, asyncio.Future[None]] = {}
        self.group: asyncio.TaskGroup | None = None
        self.manifests = 0
        self.all_metadata = all_metadata
        #: Manifests an index lists only for another platform (``all_metadata``).
        self.metadata_only: set[str] = set()

    def report(self, desc: Descriptor, state: BlobState, offset: int = 0, error: str = "") -> None:
        if self.progress is not None:
            self.progress(Progress(ref_key(desc), desc, state, offset, desc.size, error))

    def visit(self, desc: Descriptor) -> asyncio.Future[None]:
        """Schedule ``desc`` (once); the future completes when it is in the store."""
        existing = self.visited.get(desc.digest)
        if existing is not None:
            return existing
        if len(self.visited) >= MAX_BLOBS:
            raise errdefs.ResourceExhausted(f"{self.name}: more than {MAX_BLOBS} blobs to fetch")
        if desc.size < 0:
            raise errdefs.InvalidArgument(f"descriptor {desc.digest}: negative size")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A failure is re-raised by the task group; nobody else must see it unread.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.visited[desc.digest] = done
        self.report(desc, "waiting")
        assert self.group is not None
        self.group.create_task(self.handle(desc, done))
        return done

    async def handle(self, desc: Descriptor, done: asyncio.Future[None]) -> None:
        try:
            if _is_document(desc.media_type):
                await self.handle_document(desc, done)
            else:
                async with self.semaphore:
                    await self.fetch_blob(desc)
                done.set_result(None)
        except BaseException as exc:
            if not done.done():
                if isinstance(exc, asyncio.CancelledError):
                    done.cancel()
                else:
                    done.set_exception(exc)
            raise

    # -- manifests, indexes, configs: small, read whole

    async def handle_document(self, desc: Descriptor, done: asyncio.Future[None]) -> None:
        if desc.size > MAX_MANIFEST_SIZE:
            self.report(desc, "failed", error="over the size limit")
            raise errdefs.ResourceExhausted(
                f"{self.name}: {desc.media_type or 'blob'} {desc.digest} is {desc.size} bytes,"
                f" over the {MAX_MANIFEST_SIZE}-byte limit"
            )
        async with self.semaphore:
            info = await _info(self.store, desc.digest)
            if info is not None:
                data = verify_blob(desc, await read_blob(self.store, desc.digest))
                self.report(desc, "exists", desc.size)
            else:
                self.report(desc, "downloading")
                try:
                    data = await self.fetcher.fetch_bytes(desc, limit=MAX_MANIFEST_SIZE)
                except BaseException as exc:
                    self.report(desc, "failed", error=_message(exc))
                    raise
        all_children, kept = self.children(desc, data)
        labels = {self.source_key: self.source_repo}
        if all_children:
            labels.update(gc_labels(desc, all_children))
        if info is None:
            if await self.commit_small(desc, data, labels):
                self.report(desc, "done", desc.size)
            else:
                info = await self.store.info(desc.digest)
        if info is not None:
            await self.merge_labels(info, labels)
        # The document is in; its children are scheduled and awaited by the
        # task group, not by this future (an unpack job waits for layers).
        done.set_result(None)
        if mt.is_manifest(desc.media_type):
            manifest = parse_manifest(data, desc.media_type)
            if desc.digest in self.metadata_only:
                self.visit(manifest.config)
                return
            self.manifests += 1
            config_done = self.visit(manifest.config)
            ready = {layer.digest: self.visit(layer) for layer in manifest.layers}
            if self.unpacker is not None:
                await config_done
                await self.start_unpack(desc, manifest.config, manifest.layers, ready)
            return
        for child in kept:
            self.visit(child)

    def children(self, desc: Descriptor, data: bytes) -> tuple[list[Descriptor], list[Descriptor]]:
        """All children (labelled) and those the pull follows (platform, limit)."""
        if mt.is_manifest(desc.media_type):
            manifest = parse_manifest(data, desc.media_type)
            kids = [manifest.config, *manifest.layers]
            return kids, kids
        if mt.is_index(desc.media_type):
            kids = list(parse_index(data, desc.media_type).manifests)
            kept = filter_platforms(self.matcher, kids)
            if self.all_metadata:
                matched = {k.digest for k in kept}
                self.metadata_only.update(
                    k.digest
                    for k in kids
                    if mt.is_manifest(k.media_type) and k.digest not in matched
                )
                kept = kids
            if self.limit > 0:
                kept = sort_by_platform(self.matcher, kept)[: self.limit]
            return kids, kept
        return [], []

    async def commit_small(self, desc: Descriptor, data: bytes, labels: Mapping[str, str]) -> bool:
        """Write a verified document; False when the store had it already."""
        ref = ref_key(desc)
        try:
            writer = await _open_writer(self.store, ref, desc)
        except errdefs.AlreadyExists:
            return False
        try:
            offset = (await writer.status()).offset
            if offset > len(data):
                raise errdefs.FailedPrecondition(f"ingest {ref} holds more than {desc.size} bytes")
            if offset < len(data):
                await writer.write(data[offset:])
            await writer.commit(desc.size, desc.digest, labels=labels)
        except errdefs.AlreadyExists:
            return False
        except BaseException:
            await _discard(self.store, writer, ref)
            raise
        else:
            await writer.close()
        return True

    async def merge_labels(self, info: Info, labels: Mapping[str, str]) -> None:
        """Add ``labels`` to a blob that was already there (distribution
        sources are appended to, not replaced)."""
        wanted = dict(labels)
        current = info.labels.get(self.source_key, "")
        wanted[self.source_key] = append_distribution_source(current, self.source_repo)
        changed = {k: v for k, v in wanted.items() if info.labels.get(k) != v}
        if changed:
            update = Info(digest=info.digest, size=info.size, labels=changed)
            await self.store.update(update, [f"labels.{k}" for k in changed])

    # -- layers and other blobs: streamed, resumable

    async def fetch_blob(self, desc: Descriptor) -> None:
        info = await _info(self.store, desc.digest)
        if info is not None:
            await self.merge_labels(info, {})
            self.report(desc, "exists", desc.size)
            return
        ref = ref_key(desc)
        try:
            writer = await _open_writer(self.store, ref, desc)
        except errdefs.AlreadyExists:
            await self.merge_labels(await self.store.info(desc.digest), {})
            self.report(desc, "exists", desc.size)
            return
        labels = {self.source_key: self.source_repo}
        sink: LayerSink | None = None
        offset = 0
        try:
            offset = (await writer.status()).offset
            if offset > desc.size:
                # Not this blob: start over rather than fail on a stale ingest.
                await _discard(self.store, writer, ref)
                writer = await _open_writer(self.store, ref, desc)
                offset = 0
            self.report(desc, "downloading", offset)
            if offset == 0 and self.layer_sink is not None and mt.is_layer(desc.media_type):
                sink = await self.layer_sink(desc)
            if offset < desc.size:
                chunks = self.fetcher.fetch(desc, offset=offset)
                try:
                    async for chunk in chunks:
                        await writer.write(chunk)
                        offset += len(chunk)
                        if sink is not None:
                            await sink.write(chunk)
                        self.report(desc, "downloading", offset)
                finally:
                    if isinstance(chunks, AsyncGenerator):
                        await chunks.aclose()
            try:
                await writer.commit(desc.size, desc.digest, labels=labels)
            except errdefs.AlreadyExists:
                await self.merge_labels(await self.store.info(desc.digest), {})
        except BaseException as exc:
            self.report(desc, "failed", offset, error=_message(exc))
            await _discard(self.store, writer, ref)
            if sink is not None:
                await _quietly(sink.abort(exc))
            raise
        await writer.close()
        if sink is not None:
            await sink.close()
        self.report(desc, "done", desc.size)

    # -- unpack

    async def start_unpack(
        self,
        manifest: Descriptor,
        config: Descriptor,
        layers: Sequence[Descriptor],
        ready: Mapping[str, asyncio.Future[None]],
    ) -> None:
        assert self.unpacker is not None
        image_config = parse_config(verify_blob(config, await read_blob(self.store, config.digest)))
        job = UnpackJob(
            self.name,
            manifest,
            config,
            image_config,
            pair_layers(layers, image_config.diff_ids),
            ready,
        )
        await self.unpacker.unpack(job)


def _is_document(media_type: str) -> bool:
    return mt.is_manifest(media_type) or mt.is_index(media_type) or mt.is_config(media_type)


async def _info(store: ContentStore, digest: str) -> Info | None:
    try:
        return await store.info(digest)
    except errdefs.NotFound:
        return None


async def _open_writer(store: ContentStore, ref: str, desc: Descriptor) -> Writer:
    """A writer of ``ref``, waiting a while for another pull holding it (as
    containerd's OpenWriter); AlreadyExists when the blob got committed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60.0
    delay = 0.01
    while True:
        try:
            return await store.writer(ref, total=desc.size, expected=desc.digest)
        except errdefs.Unavailable:
            if loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def _discard(store: ContentStore, writer: Writer, ref: str) -> None:
    """Close ``writer`` and abort its ingest: nothing of a failed blob stays."""
    await _quietly(writer.close())
    await _quietly(store.abort(ref))


async def _quietly(aw: Awaitable[object]) -> None:
    try:
        await aw
    except errdefs.NotFound:
        pass
    except Exception as exc:  # cleanup after a failure must not hide it
        log.warning("cleanup after a failed fetch: %s", exc)


def _message(exc: BaseException) -> str:
    if isinstance(exc, errdefs.ContainerdError):
        return exc.message
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return str(exc) or type(exc).__name__


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that failed a pull, out of the task group's: the first that
    is not a cancellation (which the failure itself caused)."""
    pending: list[BaseException] = [group]
    cancelled: BaseException | None = None
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = list(exc.exceptions)
        elif isinstance(exc, asyncio.CancelledError):
            cancelled = cancelled or exc
        else:
            return exc
    return cancelled or group


async def fetch(
    resolver: Resolver,
    ref: str,
    store: ContentStore,
    *,
    platform: pf.Matcher | None = None,
    limit: int = 0,
    max_concurrent_downloads: int = DEFAULT_MAX_CONCURRENT_DOWNLOADS,
    progress: ProgressFunc | None = None,
    layer_sink: LayerSinkFactory | None = None,
    unpacker: Unpacker | None = None,
    labels: Mapping[str, str] | None = None,
    all_metadata: bool = False,
) -> Image:
    """Fetch everything ``ref`` needs into ``store``; the image record to save.

    ``platform`` picks index entries (default: every platform); ``limit``
    keeps only the best that many per index (0: all that match; containerd's
    ``Pull`` uses 1, ``Fetch`` 0); ``all_metadata`` also fetches the
    manifests and configs of the other entries (the module docstring says
    how).  Nothing is written to an image store.
    Run it under a lease: what it writes is otherwise fair game for GC.
    """
    matcher = platform or pf.any_platform()
    name, resolved = await resolver.resolve(ref)
    root = Descriptor(resolved.media_type, resolved.digest, resolved.size)
    pull = _Pull(
        name,
        resolver.fetcher(name),
        store,
        matcher=matcher,
        limit=limit,
        max_concurrent_downloads=max_concurrent_downloads,
        progress=progress,
        layer_sink=layer_sink,
        unpacker=unpacker,
        all_metadata=all_metadata,
    )
    try:
        async with asyncio.TaskGroup() as group:
            pull.group = group
            pull.visit(root)
    except BaseExceptionGroup as failed:
        raise _first_error(failed) from None
    # With all_metadata, as containerd, a platform no entry has fetches the
    # metadata alone (ctr's --metadata-only asks for that).
    if mt.is_index(root.media_type) and pull.manifests == 0 and not all_metadata:
        raise errdefs.NotFound(f"{name}: no match for platform in manifest {root.digest}")
    log.debug("fetched %s (%s): %d blobs", name, root.digest, len(pull.visited))
    return Image(name=name, target=root, labels=dict(labels or {}))


async def save_image(images: ImageStore, image: Image) -> Image:
    """Create the record, or point an existing one at the new target (containerd's
    ``createNewImage``: an update racing a delete creates it again)."""
    for _ in range(3):
        try:
            return await images.create(image)
        except errdefs.AlreadyExists:
            pass
        try:
            return await images.update(image)
        except errdefs.NotFound:
            continue
    raise errdefs.Aborted(f"image {errdefs.q(image.name)}: created and deleted concurrently")


async def pull(
    resolver: Resolver,
    ref: str,
    store: ContentStore,
    images: ImageStore,
    *,
    lease: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None,
    **options: Any,
) -> Image:
    """:func:`fetch` then :func:`save_image`, under ``lease()`` when given
    (the caller's own lease otherwise).  The record is written only when
    every blob (and every unpack job) succeeded."""
    scope = lease() if lease is not None else contextlib.nullcontext()
    async with scope:
        image = await fetch(resolver, ref, store, **options)
        return await save_image(images, image)
