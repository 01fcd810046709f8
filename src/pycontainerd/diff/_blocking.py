"""Running tar work off the event loop, and the byte streams it reads and writes.

Applying or writing a layer is seconds of blocking file and CPU work.  It
runs on a pool of its own, so a long unpack never takes the threads the
content store's reads and writes use (and a worker waiting on one of those
cannot deadlock the pool it runs on).  A worker is handed a
:class:`threading.Event` that is set when the caller is cancelled: the
streams below check it, so an abandoned unpack stops at its next read
instead of writing into a snapshot the client is already removing, and the
caller waits for the worker to stop before it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pycontainerd import errdefs

__all__ = [
    "CHUNK",
    "DigestReader",
    "DigestWriter",
    "LoopWriter",
    "ReaderAtStream",
    "check",
    "on_loop",
    "run_blocking",
]

T = TypeVar("T")

#: Bytes per read or write between the stages of a layer pipeline.
CHUNK = 1 << 20

_POOL = ThreadPoolExecutor(
    max_workers=max(4, 2 * (os.cpu_count() or 1)), thread_name_prefix="pycontainerd-diff"
)


async def run_blocking(fn: Callable[[threading.Event], T]) -> T:
    """Run ``fn(cancelled)`` on the diff pool and return its result.

    When the awaiting task is cancelled the event is set and the worker is
    waited for before the cancellation goes on, so nothing it holds (a temp
    mount, an open ingest) outlives the call.
    """
    cancelled = threading.Event()
    fut = asyncio.get_running_loop().run_in_executor(_POOL, fn, cancelled)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancelled.set()
        while not fut.done():
            try:
                await asyncio.wait([fut])
            except asyncio.CancelledError:
                continue
        if not fut.cancelled():
            fut.exception()  # retrieved: the worker's error is not the caller's any more
        raise


def check(cancelled: threading.Event | None) -> None:
    if cancelled is not None and cancelled.is_set():
        raise errdefs.Canceled("diff canceled")


def on_loop(
    coro: Coroutine[Any, Any, T],
    loop: asyncio.AbstractEventLoop,
    cancelled: threading.Event | None,
) -> T:
    """Run ``coro`` on ``loop`` from a worker and wait for it, giving up when
    the call is cancelled (the loop may be shutting down and never answer)."""
    try:
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # the loop is closed: the daemon is going away
        coro.close()
        raise errdefs.Canceled("diff canceled: event loop closed") from None
    while True:
        try:
            return fut.result(timeout=0.5)
        except concurrent.futures.TimeoutError:
            if cancelled is not None and cancelled.is_set():
                fut.cancel()
                raise errdefs.Canceled("diff canceled") from None


class _BackgroundHash:
    """A hash fed from another thread, so hashing a layer overlaps with
    unpacking it (``update`` releases the GIL on large buffers).  The queue
    is bounded: the reader never gets more than a few chunks ahead."""

    def __init__(self, algorithm: str) -> None:
        self._hash = hashlib.new(algorithm)
        self._queue: queue.Queue[bytes | None] = queue.Queue(16)
        self._thread = threading.Thread(
            target=self._run, name="pycontainerd-diff-hash", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.stop()
        return self._hash.hexdigest()


class _NoHash:
    """The hash of a :class:`DigestReader` that only counts."""

    def update(self, data: Any) -> None:
        pass

    def hexdigest(self) -> str:
        raise RuntimeError("a counting reader has no digest")


class DigestReader(io.RawIOBase):
    """Reads through to ``raw``, counting and hashing every byte (sha256
    unless another of the digest algorithms is named; with ``algorithm=""``
    it only counts, for bytes verified elsewhere).  With ``background`` the
    hashing runs in a thread of its own; close the reader when done."""

    def __init__(
        self,
        raw: Any,
        cancelled: threading.Event | None = None,
        *,
        algorithm: str = "sha256",
        background: bool = False,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._algorithm = algorithm
        self._background = background and bool(algorithm)
        self._hash: Any
        if not algorithm:
            self._hash = _NoHash()
        elif background:
            self._hash = _BackgroundHash(algorithm)
        else:
            self._hash = hashlib.new(algorithm)
        self._cancelled = cancelled
        self.count = 0

    @property
    def digest(self) -> str:
        return f"{self._algorithm}:{self._hash.hexdigest()}"

    def close(self) -> None:
        if self._background:
            self._hash.stop()
        super().close()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        check(self._cancelled)
        data: bytes = self._raw.read(-1 if size is None else size)
        if data:
            self._hash.update(data)
            self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        check(self._cancelled)
        view = memoryview(buffer).cast("B")
        readinto = getattr(self._raw, "readinto", None)
        if readinto is not None:
            n: int | None = readinto(view)
        else:
            data = self._raw.read(len(view))
            n = len(data)
            view[:n] = data
        if not n:
            return 0
        # A background hash gets a copy: the caller reuses its buffer.
        self._hash.update(bytes(view[:n]) if self._background else view[:n])
        self.count += n
        return n

    def drain(self) -> None:
        """Read to the end (trailing bytes count toward the digest too)."""
        while self.read(CHUNK):
            pass


class DigestWriter(io.RawIOBase):
    """Writes through to ``raw``, counting and hashing (sha256) every byte."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self.count = 0

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        self._hash.update(data)
        self._raw.write(data)
        self.count += n
        return n


class LoopWriter(io.RawIOBase):
    """A sink in a worker thread that hands ``CHUNK``-sized pieces to an async
    ``write`` on the event loop, waiting for each: the loop's speed is the
    worker's speed, so nothing piles up in memory.

    The last piece goes with :meth:`finish`; after :meth:`discard` (the
    producer failed) writes are dropped, so a compressor closed on the way
    out of an error sends nothing more.
    """

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[Any]],
        loop: asyncio.AbstractEventLoop,
        cancelled: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self._write = write
        self._loop = loop
        self._cancelled = cancelled
        self._buf = bytearray()
        self._discarded = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        if self._discarded:
            return n
        self._buf += data
        if len(self._buf) >= CHUNK:
            self._send()
        return n

    def finish(self) -> None:
        """Send what is buffered."""
        if self._buf and not self._discarded:
            self._send()

    def discard(self) -> None:
        self._discarded = True
        self._buf.clear()

    def _send(self) -> None:
        check(self._cancelled)
        chunk = bytes(self._buf)
        self._buf.clear()
        on_loop(_call(self._write, chunk), self._loop, self._cancelled)


async def _call(write: Callable[[bytes], Awaitable[Any]], chunk: bytes) -> None:
    await write(chunk)


class ReaderAtStream(io.RawIOBase):
    """A blob read sequentially, in a worker thread, from an async ``read_at``
    that runs on the event loop (for content stores with no local file)."""

    def __init__(
        self,
        read_at: Callable[[int, int], Awaitable[bytes]],
        size: int,
        loop: asyncio.AbstractEventLoop,
        cancelled: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self._cancelled = cancelled
        self._read_at = read_at
        self._size = size
        self._loop = loop
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        left = self._size - self._pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        data = on_loop(
            _read(self._read_at, self._pos, min(n, CHUNK * 4)), self._loop, self._cancelled
        )
        if not data:
            raise errdefs.Unknown(f"unexpected end of blob at {self._pos} of {self._size}")
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


async def _read(read_at: Callable[[int, int], Awaitable[bytes]], offset: int, n: int) -> bytes:
    return await read_at(offset, n)
