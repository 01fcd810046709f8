"""Filesystem work the local snapshotters share: usage, tree copies, probes.

All of it blocks; snapshotters call it from a worker thread.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

from pycontainerd import errdefs
from pycontainerd.snapshots import Usage

__all__ = ["copy_tree", "disk_usage", "supports_d_type"]

log = logging.getLogger(__name__)

#: ioctl FICLONE (linux/fs.h): share the source's extents (btrfs, xfs, ...).
FICLONE = 0x40049409
_COPY_CHUNK = 1 << 30


def disk_usage(root: Path) -> Usage:
    """Space and inodes under ``root`` (itself included), as containerd counts them.

    Size is allocated blocks (``st_blocks * 512``), not apparent length, and
    a hard-linked inode counts once, however many names it has.
    """
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [os.fspath(root)]
    st = os.lstat(stack[0])
    seen.add((st.st_dev, st.st_ino))
    size += st.st_blocks * 512
    while stack:
        path = stack.pop()
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                est = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            ident = (est.st_dev, est.st_ino)
            if ident not in seen:
                seen.add(ident)
                size += est.st_blocks * 512
            if stat.S_ISDIR(est.st_mode):
                stack.append(entry.path)
    return Usage(size=size, inodes=len(seen))


def supports_d_type(root: Path) -> bool:
    """Whether ``root``'s filesystem fills in ``d_type`` in directory entries.

    overlayfs needs it to tell whiteouts and directories apart; Python's
    ``scandir`` hides a missing ``d_type`` behind a stat, so ask libc's
    ``readdir`` directly.
    """
    probe = root / ".d_type-probe"
    probe.mkdir(exist_ok=True)
    try:
        (probe / "f").touch()
        return _readdir_types(probe).get("f", 0) == 8  # DT_REG
    finally:
        (probe / "f").unlink(missing_ok=True)
        probe.rmdir()


class _Dirent(ctypes.Structure):
    # glibc's struct dirent on 64-bit Linux.
    _fields_ = [
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    ]


def _readdir_types(path: Path) -> dict[str, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.argtypes = [ctypes.c_char_p]
    libc.opendir.restype = ctypes.c_void_p
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.readdir.restype = ctypes.POINTER(_Dirent)
    libc.closedir.argtypes = [ctypes.c_void_p]
    handle = libc.opendir(os.fsencode(path))
    if not handle:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fspath(path))
    types: dict[str, int] = {}
    try:
        while True:
            ent = libc.readdir(handle)
            if not ent:
                break
            types[os.fsdecode(ent.contents.d_name)] = ent.contents.d_type
    finally:
        libc.closedir(handle)
    return types


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as exc:
            # user.* cannot sit on a symlink; an unsupported namespace is not fatal.
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise


def _copy_data(src: str, dst: str, size: int, *, reflink: bool) -> bool:
    """Copy a regular file's bytes: a reflink when possible, else in the kernel.

    Returns whether reflinks are still worth trying (False once the
    filesystem has said it does not do them).
    """
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if reflink:
                try:
                    fcntl.ioctl(dfd, FICLONE, sfd)
                    return True
                except OSError as exc:
                    if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL):
                        reflink = False
            left = size
            while left > 0:
                n = os.copy_file_range(sfd, dfd, min(left, _COPY_CHUNK))
                if n == 0:
                    break
                left -= n
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    return reflink


def _copy_meta(src: str, dst: str, st: os.stat_result) -> None:
    """Owner, then mode (chown clears set-id bits), xattrs, then times."""
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the tree under ``src`` into the existing directory ``dst``.

    Keeps modes, owners, times, xattrs, hard links, symlinks (never
    followed), devices and fifos; regular files are reflinked when the
    filesystem can, otherwise copied in the kernel (``copy_file_range``).
    """
    links: dict[tuple[int, int], str] = {}
    reflink = True  # until the filesystem says it cannot
    dirs: list[tuple[str, str, os.stat_result]] = []
    root_st = os.lstat(src)
    if not stat.S_ISDIR(root_st.st_mode):
        raise errdefs.InvalidArgument(f"copy source {src} is not a directory")
    dirs.append((os.fspath(src), os.fspath(dst), root_st))
    stack = [(os.fspath(src), os.fspath(dst))]
    while stack:
        sdir, ddir = stack.pop()
        for entry in os.scandir(sdir):
            s = entry.path
            d = os.path.join(ddir, entry.name)
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(d, 0o700)
                dirs.append((s, d, st))
                stack.append((s, d))
                continue
            if stat.S_ISSOCK(mode):  # a socket means nothing without its listener
                log.debug("not copying socket", extra={"path": s})
                continue
            if st.st_nlink > 1:
                first = links.get((st.st_dev, st.st_ino))
                if first is not None:
                    os.link(first, d, follow_symlinks=False)
                    continue
                links[(st.st_dev, st.st_ino)] = d
            if stat.S_ISREG(mode):
                reflink = _copy_data(s, d, st.st_size, reflink=reflink)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                os.mknod(d, mode, st.st_rdev)
            else:
                raise errdefs.InvalidArgument(f"cannot copy {s}: unknown file type {mode:o}")
            _copy_meta(s, d, st)
    # Directories last, deepest first, so adding entries does not move their times.
    for s, d, st in reversed(dirs):
        _copy_meta(s, d, st)
