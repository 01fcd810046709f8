"""Filesystem work the local snapshotters share: usage, tree copies, probes.

All of it blocks; snapshotters call it from a worker thread.  Trees are
walked with :mod:`pycontainerd._tree` (iterative, fd-based; its bounds apply).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import stat
import struct
from pathlib import Path

from pycontainerd import errdefs
from pycontainerd._openat import open_regular
from pycontainerd._tree import DirCursor, at, open_beneath, walk
from pycontainerd.snapshots import Usage

__all__ = ["copy_tree", "disk_usage", "spread_subdirectories", "supports_d_type"]

log = logging.getLogger(__name__)

#: ioctl FICLONE (linux/fs.h): share the source's extents (btrfs, xfs, ...).
FICLONE = 0x40049409
_COPY_CHUNK = 1 << 30
#: ioctls FS_IOC_GETFLAGS / FS_IOC_SETFLAGS and the flag FS_TOPDIR_FL (linux/fs.h).
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def spread_subdirectories(path: Path) -> bool:
    """Mark ``path`` as the top of unrelated directory trees (``chattr +T``).

    ext2/3/4 then place each new subdirectory -- each snapshot -- in a block
    group of its own choosing (the Orlov allocator's spreading, as for the
    filesystem's root) instead of next to its siblings, and a snapshot's files
    follow its directory.  Without it, every new snapshot's inodes come from
    the same groups as the last ones; on ext4 without a journal the allocator
    skips inodes freed in the last minutes one by one, so a pull right after
    an image was removed spent most of its time there (4x the apply time, as
    measured).  False, and nothing changed, on a filesystem without the flag.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = bytearray(8)  # the kernel reads an int; the ioctl is sized for a long
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf)
        (flags,) = struct.unpack_from("=I", buf)
        if flags & FS_TOPDIR_FL:
            return True
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("=I4x", flags | FS_TOPDIR_FL))
        return True
    except OSError as exc:
        log.debug("%s: directory spreading not available: %s", path, exc.strerror)
        return False
    finally:
        os.close(fd)


def disk_usage(root: Path) -> Usage:
    """Space and inodes under ``root`` (itself included), as containerd counts them.

    Size is allocated blocks (``st_blocks * 512``), not apparent length, and
    a hard-linked inode counts once, however many names it has.  A commit
    measures its snapshot this way, so it is on every unpack's path: each
    directory is listed once and its entries stat'ed relative to it (one
    ``fstatat`` each, no path built), descending with
    :class:`pycontainerd._tree.DirCursor` (iterative, at most its bounded
    number of fds, any depth).
    """
    st = os.lstat(root)
    counted = _Counted(st.st_blocks * 512, 1)
    with DirCursor(root) as cursor:
        pending = [counted.directory(cursor.fd)]
        while pending:
            todo = pending[-1]
            if not todo:
                pending.pop()
                if pending:
                    cursor.up()
                continue
            try:
                cursor.down(todo.pop())
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # gone or replaced since it was listed
                raise
            pending.append(counted.directory(cursor.fd))
    return Usage(size=counted.size, inodes=counted.inodes)


class _Counted:
    """The running totals of :func:`disk_usage`."""

    __slots__ = ("inodes", "linked", "size")

    def __init__(self, size: int, inodes: int) -> None:
        self.size = size
        self.inodes = inodes
        #: (device, inode) of files with more than one name, counted once.
        self.linked: set[tuple[int, int]] = set()

    def directory(self, fd: int) -> list[str]:
        """Count the entries of the directory ``fd``; its subdirectories' names."""
        subdirs = []
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    est = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(est.st_mode):
                    subdirs.append(entry.name)
                elif est.st_nlink > 1:
                    ident = (est.st_dev, est.st_ino)
                    if ident in self.linked:
                        continue
                    self.linked.add(ident)
                self.size += est.st_blocks * 512
                self.inodes += 1
        return subdirs


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
    """Copy xattrs between two paths of :func:`~pycontainerd._tree.at` (never followed)."""
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


