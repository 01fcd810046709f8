"""Layers that cost a careless tar reader far more memory than their size.

Built lazily, block by block, so a test can feed hundreds of MiB of tar to a
reader (or gzip it to a few hundred KiB) without holding it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterator

__all__ = ["ChunkStream", "GzipLayer", "extended_header", "pax_bomb", "pax_bomb_gzip"]

_BLOCK = 512


def extended_header(records: dict[str, str]) -> bytes:
    """One PAX ``x`` header (its block and records) with no entry after it."""
    info = tarfile.TarInfo("f")
    info.pax_headers = records
    # tobuf gives the PAX header, then the entry's own ustar block: drop that.
    return info.tobuf(format=tarfile.PAX_FORMAT)[:-_BLOCK]


def pax_bomb(headers: int, record: int) -> Iterator[bytes]:
    """``headers`` PAX headers of just under ``record`` bytes, each with a key
    of its own, then one small file and the end marker."""
    filler = "a" * (record - 64)  # room for the length and the key
    for n in range(headers):
        yield extended_header({f"SCHILY.xattr.user.k{n}": filler})
    info = tarfile.TarInfo("f")
    info.size = 1
    yield info.tobuf(format=tarfile.USTAR_FORMAT) + b"1".ljust(_BLOCK, b"\0")
    yield bytes(2 * _BLOCK)


class ChunkStream(io.RawIOBase):
    """A readable stream over generated chunks, never holding more than one."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class GzipLayer:
    """A gzip blob and the digest of what it expands to (its diff ID)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        raw = hashlib.sha256()
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
            for chunk in chunks:
                raw.update(chunk)
                gz.write(chunk)
        self.blob = out.getvalue()
        self.diff_id = "sha256:" + raw.hexdigest()


def pax_bomb_gzip(headers: int = 150, record: int = 1 << 20) -> GzipLayer:
    """About 150 KiB of gzip that expands to 150 MiB of extended headers."""
    return GzipLayer(pax_bomb(headers, record))
