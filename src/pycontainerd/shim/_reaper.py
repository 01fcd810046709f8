"""The shim server's children: spawning, and reaping every exit.

The server is a child subreaper (``PR_SET_CHILD_SUBREAPER``): a container's
init and exec processes, orphaned when ``runc create``/``runc exec`` exit,
become its children, so it learns their exit statuses from ``waitpid``.
One ``SIGCHLD`` handler reaps everything (``waitpid(-1)``): the runc
commands it spawned resolve their futures; every other exit goes to the
listener (the task service), or waits in a bounded table until the pid is
claimed -- a container may exit before its pid file is read.

Exit statuses are containerd's: the exit code, or 128 + the signal.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence

__all__ = ["Exit", "Reaper", "exit_status"]

_PR_SET_CHILD_SUBREAPER = 36
#: Exits of unclaimed pids kept at most (then the oldest are forgotten).
MAX_UNCLAIMED = 4096
#: Where a child's fds wait on their way to 0, 1, 2, 3...
_HIGH_FD = 900


#: Bare command names found on PATH once (a ``posix_spawnp`` tries every
#: PATH entry with an ``execve`` of its own: half a millisecond a runc call).
_found: dict[str, str] = {}


def _spawn_path(name: str) -> str:
    if "/" in name:
        return name
    path = _found.get(name)
    if path is None:
        path = shutil.which(name)
        if path is None:
            return name  # posix_spawnp reports it missing
        _found[name] = path
    return path


def exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 255


class Exit:
    __slots__ = ("pid", "status", "time_ns")

    def __init__(self, pid: int, status: int, time_ns: int) -> None:
        self.pid = pid
        self.status = status
        self.time_ns = time_ns


def set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


class Reaper:
    def __init__(self, on_exit: Callable[[Exit], bool]) -> None:
        #: Called for a pid nobody spawned through us; True if it claimed it.
        self._on_exit = on_exit
        self._spawned: dict[int, asyncio.Future[int]] = {}
        self._unclaimed: collections.OrderedDict[int, Exit] = collections.OrderedDict()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        set_subreaper()
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_status(status)
            future = self._spawned.pop(pid, None)
            if future is not None:
                if not future.done():
                    future.set_result(code)
                continue
            event = Exit(pid, code, time.time_ns())
            if not self._on_exit(event):
                self._unclaimed[pid] = event
                while len(self._unclaimed) > MAX_UNCLAIMED:
                    self._unclaimed.popitem(last=False)

    def claim(self, pid: int) -> Exit | None:
        """The exit of ``pid`` if it was reaped before anyone knew it."""
        return self._unclaimed.pop(pid, None)

    def spawn(
        self,
        argv: Sequence[str],
        stdio: tuple[int, int, int],
        *,
        env: dict[str, str] | None = None,
        extra_fds: Sequence[int] = (),
    ) -> tuple[int, asyncio.Future[int]]:
        """Start ``argv`` with ``stdio`` as fds 0-2 (and ``extra_fds`` as 3,
        4, ...); its pid and a future of its exit status."""
        # Through high fds first, so that no source is overwritten by an
        # earlier dup2 before it is read.
        sources = (*stdio, *extra_fds)
        actions: list[tuple[int, ...]] = [
            (os.POSIX_SPAWN_DUP2, fd, _HIGH_FD + n) for n, fd in enumerate(sources)
        ]
        actions += [(os.POSIX_SPAWN_DUP2, _HIGH_FD + n, n) for n in range(len(sources))]
        actions += [(os.POSIX_SPAWN_CLOSE, _HIGH_FD + n) for n in range(len(sources))]

        def spawn(path: str) -> int:
            return os.posix_spawnp(
                path,
                list(argv),
                os.environ if env is None else env,
                file_actions=actions,
                # Python ignores SIGPIPE; a container must not inherit that.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD),
                setsigmask=(),
            )

        path = _spawn_path(argv[0])
        try:
            pid = spawn(path)
        except FileNotFoundError:
            if path == argv[0]:
                raise
            # Moved since it was found: search PATH again.
            _found.pop(argv[0], None)
            pid = spawn(argv[0])
        # Registered before the loop can run the SIGCHLD handler.
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawned[pid] = future
        return pid, future
