"""The local content store: blobs and ingests in a directory, no namespaces.

Layout under the plugin root (``<root>/io.containerd.content.v1.content``),
containerd's own::

    blobs/<algorithm>/<hex>          committed blobs, read-only, named by digest
    ingest/<sha256(ref)>/            one directory per write in progress
        ref                          the ref, as given (the dir name is its hash)
        data                         the bytes received so far
        startedat, updatedat         RFC 3339 timestamps
        total                        the expected size, when one was given

A write appends to ``ingest/.../data`` while hashing incrementally; commit
fsyncs the data, checks size and digest, renames it into ``blobs/`` and
fsyncs the directory, so a blob is either absent or complete — never
partial.  An ingest left behind by a crash is resumed by re-hashing its data.
Only one writer may hold a ref at a time (an in-process lock, as containerd's),
and at most :data:`MAX_OPEN_INGESTS` writers are open at once: each holds a
file, a hash state and a worker's attention, so a client opening write
streams without end gets ResourceExhausted instead (containerd has no cap).

Labels are not kept here in the daemon (metadata owns them); a
:class:`MemoryLabelStore` can be given for standalone use.  All file work
runs in threads: nothing here blocks the event loop on I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import random
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from pycontainerd import errdefs, filters, plugin
from pycontainerd._tree import remove_tree
from pycontainerd.content import (
    MAX_REF_LENGTH,
    Info,
    Status,
    adapt_info,
    adapt_status,
    update_labels,
    validate_labels,
    validate_ref,
)
from pycontainerd.digest import ALGORITHMS
from pycontainerd.digest import validate as validate_digest
from pycontainerd.errdefs import q

__all__ = ["LabelStore", "LocalStore", "MemoryLabelStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_READ_BUF = 1 << 20

#: Blobs this small (manifests, configs, indexes) are read whole as they are
#: opened; a reader holds them until it is closed.
SMALL_BLOB = 64 << 10
#: What writers hash with, whatever the expected digest says (as containerd).
CANONICAL = "sha256"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _from_ns(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)


def _validate_ref(ref: str) -> None:
    # Room for the namespace prefix metadata puts before a user's ref.
    validate_ref(ref, limit=2 * MAX_REF_LENGTH)


# --------------------------------------------------------------------------
# Labels (standalone use only)


class LabelStore(Protocol):
    def get(self, digest: str) -> dict[str, str]: ...

    def set(self, digest: str, labels: Mapping[str, str]) -> None: ...

    def delete(self, digest: str) -> None: ...


class MemoryLabelStore:
    """Labels in a dict: enough for tests and embedded use of the local store."""

    def __init__(self) -> None:
        self._labels: dict[str, dict[str, str]] = {}

    def get(self, digest: str) -> dict[str, str]:
        return dict(self._labels.get(digest, {}))

    def set(self, digest: str, labels: Mapping[str, str]) -> None:
        if labels:
            self._labels[digest] = dict(labels)
        else:
            self._labels.pop(digest, None)

    def delete(self, digest: str) -> None:
        self._labels.pop(digest, None)


# --------------------------------------------------------------------------
# Small file helpers (run in threads)


def _remove_quietly(path: Path) -> None:
    """Remove an ingest directory; what stays is only disk, never a wrong answer."""
    with contextlib.suppress(OSError):
        remove_tree(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _read_time(path: Path) -> dt.datetime:
    return dt.datetime.fromisoformat(path.read_text().strip())


def _ingest_status(path: Path) -> Status:
    """Status of the ingest directory ``path``; FileNotFoundError if it is gone."""
    st = os.stat(path / "data")
    ref = (path / "ref").read_text()
    started = _read_time(path / "startedat")
    updated = _read_time(path / "updatedat")
    # updatedat is written on close, not per write: the data's mtime may be newer.
    mtime = _from_ns(st.st_mtime_ns)
    if mtime > updated:
        updated = mtime
    try:
        total = int((path / "total").read_text())
    except (FileNotFoundError, ValueError):
        total = 0
    return Status(ref=ref, offset=st.st_size, total=total, started_at=started, updated_at=updated)


class _Reader:
    """A committed blob opened for reading; reads run in threads."""

    __slots__ = ("_fd", "_head", "_size")

    def __init__(self, fd: int, size: int, head: bytes = b"") -> None:
        self._fd: int | None = fd
        self._size = size
        #: The whole blob when it is small (read as it was opened: a manifest
        #: or a config costs one trip to a thread, not two).
        self._head = head

    @property
    def size(self) -> int:
        return self._size

    def _pread(self, offset: int, size: int) -> bytes:
        fd = self._fd
        if fd is None:
            raise errdefs.FailedPrecondition("reader is closed")
        return os.pread(fd, size, offset)

    async def read_at(self, offset: int, size: int) -> bytes:
        if offset < 0:
            raise errdefs.InvalidArgument(f"negative offset {offset}")
        size = min(size, self._size - offset)
        if size <= 0:
            return b""
        if self._head:
            return self._head[offset : offset + size]
        return await asyncio.get_running_loop().run_in_executor(None, self._pread, offset, size)

    def open_file(self) -> BinaryIO:
        fd = self._fd
        if fd is None:
            raise errdefs.FailedPrecondition("reader is closed")
        # Reopened through /proc, not dup'ed: the new file has an offset of its
        # own, and it is the inode this reader holds whatever the path now names.
        return open(f"/proc/self/fd/{fd}", "rb", buffering=0)

    async def close(self) -> None:
        self._head = b""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


# --------------------------------------------------------------------------
# The writer


class _Writer:
    """One ingest held under the store's lock for its ref.

    Every file operation runs in a thread under ``_mu``, so a close that
    follows a write the caller stopped waiting for (a cancelled stream)
    waits for that write instead of closing the file under it.
    """

    def __init__(
        self,
        store: LocalStore,
        ref: str,
        path: Path,
        fd: int,
        offset: int,
        total: int,
        hasher: Any,
        started_at: dt.datetime,
        updated_at: dt.datetime,
    ) -> None:
        self._store = store
        self._ref = ref
        self._path = path
        self._fd: int | None = fd
        self._offset = offset
        self._total = total
        self._hash = hasher
        self._started_at = started_at
        self._updated_at = updated_at
        self._mu = threading.Lock()
        self._released = False

    @property
    def ref(self) -> str:
        return self._ref

    @property
    def digest(self) -> str:
        return f"{CANONICAL}:{self._hash.hexdigest()}"

    async def status(self) -> Status:
        return Status(
            ref=self._ref,
            offset=self._offset,
            total=self._total,
            started_at=self._started_at,
            updated_at=self._updated_at,
        )

    # -- data

    def _write_sync(self, data: bytes) -> int:
        with self._mu:
            fd = self._fd
            if fd is None:
                raise errdefs.FailedPrecondition(f"ingest {q(self._ref)}: writer is closed")
            view = memoryview(data)
            offset = self._offset
            while view:
                n = os.pwrite(fd, view, offset)
                offset += n
                view = view[n:]
            self._hash.update(data)
            self._offset = offset
            self._updated_at = _now()
            return len(data)

    async def write(self, data: bytes) -> int:
        if not data:
            return 0
        return await asyncio.get_running_loop().run_in_executor(None, self._write_sync, data)

    def _truncate_sync(self) -> None:
        with self._mu:
            fd = self._fd
            if fd is None:
                raise errdefs.FailedPrecondition(f"ingest {q(self._ref)}: writer is closed")
            os.ftruncate(fd, 0)
            self._hash = hashlib.new(CANONICAL)
            self._offset = 0
            self._updated_at = _now()

    async def truncate(self, size: int) -> None:
        if size != 0:
            raise errdefs.InvalidArgument("truncate: unsupported size")
        await asyncio.get_running_loop().run_in_executor(None, self._truncate_sync)

    # -- end of life

    async def _finish(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a final operation in a thread and release the ref lock once it
        is over — even when the caller is cancelled while waiting."""
        fut = asyncio.get_running_loop().run_in_executor(None, fn, *args)

        def done(f: asyncio.Future[T]) -> None:
            if not f.cancelled():
                f.exception()  # retrieved: the awaiting caller may be gone
            self._release()

        fut.add_done_callback(done)
        return await asyncio.shield(fut)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._store._unlock(self._ref)

    def _commit_sync(self, size: int, expected: str) -> str:
        with self._mu:
            fd, self._fd = self._fd, None
            if fd is None:
                raise errdefs.FailedPrecondition("cannot commit on closed writer")
            try:
                os.fsync(fd)
                file_size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > 0 and size != file_size:
                raise errdefs.FailedPrecondition(
                    f"unexpected commit size {file_size}, expected {size}"
                )
            dgst = self.digest
            if expected and expected != dgst:
                raise errdefs.FailedPrecondition(
                    f"unexpected commit digest {dgst}, expected {expected}"
                )
            target = self._store.blob_path(dgst)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                _remove_quietly(self._path)
                raise errdefs.AlreadyExists(f"content {dgst}")
            os.rename(self._path / "data", target)
            _fsync_dir(target.parent)
            # Read-only from here on: a blob never changes under its digest.
            with_perm = stat.S_IMODE(os.stat(target).st_mode) & ~0o333
            os.chmod(target, with_perm)
            os.utime(target)
            _remove_quietly(self._path)
            return dgst

    async def commit(
        self, size: int = 0, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> str:
        try:
            if expected:
                validate_digest(expected)
            validate_labels(labels)
        except errdefs.InvalidArgument:
            # A rejected commit still ends the writer, as in containerd.
            await self.close()
            raise
        dgst = await self._finish(self._commit_sync, size, expected)
        if labels and self._store.labels is not None:
            self._store.labels.set(dgst, labels)
        log.debug("content committed", extra={"ref": self._ref, "digest": dgst})
        return dgst

    def _close_sync(self) -> None:
        with self._mu:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):  # aborted under us
                _write_text(self._path / "updatedat", self._updated_at.isoformat())

    async def close(self) -> None:
        if self._released and self._fd is None:
            return
        await self._finish(self._close_sync)


