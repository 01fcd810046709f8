"""The caller's terminal, for a task with a pty (containerd's ``console``).

``pyctr run -t`` puts the terminal in raw mode, so keys reach the
container's shell as typed (Ctrl-C included), restores it on the way out,
and tells the task its size at start and on every ``SIGWINCH``.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import termios
import tty
from typing import Any

from pycontainerd import errdefs

__all__ = ["Console"]


class Console:
    """A terminal by file descriptor: raw mode, reset, and its size."""

    def __init__(self, fd: int) -> None:
        if not os.isatty(fd):
            raise errdefs.InvalidArgument(f"fd {fd} is not a terminal")
        self.fd = fd
        self._saved: list[Any] | None = None

    @classmethod
    def current(cls) -> Console:
        """The first of stdin, stdout and stderr that is a terminal."""
        for stream in (sys.stdin, sys.stdout, sys.stderr):
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                continue
            if os.isatty(fd):
                return cls(fd)
        raise errdefs.InvalidArgument("provided file is not a console")

    def set_raw(self) -> None:
        if self._saved is None:
            self._saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSANOW)

    def reset(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
            self._saved = None

    def size(self) -> tuple[int, int]:
        """(width, height) in characters."""
        packed = fcntl.ioctl(self.fd, termios.TIOCGWINSZ, b"\0" * 8)
        rows, cols, _, _ = struct.unpack("HHHH", packed)
        return cols, rows
