"""Opening safely: ``openat2(2)`` inside a root, and regular files checked before they are opened.

``openat2(2)`` is reached through ctypes: it resolves a path with the kernel
keeping it inside a root.

``RESOLVE_IN_ROOT`` makes the kernel treat the directory fd as ``/`` for the
whole lookup: ``..`` stops there and absolute symlink targets restart there,
the same scoping containerd's ``fs.RootPath`` does in user space, but done
atomically by the kernel.  ``RESOLVE_NO_MAGICLINKS`` refuses ``/proc``-style
links that could jump anywhere.  When the syscall is missing (old kernel,
seccomp) :data:`AVAILABLE` is false and callers walk components themselves.

It sits at the package top, importing nothing of ours, so the layer applier
(``archive``), the mounter (``mount``) and the image account reader
(``images.accounts``) share it without importing each other.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat

__all__ = [
    "AVAILABLE",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "open_regular",
    "openat2",
    "reopen_regular",
]

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

# openat2 has the same number on every architecture that uses the generic
# syscall table, and on x86_64.
_SYS_OPENAT2 = 437 if platform.machine() in ("x86_64", "aarch64", "arm64", "riscv64") else -1


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """Open ``path`` relative to ``dirfd`` with the given resolve flags; raise OSError."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    encoded = os.fsencode(path)
    for _ in range(8):
        fd = _syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(encoded),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        # EAGAIN: a concurrent rename made the kernel give up; it asks us to retry.
        if err not in (errno.EAGAIN, errno.EINTR):
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def _probe() -> bool:
    if _SYS_OPENAT2 < 0:
        return False
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(openat2(root, ".", os.O_PATH, RESOLVE_IN_ROOT))
    except OSError:
        return False
    finally:
        os.close(root)
    return True


#: Whether this kernel (and seccomp profile) lets us use openat2.
AVAILABLE = _probe()


def reopen_regular(path_fd: int, expect: os.stat_result | None = None) -> int | None:
    """An ``O_RDONLY`` fd on the inode the ``O_PATH`` fd ``path_fd`` names.

    None when that inode is not a regular file, or not ``expect``'s.  An
    ``O_PATH`` open never opens the inode itself, so a device node or FIFO
    planted where a file was expected is looked at (``fstat``) and never
    opened: opening some devices acts (a tape rewinds, a FIFO blocks).  The
    reopen goes through the fd's magic link, which reaches that inode only.
    """
    st = os.fstat(path_fd)
    if not stat.S_ISREG(st.st_mode):
        return None
    if expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
        return None
    return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC)


def open_regular(dir_fd: int, name: str, expect: os.stat_result | None = None) -> int | None:
    """:func:`reopen_regular` for entry ``name`` of ``dir_fd``, never following a symlink."""
    path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return reopen_regular(path_fd, expect)
    finally:
        os.close(path_fd)
