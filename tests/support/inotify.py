"""Watch files for opens with inotify: what tells a real open from an O_PATH look.

The kernel reports ``IN_OPEN`` for every open of a watched inode except an
``O_PATH`` one, so a test can prove that code only looked at a device node
or FIFO and never opened it.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from types import TracebackType

__all__ = ["OpenWatch"]

IN_OPEN = 0x20

_libc = ctypes.CDLL(None, use_errno=True)


class OpenWatch:
    """Counts opens of the inodes added with :meth:`add` (by any path)."""

    def __init__(self) -> None:
        self._fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def add(self, path: str | Path) -> None:
        if _libc.inotify_add_watch(self._fd, os.fsencode(path), IN_OPEN) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))

    def opens(self) -> int:
        """Opens seen since the last call."""
        count = 0
        while True:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return count
            offset = 0
            while offset < len(data):
                # struct inotify_event: int wd; u32 mask, cookie, len; char name[len]
                name_len = int.from_bytes(data[offset + 12 : offset + 16], "little")
                count += 1
                offset += 16 + name_len

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> OpenWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
