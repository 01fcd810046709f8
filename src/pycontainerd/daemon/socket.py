"""Unix socket paths the daemon listens on: safe to create, never stolen.

A socket file left by a daemon that died is removed; one that a live daemon
still answers on is never taken over; anything that is not a socket is left
alone and reported.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

__all__ = ["AddressInUse", "finish_socket", "prepare_socket"]

#: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_PATH = 107


class AddressInUse(Exception):
    """The socket belongs to a daemon that is still serving."""


def prepare_socket(path: Path) -> None:
    """Make ``path`` ready to bind: parent dirs created, a stale socket removed."""
    if len(os.fsencode(path)) > MAX_PATH:
        raise ValueError(f"{path}: socket path longer than {MAX_PATH} bytes")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ValueError(f"{path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # stale: nobody listens any more
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise AddressInUse(f"{path}: address already in use by a running daemon")


def finish_socket(path: Path, uid: int, gid: int, mode: int = 0o660) -> None:
    """Give a freshly bound socket its mode and owner."""
    os.chmod(path, mode)
    if uid or gid:
        os.chown(path, uid, gid)
