"""Applying a layer while it downloads (the transfer service's pulls).

The pull asks for a sink before a layer's first byte is fetched.  The
layer's place in its image is not known yet (the config, which names the
diff IDs, is fetched beside it), so a :class:`StreamSink` waits, before
taking the first chunk, until the unpacker has seen the image's job (at
most :data:`DECISION_TIMEOUT`).  The bottom layer, or one whose parent is
already committed, then streams: a snapshot is prepared on its parent and
a worker thread applies the bytes as they come through a pipe (the pull's
writes wait on the pipe, so memory stays at one pipe's worth).  Any other
layer lets its bytes pass, and the unpacker applies it from the content
store once it and its parent are in.

The streamed bytes are unverified until the pull has them all: the
registry fetcher digests every chunk it hands over (a sink is made only
for a download from byte 0, which the fetcher verifies whole) and fails
the pull when the blob does not match its descriptor, so
:meth:`StreamSink.close`, which commits the snapshot, is never reached
with wrong bytes.  The applier therefore only counts the compressed bytes
(hashing them again cost a sha256 of the blob on the apply's critical
path).  The diff ID it computes must match the config's before the
snapshot is committed, as for a layer applied from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pycontainerd import errdefs
from pycontainerd.diff._blocking import run_blocking
from pycontainerd.diff.apply import apply_stream
from pycontainerd.distribution import pull as pulling
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount

__all__ = ["DECISION_TIMEOUT", "Placement", "StreamSink"]

log = logging.getLogger(__name__)

#: How long a layer's first chunk waits to learn where the layer goes.
DECISION_TIMEOUT = 2.0
#: The pipe between the download and the applier (Linux's default is 64 KiB).
PIPE_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a streamed layer goes: prepared and committed by the callbacks."""

    chain: str
    diff_id: str
    #: Prepare the extraction snapshot: (key, mounts).
    prepare: Callable[[], Awaitable[tuple[str, list[Mount]]]]
    #: Commit the extraction snapshot ``key`` as ``chain``; False if another made it first.
    commit: Callable[[str], Awaitable[bool]]
    remove: Callable[[str], Awaitable[None]]


class StreamSink:
    """A pull's :class:`~pycontainerd.distribution.pull.LayerSink` that applies
    the layer as it arrives when :attr:`decide` finds it a place."""

    def __init__(self, desc: Descriptor, decide: Callable[[], Awaitable[Placement | None]]) -> None:
        self._desc = desc
        self._decide = decide
        self._decided = False
        self._placement: Placement | None = None
        self._key = ""
        self._pipe: asyncio.WriteTransport | None = None
        self._protocol: _Drain | None = None
        self._applying: asyncio.Future[Descriptor] | None = None
        #: The snapshotter it streams into (set by the unpacker's placement).
        self.snapshotter = ""
        #: Set once the layer is committed (True) or found there (False);
        #: the unpacker awaits it instead of applying the layer itself.
        self.result: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.result.add_done_callback(lambda f: f.cancelled() or f.exception())

    @property
    def streaming(self) -> bool:
        return self._placement is not None

    async def _start(self) -> None:
        self._decided = True
        try:
            async with asyncio.timeout(DECISION_TIMEOUT):
                placement = await self._decide()
        except TimeoutError:
            placement = None
        if placement is None:
            return
        key, mounts = await placement.prepare()
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # room for a whole chunk, where allowed
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        try:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.connect_write_pipe(
                _Drain, os.fdopen(write_fd, "wb", buffering=0)
            )
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            await placement.remove(key)
            raise
        self._placement, self._key = placement, key
        self._pipe, self._protocol = transport, protocol
        desc = self._desc

        def work(cancelled: Any) -> Descriptor:
            with open(read_fd, "rb", buffering=0) as raw:
                # The fetcher digests each chunk it hands the pull (which
                # pipes it here) and fails the pull, so close() never
                # commits, unless the whole blob matches.
                return apply_stream(raw, desc, mounts, cancelled, verified_elsewhere=True)

        self._applying = asyncio.ensure_future(run_blocking(work))

    async def write(self, chunk: bytes) -> None:
        if not self._decided:
            await self._start()
        if self._pipe is None or self._protocol is None:
            return
        assert self._applying is not None
        try:
            if self._applying.done():
                await self._applying  # it stopped early: its error ends the pull
            self._pipe.write(chunk)
            await self._protocol.drain()
        except Exception:
            if self._applying.done() and not self._applying.cancelled():
                await self._applying  # the applier's own reason, not the broken pipe
            raise

    async def close(self) -> None:
        """Every byte is in and the blob verified: finish the apply, commit."""
        if self._placement is None:
            self.result.cancel()
            return
        assert self._pipe is not None and self._applying is not None
        self._pipe.close()
        try:
            applied = await self._applying
            if applied.digest != self._placement.diff_id:
                raise errdefs.FailedPrecondition(
                    f"wrong diff id calculated on extraction {applied.digest!r} "
                    f"(the image config says {self._placement.diff_id!r})"
                )
            committed = await self._placement.commit(self._key)
            log.debug(
                "layer applied while downloading",
                extra={"dgst": self._desc.digest, "chain": self._placement.chain},
            )
        except BaseException as exc:
            await self._placement.remove(self._key)
            if not self.result.done():
                self.result.set_exception(exc)
            raise
        self.result.set_result(committed)

    async def abort(self, error: BaseException) -> None:
        if self._placement is None:
            self.result.cancel()
            return
        assert self._pipe is not None and self._applying is not None
        self._pipe.abort()
        self._applying.cancel()
        with contextlib.suppress(BaseException):
            await self._applying
        await self._placement.remove(self._key)
        if not self.result.done():
            self.result.set_exception(error)


class _Drain(asyncio.Protocol):
    """Flow control of the pipe: ``drain`` waits while the applier is behind."""

    def __init__(self) -> None:
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or errdefs.Unavailable("the layer applier stopped reading")
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._paused:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            if self._lost is not None:
                raise self._lost


# A sink must be one of these, as the pull expects.
_: type[pulling.LayerSink] = StreamSink
