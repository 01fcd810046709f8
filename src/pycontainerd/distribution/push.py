"""Pushing an image from a content store to a registry: containerd's
``remotes.PushContent``, usable by the client and the daemon.

Everything reachable from the target (index entries for ``platform``'s
platforms, or all) is read from the store and handed to the registry
pusher, children before parents: layers and configs first, at most
``max_concurrent_uploads`` at a time, then manifests, then indexes, the
root last and under the reference's tag (or only by digest when the
reference names one).  A blob the registry has is skipped (``exists``); one
whose ``containerd.io/distribution.source.<host>`` label names another
repository of the same registry is mounted from there (``mounted``) rather
than uploaded.  Progress is reported per blob as bytes are read from the
store.

Bounds: manifests and indexes are read into memory up to
:data:`~pycontainerd.images.manifest.MAX_MANIFEST_SIZE` each (the walk
reads them anyway); blobs stream from the store in its read chunks; at
most :data:`~pycontainerd.images.pull.MAX_BLOBS` descriptors per push.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pycontainerd import errdefs
from pycontainerd import platforms as pf
from pycontainerd import reference as references
from pycontainerd.content import Info, Provider, read_blob, read_chunks
from pycontainerd.distribution.pull import DISTRIBUTION_SOURCE_PREFIX, MAX_BLOBS, hostname, ref_key
from pycontainerd.images import Descriptor
from pycontainerd.images import mediatypes as mt
from pycontainerd.images.handlers import reachable
from pycontainerd.images.manifest import MAX_MANIFEST_SIZE, verify_blob

__all__ = [
    "DEFAULT_MAX_CONCURRENT_UPLOADS",
    "PushProgress",
    "PushProgressFunc",
    "PushState",
    "Pusher",
    "push",
]

log = logging.getLogger(__name__)

#: containerd's default for ``max_concurrent_uploaded_layers``.
DEFAULT_MAX_CONCURRENT_UPLOADS = 3

PushState = Literal["waiting", "uploading", "done", "exists", "mounted", "failed"]


@dataclass(frozen=True, slots=True)
class PushProgress:
    """Where one blob of a push stands."""

    ref: str
    descriptor: Descriptor
    state: PushState
    offset: int = 0
    total: int = 0
    error: str = ""


PushProgressFunc = Callable[[PushProgress], None]


class Store(Provider, Protocol):
    async def info(self, digest: str) -> Info: ...


class Pusher(Protocol):
    """:class:`pycontainerd.remotes.Pusher`'s shape."""

    async def push(
        self,
        desc: Any,
        data: bytes | Callable[[], AsyncIterable[bytes]],
        *,
        tag: bool = False,
        source_repository: str | None = None,
    ) -> str: ...


def _mount_source(info: Info, domain: str, repository: str) -> str | None:
    """A repository of ``domain`` the blob is known to come from, other than the target."""
    value = info.labels.get(DISTRIBUTION_SOURCE_PREFIX + hostname(domain), "")
    for repo in value.split(","):
        if repo and repo != repository:
            return repo
    return None


async def push(
    pusher: Pusher,
    ref: str,
    store: Store,
    target: Descriptor,
    *,
    platform: pf.Matcher | None = None,
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS,
    progress: PushProgressFunc | None = None,
) -> None:
    """Push ``target`` and what it references from ``store`` as ``ref``
    (``pusher`` is the resolver's pusher for ``ref``)."""
    parsed = references.parse_docker_ref(ref)

    async def read(desc: Descriptor) -> bytes:
        if desc.size > MAX_MANIFEST_SIZE:
            raise errdefs.ResourceExhausted(
                f"{desc.digest}: {desc.size} bytes, over the {MAX_MANIFEST_SIZE}-byte limit"
            )
        try:
            return verify_blob(desc, await read_blob(store, desc.digest))
        except errdefs.NotFound:
            raise errdefs.NotFound(
                f"content {desc.digest} ({desc.media_type}) of {ref}: not found in the"
                " content store; push a platform whose content is there (--platform)"
            ) from None

    descs: list[Descriptor] = await reachable(read, target, platform)
    if len(descs) > MAX_BLOBS:
        raise errdefs.ResourceExhausted(f"{ref}: more than {MAX_BLOBS} blobs to push")
    documents = {d.digest: await read(d) for d in descs if _is_document(d.media_type)}
    semaphore = asyncio.Semaphore(max(1, max_concurrent_uploads))

    def report(desc: Descriptor, state: PushState, offset: int = 0, error: str = "") -> None:
        if progress is not None:
            progress(PushProgress(ref_key(desc), desc, state, offset, desc.size, error))

    async def push_one(desc: Descriptor, *, tag: bool = False) -> None:
        async with semaphore:
            report(desc, "uploading")
            source = None
            if desc.digest not in documents:
                try:
                    info = await store.info(desc.digest)
                except errdefs.NotFound:
                    raise errdefs.NotFound(
                        f"content {desc.digest} ({desc.media_type}) of {ref}: not found in the"
                        " content store"
                    ) from None
                source = _mount_source(info, parsed.domain, parsed.path)
            sent = 0

            async def stream() -> AsyncIterator[bytes]:
                nonlocal sent
                sent = 0
                async for chunk in read_chunks(store, desc.digest):
                    sent += len(chunk)
                    report(desc, "uploading", sent)
                    yield chunk

            data = documents.get(desc.digest)
            try:
                result = await pusher.push(
                    desc, data if data is not None else stream, tag=tag, source_repository=source
                )
            except BaseException as exc:
                report(desc, "failed", sent, getattr(exc, "message", str(exc)))
                raise
            state: PushState = "done"
            if result == "exists":
                state = "exists"
            elif result == "mounted":
                state = "mounted"
            report(desc, state, desc.size)

    for desc in descs:
        report(desc, "waiting")
    blobs = [d for d in descs if not _is_document(d.media_type) or mt.is_config(d.media_type)]
    try:
        async with asyncio.TaskGroup() as group:
            for desc in blobs:
                group.create_task(push_one(desc))
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    # Parents after children: reversed discovery order puts every manifest
    # before the index that lists it.
    manifests = [d for d in reversed(descs) if d not in blobs]
    for desc in manifests:
        is_root = desc.digest == target.digest
        await push_one(desc, tag=is_root and bool(parsed.tag) and not parsed.digest)
    log.debug("pushed %s (%s): %d blobs", ref, target.digest, len(descs))


def _is_document(media_type: str) -> bool:
    return mt.is_manifest(media_type) or mt.is_index(media_type) or mt.is_config(media_type)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = list(exc.exceptions)
        elif not isinstance(exc, asyncio.CancelledError):
            return exc
    return group
