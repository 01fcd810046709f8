"""Client-side pull, fetch and push: :mod:`pycontainerd.distribution` over the
client's content, images, snapshots and diff services.

This is how containerd 1.6 clients pull (and how Debian's ``ctr images
pull`` does against our daemon): the client talks to the registry, writes
each blob through the content service's Write stream and the record
through the images service, and unpacks layer after layer through
snapshots and diff, each layer as soon as it and its parent are in.

The registry client is asyncio, so the orchestration is too.  The async
client runs it in its own loop (:class:`AsyncDistribution`); the sync
client (:class:`Distribution`, what ``tools/unasync.py`` makes of the
async client's calls) runs it in a private event loop on a worker thread
and calls its blocking services from there through ``asyncio.to_thread``:
the same code, one adapter per face.  The context (namespace, lease) is
carried into that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pycontainerd import errdefs, leases
from pycontainerd import platforms as pf
from pycontainerd.content import Info, Status
from pycontainerd.distribution import pull as pulling
from pycontainerd.distribution import push as pushing
from pycontainerd.images import Descriptor, Image
from pycontainerd.images.identity import chain_ids
from pycontainerd.images.unpack import LABEL_UNCOMPRESSED, gc_snapshot_label
from pycontainerd.remotes import Resolver, static_credentials

__all__ = [
    "AsyncDistribution",
    "Distribution",
    "RemoteOptions",
    "platform_matcher",
    "user_and_secret",
]

log = logging.getLogger("pycontainerd.client")

T = TypeVar("T")
#: Calls one service method: awaited directly (async client) or in a thread (sync).
Run = Callable[..., Awaitable[Any]]


async def _direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await fn(*args, **kwargs)


async def _threaded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


def user_and_secret(user: str | None, refresh_token: str | None) -> tuple[str, str] | None:
    """The (username, secret) of ctr's ``--user user[:password]`` or, with no
    user, ``--refresh``: a secret with no username, which the token server
    gets as a refresh-token grant.  None for neither."""
    if user is not None:
        username, _, secret = user.partition(":")
        return username, secret
    if refresh_token:
        return "", refresh_token
    return None


@dataclass(frozen=True, slots=True)
class RemoteOptions:
    """How to reach the registry (ctr's ``--plain-http``, ``--user``, ``--refresh``,
    ``--hosts-dir``, ``--skip-verify``, ``--tlscacert``, ``--tlscert`` and
    ``--tlskey``) and how hard to pull (``--max-concurrent-downloads``)."""

    plain_http: bool = False
    hosts_dir: str | Path | None = None
    user: str | None = None  # "user:password" (a bare user has an empty password)
    #: An OAuth2 refresh (identity) token for the token server, used when
    #: no ``user`` is given (as ctr's ``--refresh``).
    refresh_token: str | None = None
    skip_verify: bool = False
    ca_files: Sequence[str] = ()
    client_certs: Sequence[tuple[str, str]] = ()  # (certificate, key) files
    headers: Mapping[str, str] | None = None
    #: Log every request's and response's head, and each connection's life.
    http_dump: bool = False
    http_trace: bool = False
    max_concurrent_downloads: int = pulling.DEFAULT_MAX_CONCURRENT_DOWNLOADS
    max_concurrent_uploads: int = pushing.DEFAULT_MAX_CONCURRENT_UPLOADS

    def resolver(self) -> Resolver:
        pair = user_and_secret(self.user, self.refresh_token)
        credentials = static_credentials(*pair) if pair is not None else None
        return Resolver(
            hosts_dir=self.hosts_dir,
            plain_http=self.plain_http,
            skip_verify=self.skip_verify,
            ca_files=self.ca_files,
            client_certs=self.client_certs,
            credentials=credentials,
            headers=self.headers,
            http_dump=self.http_dump,
            http_trace=self.http_trace,
        )


# -- the client's services as the distribution protocols ---------------------------


class _Writer:
    def __init__(self, writer: Any, run: Run) -> None:
        self._writer = writer
        self._run = run

    @property
    def ref(self) -> str:
        return str(self._writer.ref)

    @property
    def digest(self) -> str:
        return str(self._writer.digest)

    async def status(self) -> Status:
        status: Status = await self._run(self._writer.status)
        return status

    async def write(self, data: bytes) -> int:
        return int(await self._run(self._writer.write, data))

    async def commit(
        self, size: int = 0, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> str:
        return str(await self._run(self._writer.commit, size, expected, labels=labels))

    async def truncate(self, size: int) -> None:
        await self._run(self._writer.truncate, size)

    async def close(self) -> None:
        await self._run(self._writer.close)


class _Reader:
    def __init__(self, reader: Any, run: Run) -> None:
        self._reader = reader
        self._run = run

    @property
    def size(self) -> int:
        return int(self._reader.size)

    async def read_at(self, offset: int, size: int) -> bytes:
        return bytes(await self._run(self._reader.read_at, offset, size))

    async def close(self) -> None:
        await self._run(self._reader.close)


class _Content:
    """``client.content`` as :class:`pycontainerd.distribution.pull.ContentStore`."""

    def __init__(self, content: Any, run: Run) -> None:
        self._content = content
        self._run = run

    async def info(self, digest: str) -> Info:
        info: Info = await self._run(self._content.info, digest)
        return info

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        updated: Info = await self._run(self._content.update, info, fieldpaths)
        return updated

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> _Writer:
        writer = await self._run(self._content.writer, ref, total=total, expected=expected)
        return _Writer(writer, self._run)

    async def abort(self, ref: str) -> None:
        await self._run(self._content.abort, ref)

    async def reader_at(self, digest: str) -> _Reader:
        return _Reader(await self._run(self._content.reader_at, digest), self._run)


class _Images:
    """``client.images`` as :class:`pycontainerd.distribution.pull.ImageStore`."""

    def __init__(self, images: Any, run: Run) -> None:
        self._images = images
        self._run = run

    async def create(self, image: Image) -> Image:
        created: Image = await self._run(
            self._images.create, image.name, image.target, image.labels
        )
        return created

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        updated: Image = await self._run(self._images.update, image, *fieldpaths)
        return updated


class _Unpacker:
    """Applies each layer of a job as soon as it and its parent are in."""

    def __init__(
        self,
        client: Any,
        snapshotter: str,
        matcher: pf.Matcher,
        apply_layer: Callable[..., Any],
        run: Run,
    ) -> None:
        self._client = client
        self._snapshotter = snapshotter
        self._matcher = matcher
        self._apply_layer = apply_layer
        self._run = run
        self.unpacked: list[str] = []

    async def unpack(self, job: pulling.UnpackJob) -> None:
        p = job.image_config.platform
        if job.manifest.platform is None and not self._matcher.match(
            pf.normalize(pf.Platform(p.os, p.architecture))
        ):
            return
        if job.manifest.platform is not None and not self._matcher.match(job.manifest.platform):
            return
        chain = chain_ids(job.image_config.diff_ids)
        sn = self._client.snapshot_service(self._snapshotter)
        content = self._client.content
        for i, layer in enumerate(job.layers):
            await job.fetched(i)
            parent = chain[i - 1] if i else ""
            if await self._run(self._apply_layer, self._client, sn, layer, chain[i], parent):
                # Only now has the apply verified the uncompressed digest.
                await self._run(
                    content.set_labels, layer.blob.digest, {LABEL_UNCOMPRESSED: layer.diff_id}
                )
        if chain:
            await self._run(
                content.set_labels,
                job.config.digest,
                {gc_snapshot_label(self._snapshotter): chain[-1]},
            )
        self.unpacked.append(job.manifest.digest)


def platform_matcher(platform: str | pf.Platform | None) -> pf.Matcher:
    if platform is None:
        return pf.only(pf.default())
    if isinstance(platform, str):
        platform = pf.parse(platform)
    return pf.only(platform)


async def _pull(
    client: Any,
    run: Run,
    apply_layer: Callable[..., Any],
    snapshotter: str,
    ref: str,
    *,
    unpack: bool,
    platform: str | pf.Platform | None,
    all_platforms: bool,
    all_metadata: bool,
    metadata_only: bool,
    limit: int,
    labels: Mapping[str, str] | None,
    progress: pulling.ProgressFunc | None,
    options: RemoteOptions,
) -> Image:
    """Pull (or fetch) through ``client``'s services; the saved record."""
    # Metadata only: every entry's metadata, and no platform's layers.
    matcher = pf.ordered() if metadata_only else platform_matcher(platform)
    all_metadata = all_metadata or metadata_only
    unpacker = _Unpacker(client, snapshotter, matcher, apply_layer, run) if unpack else None
    async with options.resolver() as resolver:
        image = await pulling.fetch(
            resolver,
            ref,
            _Content(client.content, run),
            platform=pf.any_platform() if all_platforms else matcher,
            # Every entry's metadata is wanted, so none is cut by the limit.
            limit=0 if all_platforms or all_metadata else limit,
            max_concurrent_downloads=options.max_concurrent_downloads,
            progress=progress,
            unpacker=unpacker,
            labels=labels,
            all_metadata=all_metadata,
        )
    if unpacker is not None and not unpacker.unpacked:
        raise errdefs.NotFound(f"{image.name}: no manifest for platform to unpack")
    return await pulling.save_image(_Images(client.images, run), image)


