"""The walking differ: ``io.containerd.differ.v1.walking``.

It compares by mounting both sides read-only and walking the two trees
(:func:`pycontainerd.archive.write_diff`), so it works over any
filesystem, and it applies with :class:`~pycontainerd.diff.apply.FileSystemApplier`.
Both work on the namespaced content store of the metadata plugin: what it
reads must be visible in the request's namespace, and what it writes lands
there, attached to the request's lease.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import BinaryIO, Protocol, cast

from pycontainerd import content, errdefs, platforms, plugin
from pycontainerd import mount as mountlib
from pycontainerd.archive import write_diff
from pycontainerd.archive.compression import Compression, compressor
from pycontainerd.diff import (
    LABEL_UNCOMPRESSED,
    MEDIA_TYPE_LAYER_GZIP,
    Payloads,
    output_compression,
)
from pycontainerd.diff._blocking import DigestWriter, LoopWriter, run_blocking
from pycontainerd.diff.apply import FileSystemApplier
from pycontainerd.images import Descriptor
from pycontainerd.metadata import Metadata
from pycontainerd.mount import Mount

__all__ = ["WalkingDiffer", "unique_ref"]

log = logging.getLogger(__name__)


class _Store(content.Provider, content.Ingester, content.Manager, content.IngestManager, Protocol):
    """What the walking differ uses of a content store."""


def unique_ref() -> str:
    """An ingest ref no other diff uses: nanoseconds and a little randomness."""
    return f"{time.time_ns()}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


class WalkingDiffer:
    """Applies layers and writes diffs through a content store."""

    def __init__(self, store: _Store) -> None:
        self._store = store
        self._applier = FileSystemApplier(store)

    async def apply(
        self, desc: Descriptor, mounts: Sequence[Mount], *, payloads: Payloads | None = None
    ) -> Descriptor:
        return await self._applier.apply(desc, mounts, payloads=payloads)

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        compression = output_compression(media_type)
        media_type = media_type or MEDIA_TYPE_LAYER_GZIP
        new_ref = not ref
        ref = ref or unique_ref()
        try:
            writer = await self._store.writer(ref)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"failed to open writer: {exc.message}") from None
        loop = asyncio.get_running_loop()

        def work(cancelled: threading.Event) -> str:
            """Write the diff into the ingest; returns the uncompressed digest."""
            sink = LoopWriter(writer.write, loop, cancelled)
            with (
                mountlib.temp_mount(lower, readonly=True) as lower_root,
                mountlib.temp_mount(upper, readonly=True) as upper_root,
            ):
                out = compressor(cast(BinaryIO, sink), compression)
                tar = DigestWriter(out)
                try:
                    write_diff(lower_root, upper_root, cast(BinaryIO, tar))
                except BaseException:
                    sink.discard()
                    raise
                finally:
                    out.close()
            sink.finish()
            return tar.digest

        try:
            if not new_ref:
                await writer.truncate(0)
            try:
                uncompressed = await run_blocking(work)
            except errdefs.ContainerdError:
                raise
            except OSError as exc:
                raise errdefs.Unknown(f"failed to write diff: {exc}") from exc
            commit_labels = dict(labels or {})
            if compression is not Compression.UNCOMPRESSED:
                commit_labels[LABEL_UNCOMPRESSED] = uncompressed
            dgst = writer.digest
            with contextlib.suppress(errdefs.AlreadyExists):
                await writer.commit(0, dgst, labels=commit_labels or None)
            info = await self._store.info(dgst)
        except BaseException:
            await writer.close()
            if new_ref:
                with contextlib.suppress(errdefs.ContainerdError):
                    await self._store.abort(ref)
            raise
        log.debug("diff created", extra={"digest": info.digest, "media": media_type, "ref": ref})
        return Descriptor(media_type, info.digest, info.size)


def _init(ctx: plugin.InitContext) -> WalkingDiffer:
    metadata: Metadata = ctx.get(plugin.PluginType.METADATA)
    if metadata.content is None:
        raise plugin.SkipPlugin("metadata has no content store")
    ctx.platforms.append(platforms.format(platforms.default()))
    return WalkingDiffer(metadata.content)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.DIFF,
        id="walking",
        init=_init,
        requires=(plugin.PluginType.METADATA,),
    )
)
