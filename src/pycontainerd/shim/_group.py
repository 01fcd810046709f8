"""A shim group's files: its socket, log and lock (shared by the entry point
and the server; only ``os`` and ``fcntl``, which ``start`` loads anyway)."""

from __future__ import annotations

import os

__all__ = ["lock_group", "remove_group"]


def lock_group(path: str) -> int:
    """Hold the lock of the group whose socket is ``path`` (blocking); the
    caller closes the returned fd to release it.

    The lock file is removed with the group's socket (by a server leaving,
    or by ``delete`` after a dead one), so a lock taken on a file somebody
    unlinked meanwhile is no lock: take it again on the file now there."""
    import fcntl

    lock_path = path + ".lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def remove_group(path: str) -> None:
    """Remove a group's socket, log and lock file (the caller holds the lock
    and knows no server listens there any more)."""
    for name in (path, path + ".log", path + ".lock"):
        try:  # noqa: SIM105 -- contextlib is one more import on start's path
            os.unlink(name)
        except FileNotFoundError:
            pass
