"""A daemon embedded in a program that does not run asyncio: the daemon's
event loop in a thread of its own, and sync clients that call it in-process.

    with EmbeddedDaemon(config) as daemon:
        with Client(namespace="default", channel=daemon.channel()) as client:
            print(client.version())

An asyncio program needs none of this: it starts :class:`Server` on its own
loop and passes ``server.channel()`` to ``AsyncClient``.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from pycontainerd.daemon.config import Config
from pycontainerd.daemon.server import Server
from pycontainerd.edge.inprocess_sync import SyncInProcessChannel

__all__ = ["EmbeddedDaemon"]


class EmbeddedDaemon:
    """A :class:`Server` serving from a thread; :meth:`channel` reaches it
    from any other thread.  ``start()`` raises what the daemon's start-up
    raised (``StartupError``...); ``stop()`` closes the channels it made,
    stops the daemon and ends the thread."""

    def __init__(self, config: Config, *, grace: float = 5.0) -> None:
        self.server = Server(config)
        self._grace = grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._channels: list[SyncInProcessChannel] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The daemon's event loop (once started)."""
        if self._loop is None:
            raise RuntimeError("the embedded daemon is not running")
        return self._loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pycontainerd", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def channel(self) -> SyncInProcessChannel:
        """A channel for a sync ``Client``; closed by stop() if not before."""
        channel = self.server.sync_channel(self.loop)
        self._channels.append(channel)
        return channel

    def stop(self) -> None:
        if self._thread is None:
            return
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            try:
                await self.server.start()
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._loop = asyncio.get_running_loop()
                self._started.set()
            await self._stopping.wait()
        finally:
            self._loop = None
            await self.server.stop(self._grace)

    def __enter__(self) -> EmbeddedDaemon:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.stop()
