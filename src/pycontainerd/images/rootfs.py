"""Images from a root filesystem: one gzip layer, an OCI config and manifest.

``pyctr images import --from-rootfs PATH NAME`` turns a directory (or a
tar, compressed or not) into a one-layer OCI image.  This module builds
the three blobs; the client writes them through the content service and
names the image (:func:`pycontainerd.client._async.transfer.import_rootfs`).

The layer is written to a file as it is made, hashing both the tar (its
diff ID) and the gzip stream (its digest) on the way, so a large tree is
never held in memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from pycontainerd import errdefs
from pycontainerd.archive.compression import Compression, compressor, decompress
from pycontainerd.archive.diff import write_tree
from pycontainerd.images import Descriptor
from pycontainerd.images import mediatypes as mt
from pycontainerd.images.manifest import descriptor_to_json, dumps
from pycontainerd.platforms import Platform

__all__ = [
    "DEFAULT_ENV",
    "HashingWriter",
    "Layer",
    "ZeroGzipTime",
    "build_layer",
    "gzip_writer",
    "image_config",
    "oci_manifest",
]

#: The environment an image gets when no ``--config-env`` is given.
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Layer:
    """The layer blob as written (gzip) and the digest of its tar."""

    desc: Descriptor
    diff_id: str


class HashingWriter(io.RawIOBase):
    """Pass writes through to ``out`` while hashing and counting them."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._out.write(b)
        self.hash.update(b)
        n = len(b)
        self.size += n
        return n


class ZeroGzipTime(io.RawIOBase):
    """Zero the MTIME field (bytes 4-7) of a gzip stream on its way to ``out``.

    Go's gzip writer leaves it 0; ours stamps the current time, which would
    give the same layer a new digest on every build.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._offset = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(b)
        n = len(data)
        if self._offset < 8 and self._offset + n > 4:
            start, end = max(4 - self._offset, 0), min(8 - self._offset, n)
            data = data[:start] + b"\0" * (end - start) + data[end:]
        self._offset += n
        self._out.write(data)
        return n


def gzip_writer(out: BinaryIO) -> BinaryIO:
    """A reproducible gzip compressor into ``out`` (no timestamp); close() flushes."""
    return compressor(cast(BinaryIO, ZeroGzipTime(out)), Compression.GZIP)


def build_layer(source: Path, out: BinaryIO) -> Layer:
    """Write ``source`` (a directory, or a tar/tar.gz/tar.zst) to ``out`` as a gzip layer."""
    compressed = HashingWriter(out)
    gz = gzip_writer(cast(BinaryIO, compressed))
    plain = HashingWriter(gz)
    try:
        if source.is_dir():
            write_tree(source, cast(BinaryIO, plain))
        elif source.is_file():
            with open(source, "rb") as raw, decompress(cast(BinaryIO, raw)) as tar:
                while chunk := tar.read(_CHUNK):
                    plain.write(chunk)
        else:
            raise errdefs.InvalidArgument(f"rootfs {str(source)!r}: not a directory or a file")
    finally:
        gz.close()
    desc = Descriptor(mt.OCI_LAYER_GZIP, "sha256:" + compressed.hash.hexdigest(), compressed.size)
    return Layer(desc, "sha256:" + plain.hash.hexdigest())


def image_config(
    diff_id: str,
    platform: Platform,
    *,
    cmd: Sequence[str] = (),
    entrypoint: Sequence[str] = (),
    env: Sequence[str] = (),
    workdir: str = "",
    created: dt.datetime | None = None,
) -> bytes:
    """An OCI image config for a one-layer image built from a rootfs."""
    for item in env:
        if "=" not in item or item.startswith("="):
            raise errdefs.InvalidArgument(f"config env {item!r}: expected KEY=VALUE")
    if workdir and not workdir.startswith("/"):
        raise errdefs.InvalidArgument(f"config workdir {workdir!r}: must be an absolute path")
    when = (created or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    config: dict[str, object] = {"Env": list(env) or list(DEFAULT_ENV)}
    if entrypoint:
        config["Entrypoint"] = list(entrypoint)
    if cmd:
        config["Cmd"] = list(cmd)
    if workdir:
        config["WorkingDir"] = workdir
    doc: dict[str, object] = {"created": when, "architecture": platform.architecture}
    if platform.variant:
        doc["variant"] = platform.variant
    doc.update(
        {
            "os": platform.os,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": when, "created_by": "pyctr images import --from-rootfs"}],
        }
    )
    return dumps(doc)


def oci_manifest(config: Descriptor, layers: Sequence[Descriptor]) -> bytes:
    """An OCI image manifest for ``config`` and ``layers``."""
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": descriptor_to_json(config),
            "layers": [descriptor_to_json(x) for x in layers],
        }
    )
