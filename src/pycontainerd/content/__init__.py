"""Content: the content-addressed blob store and its interfaces.

As in containerd, the store is split into small interfaces that callers
depend on separately — a :class:`Provider` reads, an :class:`Ingester`
writes, a :class:`Manager` describes, relabels and deletes committed blobs,
an :class:`IngestManager` looks after writes in progress — and a
:class:`Store` is all four.  Three implementations share them: the local,
namespace-unaware store on disk (:mod:`pycontainerd.content.local`), the
namespaced view in metadata (:mod:`pycontainerd.metadata.content`), and the
client's proxy over gRPC (``client.content``).

A write goes through a :class:`Writer` identified by a *ref* (any string the
caller picks, e.g. ``layer-sha256:...``): bytes are appended and hashed as
they come, and :meth:`Writer.commit` checks the size and digest the caller
expects before the blob becomes visible under its digest.  A write that is
interrupted stays behind as an ingest and can be resumed from its offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, runtime_checkable

from pycontainerd import errdefs, labels
from pycontainerd.digest import validate as validate_digest
from pycontainerd.errdefs import q
from pycontainerd.filters import FieldFunc
from pycontainerd.times import EPOCH

__all__ = [
    "MAX_REF_LENGTH",
    "READ_CHUNK",
    "FileReaderAt",
    "Info",
    "IngestManager",
    "Ingester",
    "Manager",
    "Provider",
    "ReaderAt",
    "Status",
    "Store",
    "Writer",
    "adapt_info",
    "adapt_status",
    "open_writer",
    "read_blob",
    "read_chunks",
    "update_labels",
    "validate_labels",
    "validate_ref",
    "write_blob",
]

#: How much one read (and one Read response message) carries: containerd's 1 MiB.
READ_CHUNK = 1 << 20

#: Refs are free-form but end up in files, rows and messages; keep them reasonable.
MAX_REF_LENGTH = 4096


def validate_ref(ref: str, *, limit: int = MAX_REF_LENGTH) -> None:
    """InvalidArgument for an empty or oversized ingest ref."""
    if not ref:
        raise errdefs.InvalidArgument("ref must not be empty")
    if len(ref) > limit:
        raise errdefs.InvalidArgument(f"ref longer than {limit} characters")


@dataclass(frozen=True, slots=True)
class Info:
    """A committed blob."""

    digest: str
    size: int
    created_at: dt.datetime = EPOCH
    updated_at: dt.datetime = EPOCH
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Status:
    """A write in progress (an *ingest*)."""

    ref: str
    offset: int
    total: int = 0
    started_at: dt.datetime = EPOCH
    updated_at: dt.datetime = EPOCH
    expected: str = ""


# --------------------------------------------------------------------------
# Interfaces


@runtime_checkable
class ReaderAt(Protocol):
    """Random access to one committed blob."""

    @property
    def size(self) -> int: ...

    async def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``; fewer only at the end of the blob."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class FileReaderAt(ReaderAt, Protocol):
    """A :class:`ReaderAt` over a blob kept as a local file (the local store's).

    A caller that reads a whole blob from blocking code (applying a layer
    in a worker thread) asks for the file instead of sending every chunk
    through :meth:`~ReaderAt.read_at` and the event loop.  Readers of other
    stores (a proxy) do not offer it; callers check with ``isinstance``.
    """

    def open_file(self) -> BinaryIO:
        """The blob as a new unbuffered file at offset 0, for the caller to
        close; blocking.  It reads the blob this reader opened, even if the
        name has since been removed."""
        ...


class Provider(Protocol):
    async def reader_at(self, digest: str) -> ReaderAt:
        """Open a committed blob; NotFound when it is not there (or not visible)."""
        ...


class Writer(Protocol):
    """One ingest, held exclusively until it is committed or closed."""

    @property
    def ref(self) -> str: ...

    @property
    def digest(self) -> str:
        """The digest of the bytes written so far."""
        ...

    async def status(self) -> Status: ...

    async def write(self, data: bytes) -> int:
        """Append ``data`` at the current offset; returns ``len(data)``."""
        ...

    async def commit(
        self, size: int = 0, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> str:
        """Verify ``size`` (if > 0) and ``expected`` (if set), then make the blob
        visible under its digest, which is returned.  FailedPrecondition on a
        mismatch (nothing becomes visible), AlreadyExists when the blob is
        already there."""
        ...

    async def truncate(self, size: int) -> None:
        """Restart the ingest from ``size`` (only 0 is supported)."""
        ...

    async def close(self) -> None:
        """Release the ingest without committing; it stays resumable."""
        ...


class Ingester(Protocol):
    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> Writer:
        """Open (or resume) the ingest ``ref``.

        Unavailable when another writer holds ``ref``; AlreadyExists when
        ``expected`` names a blob that is already committed.
        """
        ...


class Manager(Protocol):
    async def info(self, digest: str) -> Info: ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Change labels: no paths or ``labels`` replaces them all,
        ``labels.KEY`` sets one key (or removes it when absent or empty)."""
        ...

    def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Every blob matching any of ``filters`` (containerd's filter syntax)."""
        ...

    async def delete(self, digest: str) -> None: ...


class IngestManager(Protocol):
    async def status(self, ref: str) -> Status: ...

    async def list_statuses(self, *filters: str) -> list[Status]: ...

    async def abort(self, ref: str) -> None: ...


class Store(Provider, Ingester, Manager, IngestManager, Protocol):
    """The whole content store."""


# --------------------------------------------------------------------------
# Filters: the fields containerd's adaptors expose


def adapt_info(info: Info) -> FieldFunc:
    """``digest`` and ``labels.<key>`` of a blob (``size`` is never matched, as in containerd)."""

    def field(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "digest":
            return info.digest, True
        if head == "labels":
            if not info.labels:
                return "", False
            key = ".".join(path[1:])
            value = info.labels.get(key)
            return ("", False) if value is None else (value, True)
        return "", False

    return field


def adapt_status(status: Status) -> FieldFunc:
    """``ref`` of an ingest."""

    def field(path: Sequence[str]) -> tuple[str, bool]:
        if path and path[0] == "ref":
            return status.ref, True
        return "", False

    return field


# --------------------------------------------------------------------------
# Labels


def update_labels(
    digest: str,
    current: Mapping[str, str],
    new: Mapping[str, str],
    fieldpaths: Sequence[str],
) -> dict[str, str]:
    """Apply an update mask to a blob's labels; returns the resulting labels.

    Raises InvalidArgument for a path other than ``labels``/``labels.KEY``
    and for a label over the size limit.  Empty values are never stored.
    """
    result = labels.apply_update(f"content info {q(digest)}", current, new, fieldpaths)
    validate_labels(result)
    return result


def validate_labels(lbls: Mapping[str, str] | None) -> None:
    """Check labels the way containerd checks ``content.Info`` labels."""
    try:
        labels.validate_all(lbls)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"info.Labels: {exc.message}") from None


# --------------------------------------------------------------------------
# Helpers over the interfaces (containerd's content/helpers.go)


async def read_chunks(
    provider: Provider, digest: str, *, offset: int = 0, size: int = 0, chunk: int = READ_CHUNK
) -> AsyncIterator[bytes]:
    """The bytes of a blob from ``offset``, ``size`` of them (0: to the end), in chunks."""
    reader = await provider.reader_at(digest)
    try:
        end = reader.size if size <= 0 else min(reader.size, offset + size)
        pos = max(offset, 0)
        while pos < end:
            data = await reader.read_at(pos, min(chunk, end - pos))
            if not data:
                raise errdefs.Unknown(f"content {digest}: unexpected end of blob at {pos}")
            pos += len(data)
            yield data
    finally:
        await reader.close()


async def read_blob(provider: Provider, digest: str) -> bytes:
    """A whole blob in memory (for manifests and configs; mind the size)."""
    return b"".join([c async for c in read_chunks(provider, digest)])


async def open_writer(
    ingester: Ingester,
    ref: str,
    *,
    total: int = 0,
    expected: str = "",
    timeout: float = 10.0,
) -> Writer:
    """Open a writer, waiting (with backoff) while another writer holds ``ref``.

    containerd's OpenWriter: a lock held by a live writer is worth waiting
    for; Unavailable is raised again once ``timeout`` seconds have passed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.001
    while True:
        try:
            return await ingester.writer(ref, total=total, expected=expected)
        except errdefs.Unavailable:
            if loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def _aiter_bytes(
    data: bytes | Iterable[bytes] | AsyncIterable[bytes],
) -> AsyncIterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for i in range(0, len(view), READ_CHUNK):
            yield bytes(view[i : i + READ_CHUNK])
    elif isinstance(data, AsyncIterable):
        async for chunk in data:
            yield chunk
    else:
        for chunk in data:
            yield chunk


async def write_blob(
    ingester: Ingester,
    ref: str,
    data: bytes | Iterable[bytes] | AsyncIterable[bytes],
    *,
    size: int = 0,
    expected: str = "",
    labels: Mapping[str, str] | None = None,
) -> None:
    """Write a whole blob through ``ref``, as containerd's ``content.WriteBlob``.

    Resumes an interrupted ingest (the first ``offset`` bytes of ``data`` are
    skipped, not re-sent) and treats an already-present blob as success.
    """
    if expected:
        validate_digest(expected)
    try:
        writer = await open_writer(ingester, ref, total=size, expected=expected)
    except errdefs.AlreadyExists:
        return
    try:
        start = skip = (await writer.status()).offset
        copied = 0
        async for chunk in _aiter_bytes(data):
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk = chunk[skip:]
                skip = 0
            await writer.write(chunk)
            copied += len(chunk)
        if skip:
            raise errdefs.FailedPrecondition(
                f"unable to resume write to {ref}: input is shorter than the ingest"
            )
        if size and start + copied < size:
            raise errdefs.FailedPrecondition(
                "failed to read expected number of bytes: unexpected EOF"
            )
        with contextlib.suppress(errdefs.AlreadyExists):
            await writer.commit(size, expected, labels=labels)
    finally:
        await writer.close()
