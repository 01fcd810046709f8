"""Reading an image's /etc/passwd and /etc/group from its mounted root.

A container's ``USER`` names an account of the image, so the spec needs
the image's own account files (containerd's ``WithUser``/``WithUsername``
read them from a temporary read-only mount of the rootfs).  The image is
untrusted: its files may be symlinks aiming at the host's (``/etc/shadow``),
devices or FIFOs.  Symlinks are therefore resolved as if the mounted root
were ``/`` (the scoping containerd's ``fs.RootPath`` applies), never
followed out of it, and only a regular file of bounded size is read.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from pycontainerd._openat import open_regular

__all__ = ["MAX_ACCOUNTS_FILE", "read_accounts", "read_in_root"]

log = logging.getLogger("pycontainerd.images")

#: Largest /etc/passwd or /etc/group read from an image.
MAX_ACCOUNTS_FILE = 1 << 20

# The kernel's own limit on symlinks in one lookup.
_MAX_SYMLINKS = 40


def _clean(parts: list[str]) -> list[str]:
    """Path components with ``.``/empty dropped and ``..`` applied, stopping at the root."""
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return out


def _resolve(root_fd: int, path: str) -> list[str] | None:
    """``path``'s components inside the root with every symlink resolved in
    the root; None when some component is missing or not a directory."""
    todo = _clean(path.split("/"))
    done: list[str] = []
    hops = 0
    while todo:
        name = todo.pop(0)
        # Every prefix in ``done`` is a real directory, so this lstat
        # follows no symlink; the mount is read-only and private to us.
        try:
            st = os.lstat("/".join([*done, name]), dir_fd=root_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink("/".join([*done, name]), dir_fd=root_fd)
            base = [] if target.startswith("/") else done
            todo = _clean([*base, *target.split("/"), *todo])
            done = []
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            return None
        done.append(name)
    return done


def read_in_root(root: str | Path, path: str, limit: int = MAX_ACCOUNTS_FILE) -> str | None:
    """The text of the regular file ``path`` under ``root`` (at most ``limit``
    bytes), symlinks scoped to ``root``; None when it is absent or not a
    regular file."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            parts = _resolve(root_fd, path)
        except OSError as exc:
            log.warning("image file %s: %s; treated as absent", path, exc.strerror)
            return None
        if not parts:
            return None
        # Never open a device or FIFO of the image: opening alone can act.
        # O_PATH first, then only the regular inode it names is opened.
        fd = open_regular(root_fd, "/".join(parts))
        if fd is None:
            log.warning("image file %s is not a regular file; treated as absent", path)
            return None
        try:
            data = bytearray()
            while len(data) < limit and (chunk := os.read(fd, limit - len(data))):
                data += chunk
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
    return data.decode("utf-8", "replace")


def read_accounts(root: str | Path) -> tuple[str | None, str | None]:
    """The image's ``/etc/passwd`` and ``/etc/group`` under ``root`` (None when absent)."""
    return read_in_root(root, "/etc/passwd"), read_in_root(root, "/etc/group")