async def _push(
    client: Any,
    run: Run,
    ref: str,
    target: Descriptor,
    *,
    platform: str | pf.Platform | None,
    progress: pushing.PushProgressFunc | None,
    options: RemoteOptions,
) -> None:
    matcher = None if platform is None else platform_matcher(platform)
    async with options.resolver() as resolver:
        await pushing.push(
            resolver.pusher(ref),
            ref,
            _Content(client.content, run),
            target,
            platform=matcher,
            max_concurrent_uploads=options.max_concurrent_uploads,
            progress=progress,
        )


class AsyncDistribution:
    """Pull, fetch and push for the async client.

    ``apply_layer`` is ``client._async.image.apply_layer`` (passed in: this
    module stays below the two client faces, which both use it).
    """

    def __init__(self, client: Any, apply_layer: Callable[..., Any]) -> None:
        self._client = client
        self._apply_layer = apply_layer

    async def pull(
        self,
        ref: str,
        *,
        unpack: bool = True,
        snapshotter: str = "",
        platform: str | pf.Platform | None = None,
        all_platforms: bool = False,
        all_metadata: bool = False,
        metadata_only: bool = False,
        labels: Mapping[str, str] | None = None,
        progress: pulling.ProgressFunc | None = None,
        options: RemoteOptions = RemoteOptions(),
        limit: int = 1,
    ) -> Image:
        """Pull (``unpack`` into the resolved ``snapshotter``) or fetch; the record."""
        client = self._client
        async with client.lease() if leases.current() is None else contextlib.nullcontext():
            return await _pull(
                client,
                _direct,
                self._apply_layer,
                snapshotter,
                ref,
                unpack=unpack,
                platform=platform,
                all_platforms=all_platforms,
                all_metadata=all_metadata,
                metadata_only=metadata_only,
                limit=limit,
                labels=labels,
                progress=progress,
                options=options,
            )

    async def push(
        self,
        ref: str,
        target: Descriptor,
        *,
        platform: str | pf.Platform | None = None,
        progress: pushing.PushProgressFunc | None = None,
        options: RemoteOptions = RemoteOptions(),
    ) -> None:
        await _push(
            self._client,
            _direct,
            ref,
            target,
            platform=platform,
            progress=progress,
            options=options,
        )


