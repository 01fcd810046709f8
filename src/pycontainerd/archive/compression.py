"""Layer compression: detect it by magic bytes, stream through it fast.

gzip goes through ISA-L (``isal.igzip``), several times faster than zlib and
able to decompress in a background thread; zstd through ``zstandard``.
Multi-member gzip and multi-frame zstd streams are read to their end, as
containerd reads them.  Media types map to compressions the way containerd's
``images.DiffCompression`` maps them for its diff applier.
"""

from __future__ import annotations

import enum
import gzip
import io
from typing import BinaryIO, cast

import zstandard
from isal import igzip, igzip_lib, igzip_threaded

from pycontainerd import errdefs

__all__ = ["Compression", "compressor", "decompress", "detect", "from_media_type"]

_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# zstd skippable frames: magic 0x184D2A5? little-endian, which containerd also detects.
_ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
_ZSTD_SKIPPABLE = 0x184D2A50
_DETECT_LEN = 4
_BLOCK = 1 << 20


class Compression(enum.Enum):
    UNCOMPRESSED = "uncompressed"
    GZIP = "gzip"
    ZSTD = "zstd"


def detect(prefix: bytes) -> Compression:
    """The compression a stream starting with ``prefix`` uses (UNCOMPRESSED if unknown)."""
    if prefix.startswith(_GZIP_MAGIC):
        return Compression.GZIP
    if prefix.startswith(_ZSTD_MAGIC):
        return Compression.ZSTD
    if len(prefix) >= 4:
        magic = int.from_bytes(prefix[:4], "little")
        if magic & _ZSTD_SKIPPABLE_MASK == _ZSTD_SKIPPABLE:
            return Compression.ZSTD
    return Compression.UNCOMPRESSED


class _Prefixed(io.RawIOBase):
    """Give back the bytes read for detection before the rest of the stream."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)


_CORRUPT: tuple[type[BaseException], ...] = (
    EOFError,
    gzip.BadGzipFile,
    cast(type[BaseException], igzip_lib.IsalError),
    zstandard.ZstdError,
)


class _Checked(io.RawIOBase):
    """Report corrupt compressed data as InvalidArgument, and close the decompressor."""

    def __init__(self, inner: BinaryIO, what: str) -> None:
        self._inner = inner
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return self._inner.readinto(b)  # type: ignore[attr-defined, no-any-return]
        except _CORRUPT as exc:
            raise errdefs.InvalidArgument(f"corrupt {self._what} stream: {exc}") from exc

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except _CORRUPT as exc:
            raise errdefs.InvalidArgument(f"corrupt {self._what} stream: {exc}") from exc

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class _Plain(io.RawIOBase):
    """A writer onto ``out`` whose close() does not close ``out``."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._out.write(b)
        return len(b)

    def close(self) -> None:
        if not self.closed:
            self._out.flush()
        super().close()


def _read_prefix(stream: BinaryIO) -> bytes:
    prefix = b""
    while len(prefix) < _DETECT_LEN:
        chunk = stream.read(_DETECT_LEN - len(prefix))
        if not chunk:
            break
        prefix += chunk
    return prefix


def decompress(stream: BinaryIO, compression: Compression | None = None) -> BinaryIO:
    """A reader of the uncompressed bytes of ``stream``; ``None`` detects the compression.

    Close the result when done: gzip decompresses in a helper thread.  Corrupt
    input raises :class:`~pycontainerd.errdefs.InvalidArgument` at read time
    for gzip structure errors, as the decompressors report them.
    """
    prefix = b""
    if compression is None:
        prefix = _read_prefix(stream)
        compression = detect(prefix)
    # Closing what we return never closes the caller's stream.
    source = cast(BinaryIO, io.BufferedReader(_Prefixed(prefix, stream), _BLOCK))
    if compression is Compression.UNCOMPRESSED:
        return source
    if compression is Compression.GZIP:
        inner = igzip_threaded.open(  # type: ignore[no-untyped-call]
            source, "rb", threads=1, block_size=_BLOCK
        )
        return cast(BinaryIO, _Checked(cast(BinaryIO, inner), "gzip"))
    reader = zstandard.ZstdDecompressor().stream_reader(
        source, read_size=_BLOCK, read_across_frames=True, closefd=False
    )
    buffered = io.BufferedReader(cast(io.RawIOBase, reader), _BLOCK)
    return cast(BinaryIO, _Checked(cast(BinaryIO, buffered), "zstd"))


def compressor(out: BinaryIO, compression: Compression, level: int | None = None) -> BinaryIO:
    """A writer that compresses into ``out``; its close() flushes but leaves ``out`` open."""
    if compression is Compression.UNCOMPRESSED:
        return cast(BinaryIO, _Plain(out))
    if compression is Compression.GZIP:
        gz_level = igzip._COMPRESS_LEVEL_TRADEOFF if level is None else level
        if not 0 <= gz_level <= 3:
            raise errdefs.InvalidArgument(f"gzip level {gz_level} out of range 0-3 (ISA-L)")
        writer = igzip.IGzipFile(  # type: ignore[no-untyped-call]
            fileobj=out, mode="wb", compresslevel=gz_level
        )
        return cast(BinaryIO, writer)
    zlevel = 3 if level is None else level
    zwriter = zstandard.ZstdCompressor(level=zlevel).stream_writer(out, closefd=False)
    return cast(BinaryIO, zwriter)


_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
_OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
_DOCKER = {
    "application/vnd.docker.image.rootfs.diff.tar": Compression.UNCOMPRESSED,
    "application/vnd.docker.image.rootfs.foreign.diff.tar": Compression.UNCOMPRESSED,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": Compression.GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": Compression.GZIP,
    "application/vnd.docker.image.rootfs.diff.tar.zstd": Compression.ZSTD,
}
_SUFFIX = {"gzip": Compression.GZIP, "zstd": Compression.ZSTD}


def from_media_type(media_type: str) -> Compression:
    """The compression a layer media type declares.

    Docker's plain ``rootfs.diff.tar`` is sometimes compressed anyway;
    containerd detects that, so readers should pass ``None`` to
    :func:`decompress` and use this to reject what cannot be applied.
    Raises NotImplemented for media types that are not layers we can apply
    (including encrypted ones).
    """
    base, *suffixes = media_type.strip().split("+")
    if base in _DOCKER and not suffixes:
        return _DOCKER[base]
    if base in (_OCI_LAYER, _OCI_NONDIST):
        if not suffixes:
            return Compression.UNCOMPRESSED
        if len(suffixes) == 1 and suffixes[0] in _SUFFIX:
            return _SUFFIX[suffixes[0]]
    raise errdefs.NotImplemented(f"unsupported diff media type: {media_type}")