# --------------------------------------------------------------------------
# The store


#: Writers open at once; pulls open a few each, so this is far past any use.
MAX_OPEN_INGESTS = 1024


class LocalStore:
    """A content store in a local directory (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        labels: LabelStore | None = None,
        max_open_ingests: int = MAX_OPEN_INGESTS,
    ) -> None:
        self.root = root
        self.labels = labels
        self._max_open = max_open_ingests
        for d in (root, root / "blobs", root / "ingest"):
            d.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._locks: dict[str, float] = {}

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- paths

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives; validates the digest first."""
        try:
            validate_digest(digest)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(
                f"cannot calculate blob path from invalid digest: {exc.message}"
            ) from None
        algorithm, _, encoded = digest.partition(":")
        return self.root / "blobs" / algorithm / encoded

    def ingest_path(self, ref: str) -> Path:
        # A hash keeps the name fixed-length and free of anything the ref contains.
        name = hashlib.sha256(ref.encode("utf-8", "surrogateescape")).hexdigest()
        return self.root / "ingest" / name

    # -- locks

    def _try_lock(self, ref: str) -> None:
        since = self._locks.get(ref)
        if since is not None:
            held = time.time() - since
            started = dt.datetime.fromtimestamp(since, dt.UTC)
            raise errdefs.Unavailable(f"ref {ref} locked for {held:.6f}s (since {started})")
        if len(self._locks) >= self._max_open:
            raise errdefs.ResourceExhausted(
                f"ref {ref}: {len(self._locks)} ingests are open, the most the store allows"
            )
        self._locks[ref] = time.time()

    def _unlock(self, ref: str) -> None:
        self._locks.pop(ref, None)

    def locked(self, ref: str) -> bool:
        """Whether a writer currently holds ``ref``."""
        return ref in self._locks

    # -- Manager

    def _info_sync(self, digest: str) -> Info:
        path = self.blob_path(digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}") from None
        return self._info(digest, st)

    def _info(self, digest: str, st: os.stat_result) -> Info:
        return Info(
            digest=digest,
            size=st.st_size,
            created_at=_from_ns(st.st_mtime_ns),
            updated_at=_from_ns(st.st_atime_ns),
            labels=self.labels.get(digest) if self.labels is not None else {},
        )

    async def info(self, digest: str) -> Info:
        return await self._run(self._info_sync, digest)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        if self.labels is None:
            raise errdefs.FailedPrecondition("update not supported on immutable content store")
        current = await self.info(info.digest)
        new = update_labels(info.digest, current.labels, info.labels, fieldpaths)
        self.labels.set(info.digest, new)
        path = self.blob_path(info.digest)
        now = time.time()
        created = current.created_at.timestamp()
        await self._run(os.utime, path, (now, created))
        return Info(
            digest=info.digest,
            size=current.size,
            created_at=current.created_at,
            updated_at=_from_ns(int(now * 1e9)),
            labels=new,
        )

    def _scan_sync(self) -> list[Info]:
        out: list[Info] = []
        for algorithm in sorted(ALGORITHMS):
            directory = self.root / "blobs" / algorithm
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for entry in entries:
                dgst = f"{algorithm}:{entry.name}"
                try:
                    validate_digest(dgst)
                    st = entry.stat(follow_symlinks=False)
                except (errdefs.InvalidArgument, FileNotFoundError):
                    continue
                if stat.S_ISREG(st.st_mode):
                    out.append(self._info(dgst, st))
        return out

    async def walk(self, *filter_strings: str) -> AsyncIterator[Info]:
        flt = await filters.parse_async(filter_strings)
        for info in await filters.select(flt, await self._run(self._scan_sync), adapt_info):
            yield info

    def _delete_sync(self, digest: str) -> None:
        try:
            os.unlink(self.blob_path(digest))
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}") from None

    async def delete(self, digest: str) -> None:
        await self._run(self._delete_sync, digest)
        if self.labels is not None:
            self.labels.delete(digest)

    # -- Provider

    def _open_sync(self, digest: str) -> _Reader:
        path = self.blob_path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}") from None
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, size, 0) if 0 < size <= SMALL_BLOB else b""
            # A blob that changed size under the read is read in place later.
            return _Reader(fd, size, head if len(head) == size else b"")
        except BaseException:
            os.close(fd)
            raise

    async def reader_at(self, digest: str) -> _Reader:
        return await self._run(self._open_sync, digest)

    # -- Ingester

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> _Writer:
        _validate_ref(ref)
        if total < 0:
            raise errdefs.InvalidArgument(f"negative total {total}")
        if expected:
            path = self.blob_path(expected)
            if await self._run(os.path.exists, path):
                raise errdefs.AlreadyExists(f"content {expected}")
        # containerd retries briefly: a writer that is just finishing lets go soon.
        for attempt in range(6):
            try:
                self._try_lock(ref)
                break
            except errdefs.Unavailable:
                if attempt == 5:
                    raise
                await asyncio.sleep(random.random() * (1 << attempt) / 1000)
        try:
            return await self._run(self._open_writer_sync, ref, total)
        except BaseException:
            self._unlock(ref)
            raise

    def _resume(self, path: Path, ref: str, total: int) -> tuple[Status, Any]:
        status = _ingest_status(path)
        if status.ref != ref:
            raise ValueError(f"ref key does not match: {status.ref} != {ref}")
        if total > 0 and status.total > 0 and total != status.total:
            raise ValueError(f"provided total differs from status: {total} != {status.total}")
        # Re-hash what is there: a restart loses the hash state, never the bytes.
        h = hashlib.new(CANONICAL)
        offset = 0
        with open(path / "data", "rb", buffering=0) as f:
            buf = bytearray(_READ_BUF)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
                offset += n
        return Status(
            ref=ref,
            offset=offset,
            total=status.total,
            started_at=status.started_at,
            updated_at=status.updated_at,
        ), h

    def _open_writer_sync(self, ref: str, total: int) -> _Writer:
        path = self.ingest_path(ref)
        resumed: tuple[Status, Any] | None = None
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            try:
                resumed = self._resume(path, ref, total)
            except (OSError, ValueError) as exc:
                log.info(
                    "cannot resume ingest, starting it again",
                    extra={"ref": ref, "path": str(path), "error": str(exc)},
                )
        if resumed is not None:
            status, hasher = resumed
            fd = os.open(path / "data", os.O_WRONLY | os.O_CLOEXEC)
            log.debug("ingest resumed", extra={"ref": ref, "offset": status.offset})
            return _Writer(
                self,
                ref,
                path,
                fd,
                status.offset,
                status.total,
                hasher,
                status.started_at,
                status.updated_at,
            )
        started = _now()
        _write_text(path / "ref", ref)
        _write_text(path / "startedat", started.isoformat())
        _write_text(path / "updatedat", started.isoformat())
        if total > 0:
            _write_text(path / "total", str(total))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path / "total")
        fd = os.open(path / "data", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        return _Writer(self, ref, path, fd, 0, total, hashlib.new(CANONICAL), started, started)

    # -- IngestManager

    def _status_sync(self, ref: str) -> Status:
        path = self.ingest_path(ref)
        try:
            status = _ingest_status(path)
        except FileNotFoundError:
            raise errdefs.NotFound(f"ingest ref {q(ref)}") from None
        if status.ref != ref:
            raise errdefs.NotFound(f"ingest ref {q(ref)}")
        return status

    async def status(self, ref: str) -> Status:
        _validate_ref(ref)
        return await self._run(self._status_sync, ref)

    def _list_statuses_sync(self) -> list[Status]:
        out = []
        for entry in sorted(os.scandir(self.root / "ingest"), key=lambda e: e.name):
            try:
                out.append(_ingest_status(Path(entry.path)))
            except (OSError, ValueError):
                # Being committed or aborted while we look: it does not exist.
                continue
        return out

    async def list_statuses(self, *filter_strings: str) -> list[Status]:
        flt = await filters.parse_async(filter_strings)
        statuses = await self._run(self._list_statuses_sync)
        return await filters.select(flt, statuses, adapt_status)

    def _abort_sync(self, ref: str) -> None:
        path = self.ingest_path(ref)
        if not path.is_dir():
            raise errdefs.NotFound(f"ingest ref {q(ref)}")
        _remove_quietly(path)

    async def abort(self, ref: str) -> None:
        _validate_ref(ref)
        await self._run(self._abort_sync, ref)

    # -- for garbage collection

    def blob_digests(self) -> list[str]:
        """Every committed digest (blocking; call from a thread)."""
        return [info.digest for info in self._scan_sync()]


def _init(ctx: plugin.InitContext) -> LocalStore:
    return LocalStore(ctx.root)


plugin.register(plugin.Registration(type=plugin.PluginType.CONTENT, id="content", init=_init))
