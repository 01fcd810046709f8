"""The long-lived shim server: one process, many containers.

``start`` hands this process a listening socket (fd 3) and leaves; the
server becomes a child subreaper, serves ``containerd.task.v2.Task`` (and
the private ``pycontainerd.shim.v1.Cleanup/Delete`` that ``delete`` calls)
on it, and forwards task events to ``$TTRPC_ADDRESS``.

It stays while it holds containers.  Once it holds none it lingers
:data:`IDLE_SECONDS` (``PYCONTAINERD_SHIM_IDLE_SECONDS``), so that the
next ``ctr run`` finds it warm -- or less, if its daemon's socket is gone --
then unlinks its socket -- from then on a
``start`` spawns a new server -- and leaves; a Create that reaches it in
that last instant is refused ``UNAVAILABLE``.

``SIGTERM``/``SIGINT`` end the server at once: its containers live on (as
when it is killed) and the daemon cleans them up through ``delete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time

from pycontainerd import ttrpc
from pycontainerd.shim._group import lock_group, remove_group
from pycontainerd.shim._publisher import Publisher
from pycontainerd.shim._service import TaskService

__all__ = ["IDLE_SECONDS", "serve"]

log = logging.getLogger("pycontainerd.shim")

#: How long a server with no containers waits for the next one.
IDLE_SECONDS = float(os.environ.get("PYCONTAINERD_SHIM_IDLE_SECONDS", "300"))
#: How often an empty server looks for its daemon's socket.
DAEMON_CHECK_SECONDS = 2.0
#: The longest the leaving server waits for its last ``runc delete`` runs.
SETTLE_SECONDS = 10.0
#: The listening socket ``start`` passes.
LISTEN_FD = 3


class _Lifetime:
    """Ends the server once it has been empty ``idle`` seconds, or at once
    when it is empty and its daemon's socket is gone (the daemon was
    removed, as after a test: no container of ours is left to wait for)."""

    def __init__(self, idle: float, daemon_socket: str) -> None:
        self.idle = idle
        self.daemon_socket = daemon_socket
        self.done = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    def busy(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def empty(self) -> None:
        if self._timer is None and not self.done.is_set():
            self._deadline = time.monotonic() + self.idle
            self._tick()

    def _tick(self) -> None:
        gone = bool(self.daemon_socket) and not os.path.exists(self.daemon_socket)
        if gone or time.monotonic() >= self._deadline:
            self._timer = None
            self.done.set()
            return
        delay = min(DAEMON_CHECK_SECONDS, max(0.0, self._deadline - time.monotonic()))
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)


async def _serve(flags: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.socket(fileno=LISTEN_FD)
    listener.set_inheritable(False)
    path = listener.getsockname()
    daemon_socket = flags.get("address", "").removeprefix("unix://")
    lifetime = _Lifetime(IDLE_SECONDS, daemon_socket)
    publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""))
    service = TaskService(
        namespace=flags.get("namespace", ""),
        publisher=publisher,
        on_empty=lifetime.empty,
        on_busy=lifetime.busy,
    )
    service.reaper.install(loop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lifetime.done.set)
    server = ttrpc.Server()
    service.register(server)
    await server.start(sock=listener)
    lifetime.empty()
    log.info("shim server serving on %s", path)
    # Set by the idle timer (which runs only while no container is here) or
    # by a signal.
    await lifetime.done.wait()
    service.closing = True
    await service.settle(SETTLE_SECONDS)
    if isinstance(path, str) and path:
        # Under the group's lock, so that a ``start`` either found this
        # server before it left or finds no socket (and spawns a new one).
        lock = lock_group(path)
        try:
            remove_group(path)
        finally:
            os.close(lock)
    await publisher.drain(2.0)
    await server.shutdown(grace=1.0)


def _compile_entry() -> None:
    """Byte-compile the modules ``start`` and ``delete`` load, even under
    ``PYTHONDONTWRITEBYTECODE``: compiling them costs each call milliseconds."""
    import importlib.util
    import py_compile

    shim = os.path.dirname(os.path.abspath(__file__))
    package = os.path.dirname(shim)
    for source in (
        os.path.join(package, "__init__.py"),
        os.path.join(package, "version.py"),
        os.path.join(shim, "__init__.py"),
        os.path.join(shim, "_layout.py"),
        os.path.join(shim, "address.py"),
        os.path.join(shim, "main.py"),
    ):
        cached = importlib.util.cache_from_source(source)
        with contextlib.suppress(OSError):
            if os.stat(cached).st_mtime >= os.stat(source).st_mtime:
                continue
        with contextlib.suppress(OSError, py_compile.PyCompileError):
            py_compile.compile(source, cached, doraise=True)


def serve(flags: dict[str, str]) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if flags.get("debug") == "true" else logging.INFO,
        format="time=%(asctime)s level=%(levelname)s msg=%(message)s",
    )
    os.chdir("/")
    _compile_entry()
    asyncio.run(_serve(flags))