def _in_loop_thread(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` in a fresh event loop on a worker thread with this
    thread's context (namespace, lease); its result or its error."""
    context = contextvars.copy_context()
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(context.run(asyncio.run, main()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="pycontainerd-distribution", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class Distribution:
    """Pull, fetch and push for the sync client (see the module docstring)."""

    def __init__(self, client: Any, apply_layer: Callable[..., Any]) -> None:
        self._client = client
        self._apply_layer = apply_layer

    def pull(
        self,
        ref: str,
        *,
        unpack: bool = True,
        snapshotter: str = "",
        platform: str | pf.Platform | None = None,
        all_platforms: bool = False,
        all_metadata: bool = False,
        metadata_only: bool = False,
        labels: Mapping[str, str] | None = None,
        progress: pulling.ProgressFunc | None = None,
        options: RemoteOptions = RemoteOptions(),
        limit: int = 1,
    ) -> Image:
        client = self._client
        with client.lease() if leases.current() is None else contextlib.nullcontext():
            return _in_loop_thread(
                functools.partial(
                    _pull,
                    client,
                    _threaded,
                    self._apply_layer,
                    snapshotter,
                    ref,
                    unpack=unpack,
                    platform=platform,
                    all_platforms=all_platforms,
                    all_metadata=all_metadata,
                    metadata_only=metadata_only,
                    limit=limit,
                    labels=labels,
                    progress=progress,
                    options=options,
                )
            )

    def push(
        self,
        ref: str,
        target: Descriptor,
        *,
        platform: str | pf.Platform | None = None,
        progress: pushing.PushProgressFunc | None = None,
        options: RemoteOptions = RemoteOptions(),
    ) -> None:
        _in_loop_thread(
            functools.partial(
                _push,
                self._client,
                _threaded,
                ref,
                target,
                platform=platform,
                progress=progress,
                options=options,
            )
        )
