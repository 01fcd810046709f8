"""Applying a layer blob onto mounts (containerd's ``diff/apply``).

The blob is streamed from the content store, decompressed (its media type
must be a layer type; the bytes decide the algorithm, as containerd's
``DecompressStream`` does), hashed as it goes, and unpacked by
:func:`pycontainerd.archive.apply_layer`.  Where it lands:

* one ``overlay`` mount: straight into its ``upperdir``, with whiteouts
  written the way overlayfs stores them and the ``lowerdir``s as parents
  (no mount needed; containerd's fast path, skipped in a user namespace);
* one ``bind`` mount: into its source directory (refused when ``ro``);
* anything else: mounted on a temporary directory, whiteouts applied by
  removing what they name.

The result describes the uncompressed tar (the layer's diff ID), as
containerd returns it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from pycontainerd import content, errdefs
from pycontainerd import mount as mountlib
from pycontainerd.archive import Whiteouts, apply_layer
from pycontainerd.archive.compression import decompress, from_media_type
from pycontainerd.diff import MEDIA_TYPE_LAYER, Payloads
from pycontainerd.diff._blocking import DigestReader, ReaderAtStream, run_blocking
from pycontainerd.diff._mounts import bind_source, in_user_namespace
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount

__all__ = ["FileSystemApplier", "apply_stream"]

log = logging.getLogger(__name__)


class FileSystemApplier:
    """Applies layers from a content store onto mounts.

    ``store`` is the namespaced content store: the request's namespace (a
    context variable) decides which blobs are visible.
    """

    def __init__(self, store: content.Provider) -> None:
        self._store = store

    async def apply(
        self, desc: Descriptor, mounts: Sequence[Mount], *, payloads: Payloads | None = None
    ) -> Descriptor:
        # Payloads feed external stream processors (decryption); none are
        # configured here, so they have nothing to do.
        del payloads
        try:
            from_media_type(desc.media_type)
        except errdefs.NotImplemented:
            # containerd's words and code (no stream processor takes the type):
            # Unknown, not NotImplemented, so no other differ is tried either.
            raise errdefs.Unknown(
                f"failed to get stream processor for {desc.media_type}: no processor for media-type"
            ) from None
        if not mounts:
            raise errdefs.InvalidArgument("no mounts to apply the layer onto")
        start = time.perf_counter()
        try:
            reader = await self._store.reader_at(desc.digest)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"failed to get reader from content store: {exc.message}") from None
        try:
            if reader.size != desc.size:
                raise errdefs.InvalidArgument(
                    f"layer {desc.digest}: descriptor size {desc.size} "
                    f"does not match the blob's {reader.size} bytes"
                )
            loop = asyncio.get_running_loop()

            def work(cancelled: threading.Event) -> Descriptor:
                raw: BinaryIO | ReaderAtStream
                if isinstance(reader, content.FileReaderAt):
                    # A local blob is read as a file, not chunk by chunk via the loop.
                    raw = reader.open_file()
                else:
                    raw = ReaderAtStream(reader.read_at, reader.size, loop, cancelled)
                with raw:
                    return apply_stream(raw, desc, mounts, cancelled)

            applied = await run_blocking(work)
        finally:
            await reader.close()
        log.debug(
            "diff applied",
            extra={
                "d": f"{time.perf_counter() - start:.3f}s",
                "dgst": desc.digest,
                "size": desc.size,
                "media": desc.media_type,
            },
        )
        return applied


def apply_stream(
    raw: Any,
    desc: Descriptor,
    mounts: Sequence[Mount],
    cancelled: threading.Event | None = None,
    *,
    verified_elsewhere: bool = False,
) -> Descriptor:
    """Unpack the blob ``raw`` reads (``desc``'s bytes) onto ``mounts``; blocking.

    Every byte of the blob is hashed on the way, and a blob that does not
    match ``desc`` is an error even though it has been applied by then (the
    caller discards the snapshot).  containerd trusts its store here; we
    check because a blob damaged on disk would otherwise become a layer with
    a plausible diff ID.  A caller that verifies the very bytes it feeds
    ``raw`` before it keeps the result (a pull streaming a layer in as the
    fetcher digests it) passes ``verified_elsewhere``: the bytes are then
    only counted, which spares a second sha256 of the blob.
    """
    algorithm = "" if verified_elsewhere else desc.digest.partition(":")[0]
    blob = DigestReader(raw, cancelled, algorithm=algorithm)
    try:
        stream = decompress(cast(BinaryIO, blob), None)
        try:
            with DigestReader(stream, cancelled, background=True) as layer:
                _apply_to_mounts(cast(BinaryIO, layer), mounts)
                layer.drain()
                diff_id = layer.digest
        finally:
            stream.close()
        blob.drain()
    except errdefs.ContainerdError:
        raise
    except OSError as exc:
        raise _os_error(exc, f"failed to apply layer {desc.digest}") from exc
    except Exception as exc:  # decompressors raise their own error types
        raise errdefs.Unknown(f"failed to apply layer {desc.digest}: {exc}") from exc
    if blob.count != desc.size or (algorithm and blob.digest != desc.digest):
        got = f"{blob.digest}, " if algorithm else ""
        raise errdefs.FailedPrecondition(
            f"layer {desc.digest}: content read does not match its descriptor "
            f"(got {got}{blob.count} bytes; want {desc.size} bytes)"
        )
    return Descriptor(MEDIA_TYPE_LAYER, diff_id, layer.count)


def _apply_to_mounts(layer: BinaryIO, mounts: Sequence[Mount]) -> None:
    if len(mounts) == 1:
        only = mounts[0]
        if only.type == "overlay" and not in_user_namespace():
            dirs = mountlib.overlay_dirs(only)
            if dirs.upper is not None:
                _absolute(dirs.upper, "overlay upperdir")
                apply_layer(dirs.upper, layer, whiteouts=Whiteouts.OVERLAY, parents=dirs.lowers)
                return
        bind = bind_source(only)
        if bind is not None:
            source, read_only = bind
            if read_only:
                raise errdefs.InvalidArgument(
                    f"cannot apply a layer onto read-only bind mount of {source}"
                )
            _absolute(source, "bind mount source")
            if not source.is_dir():
                raise errdefs.InvalidArgument(f"bind mount source {source} is not a directory")
            apply_layer(source, layer, whiteouts=Whiteouts.REMOVE)
            return
    with mountlib.temp_mount(mounts) as root:
        apply_layer(root, layer, whiteouts=Whiteouts.REMOVE)


_BY_ERRNO: dict[int, type[errdefs.ContainerdError]] = {
    errno.ENOENT: errdefs.NotFound,
    errno.ENOTDIR: errdefs.InvalidArgument,
    errno.EACCES: errdefs.PermissionDenied,
    errno.EPERM: errdefs.PermissionDenied,
    errno.ENOSPC: errdefs.ResourceExhausted,
}


def _absolute(path: Path, what: str) -> None:
    """A relative path would be resolved against the daemon's working directory."""
    if not path.is_absolute():
        raise errdefs.InvalidArgument(f"{what} {str(path)!r} is not an absolute path")


def _os_error(exc: OSError, what: str) -> errdefs.ContainerdError:
    detail = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
    return _BY_ERRNO.get(exc.errno or 0, errdefs.Unknown)(f"{what}: {detail}")