def _copy_data(src: int, dst: int, size: int, *, reflink: bool) -> bool:
    """Copy a regular file's bytes (open fds): a reflink when possible, else in the kernel.

    Returns whether reflinks are still worth trying (False once the
    filesystem has said it does not do them).
    """
    if reflink:
        try:
            fcntl.ioctl(dst, FICLONE, src)
            return True
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL):
                reflink = False
    left = size
    while left > 0:
        n = os.copy_file_range(src, dst, min(left, _COPY_CHUNK))
        if n == 0:
            break
        left -= n
    return reflink


def _copy_file(src_dir: int, dst_dir: int, name: str, st: os.stat_result, *, reflink: bool) -> bool:
    src = open_regular(src_dir, name, st)
    if src is None:
        raise errdefs.FailedPrecondition(f"copy source {name!r} changed while it was copied")
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        dst = os.open(name, flags, 0o600, dir_fd=dst_dir)
        try:
            return _copy_data(src, dst, st.st_size, reflink=reflink)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_meta(src_dir: int, src: str, dst_dir: int, dst: str, st: os.stat_result) -> None:
    """Owner, then mode (chown clears set-id bits), xattrs, then times."""
    os.chown(dst, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode), dir_fd=dst_dir)
    _copy_xattrs(at(src_dir, src), at(dst_dir, dst))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False)


def _link_to_first(dst_root: int, first: str, dst_dir: int, name: str) -> None:
    *parents, base = first.split("/")
    pfd = open_beneath(dst_root, parents)
    try:
        os.link(base, name, src_dir_fd=pfd, dst_dir_fd=dst_dir, follow_symlinks=False)
    finally:
        os.close(pfd)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the tree under ``src`` into the existing directory ``dst``.

    Keeps modes, owners, times, xattrs, hard links, symlinks (never
    followed), devices and fifos; regular files are reflinked when the
    filesystem can, otherwise copied in the kernel (``copy_file_range``).
    Both trees are walked through directory fds (:mod:`pycontainerd._tree`),
    so any depth copies; a directory's metadata is set once its contents
    are in, so adding them does not move its times.
    """
    links: dict[tuple[int, int], str] = {}  # inode -> its first copy, below dst
    reflink = True  # until the filesystem says it cannot
    root_st = os.lstat(src)
    if not stat.S_ISDIR(root_st.st_mode):
        raise errdefs.InvalidArgument(f"copy source {src} is not a directory")
    with DirCursor(dst) as out:
        dst_root = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=out.fd)
        try:
            for visit in walk(src):
                st, name = visit.stat, visit.name
                if visit.leaving:
                    out.up()
                    _copy_meta(visit.dir_fd, name, out.fd, name, st)
                    continue
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    os.mkdir(name, 0o700, dir_fd=out.fd)
                    out.down(name)
                    continue
                if stat.S_ISSOCK(mode):  # a socket means nothing without its listener
                    log.debug("not copying socket", extra={"path": visit.path})
                    continue
                if st.st_nlink > 1:
                    first = links.get((st.st_dev, st.st_ino))
                    if first is not None:
                        _link_to_first(dst_root, first, out.fd, name)
                        continue
                    links[(st.st_dev, st.st_ino)] = visit.path
                if stat.S_ISREG(mode):
                    reflink = _copy_file(visit.dir_fd, out.fd, name, st, reflink=reflink)
                elif stat.S_ISLNK(mode):
                    os.symlink(os.readlink(name, dir_fd=visit.dir_fd), name, dir_fd=out.fd)
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    os.mknod(name, mode, st.st_rdev, dir_fd=out.fd)
                else:
                    raise errdefs.InvalidArgument(
                        f"cannot copy {visit.path}: unknown file type {mode:o}"
                    )
                _copy_meta(visit.dir_fd, name, out.fd, name, st)
        finally:
            os.close(dst_root)
        with DirCursor(src) as top:
            _copy_meta(top.fd, ".", out.fd, ".", root_st)
