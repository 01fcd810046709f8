"""Shifting a root filesystem's owners for a user namespace (the work behind
:func:`~pycontainerd.client.with_remapped_snapshot`).

containerd's ``WithRemappedSnapshot`` adds the host uid and gid a user
namespace maps the container's 0 to to every owner in a copy of the image's
root filesystem, so that root in the container owns what root owned in the
image.  As containerd 1.6 does, an owner is *incremented* (``uid + host
uid``), not set, and symlinks are changed themselves, never followed.  Two
things we do that it does not:

* a file with several hard links is shifted once, not once per link (each
  link's ``lstat`` after the first would already see the shifted owner),
  unless overlayfs split a link from it on copy-up;
* the set-user-ID and set-group-ID bits the kernel clears on ``chown`` are
  put back, so ``su``-like binaries in the image still work.

Bounds: the walk is iterative and fd-based (:mod:`pycontainerd._tree`),
never leaves the filesystem it starts on, and remembers only the inodes with
more than one link (and the owner it gave them).  An owner that would pass 2**32 - 2 is refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pycontainerd import _openat, _tree, errdefs

__all__ = ["MAX_ID", "shift_ownership"]

#: The highest id an owner may be shifted to (2**32 - 1 means "unchanged" to chown).
MAX_ID = (1 << 32) - 2

_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID


def shift_ownership(root: str | Path, uid_increment: int, gid_increment: int) -> int:
    """Add the increments to the owner of ``root`` and everything below it;
    the number of inodes changed."""
    for value, what in ((uid_increment, "uid"), (gid_increment, "gid")):
        if not 0 <= value <= MAX_ID:
            raise errdefs.InvalidArgument(f"{what} increment {value} is not a valid id")
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        top_stat = os.fstat(top)
        _shift(top, ".", top_stat, uid_increment, gid_increment, path="/")
        changed = 1
        # Hard-linked inodes -> the owner given them.  A link that shows that
        # owner is the same inode, already shifted; one that does not was
        # split from it (overlayfs without its index copies up one link
        # alone) and is shifted on its own.
        linked: dict[tuple[int, int], tuple[int, int]] = {}
        device = top_stat.st_dev
        for visit in _tree.walk(top, descend=lambda v: v.stat.st_dev == device):
            st = visit.stat
            if visit.leaving or st.st_dev != device:
                continue
            identity = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if linked.get(identity) == (st.st_uid, st.st_gid):
                    continue
                linked[identity] = (st.st_uid + uid_increment, st.st_gid + gid_increment)
            _shift(visit.dir_fd, visit.name, st, uid_increment, gid_increment, path=visit.path)
            changed += 1
        return changed
    finally:
        os.close(top)


def _shift(
    dir_fd: int, name: str, st: os.stat_result, uid_increment: int, gid_increment: int, *, path: str
) -> None:
    uid, gid = st.st_uid + uid_increment, st.st_gid + gid_increment
    if uid > MAX_ID or gid > MAX_ID:
        raise errdefs.InvalidArgument(
            f"{path}: owner {st.st_uid}:{st.st_gid} shifted by "
            f"{uid_increment}:{gid_increment} is past the largest id {MAX_ID}"
        )
    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISREG(st.st_mode) and st.st_mode & _SPECIAL_BITS:
        # chown cleared them; the file is reopened only if it is still the
        # inode that was looked at.
        fd = _openat.open_regular(dir_fd, name, st)
        if fd is not None:
            try:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
            finally:
                os.close(fd)
