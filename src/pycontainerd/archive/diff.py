"""The walking differ: compare two directory trees and write the changes as an OCI layer.

Both trees are walked together, one directory at a time, names in byte order,
so the output is deterministic and every parent comes before its children.
The rules are containerd's (continuity's ``fs.Changes`` plus archive's change
writer): a path only in the lower tree becomes a ``.wh.NAME`` whiteout; a path
whose type, mode, owner, device, ``security.capability``, size, mtime or (when
mtimes carry no sub-second part) content differs is written whole; unchanged
directories are written only as parents of a change; hardlinked files are
written once and then as links, including unchanged names that share an inode
with a changed one.  Like containerd only ``security.capability`` is carried
as an xattr, so host labels such as SELinux contexts stay out of the layer.

Apart from one deliberate difference the bytes are those containerd 1.6
writes for the same trees: whiteouts carry the epoch as their mtime instead
of the current time, so the same change always gives the same digest.

Trees are read through directory fds with ``O_NOFOLLOW``, so a symlink swapped
in by a running container cannot make us read a host file into the layer.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from pycontainerd import errdefs
from pycontainerd.archive import tar

__all__ = ["write_diff", "write_tree"]

_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CAPABILITY = "security.capability"
_CHUNK = 1 << 20
_TYPES = {
    stat.S_IFREG: tar.TYPE_REG,
    stat.S_IFDIR: tar.TYPE_DIR,
    stat.S_IFLNK: tar.TYPE_SYMLINK,
    stat.S_IFCHR: tar.TYPE_CHAR,
    stat.S_IFBLK: tar.TYPE_BLOCK,
    stat.S_IFIFO: tar.TYPE_FIFO,
}


def _capability(dir_fd: int, name: str) -> bytes | None:
    # No *at form of getxattr: read it through an O_PATH fd of the entry itself
    # (the magic link leads to that inode only, never on through a symlink).
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.getxattr(f"/proc/self/fd/{fd}", _CAPABILITY)
    except OSError:
        return None
    finally:
        os.close(fd)


def _open_beneath(root_fd: int, rel: str) -> int:
    """Open directory ``rel`` below ``root_fd`` following no symlink on the way."""
    cur = root_fd
    try:
        for name in rel.split("/"):
            nxt = os.open(name, _DIR_OPEN, dir_fd=cur)
            if cur != root_fd:
                os.close(cur)
            cur = nxt
    except BaseException:
        if cur != root_fd:
            os.close(cur)
        raise
    return cur


def _listing(dir_fd: int) -> dict[str, os.stat_result]:
    with os.scandir(dir_fd) as it:
        return {e.name: e.stat(follow_symlinks=False) for e in it}


def _same_content(lfd: int, ufd: int, name: str) -> bool:
    a = os.open(name, _FILE_OPEN, dir_fd=lfd)
    try:
        b = os.open(name, _FILE_OPEN, dir_fd=ufd)
        try:
            while True:
                x, y = os.read(a, _CHUNK), os.read(b, _CHUNK)
                if x != y:
                    return False
                if not x:
                    return True
        finally:
            os.close(b)
    finally:
        os.close(a)


def _same(lfd: int, ufd: int, name: str, ls: os.stat_result, us: os.stat_result) -> bool:
    """continuity's sameFile: cheap metadata first, file content only when mtimes are coarse."""
    if (ls.st_dev, ls.st_ino) == (us.st_dev, us.st_ino):
        return True
    if (ls.st_mode, ls.st_uid, ls.st_gid, ls.st_rdev) != (
        us.st_mode,
        us.st_uid,
        us.st_gid,
        us.st_rdev,
    ):
        return False
    if _capability(lfd, name) != _capability(ufd, name):
        return False
    if stat.S_ISDIR(us.st_mode):
        return True
    if ls.st_size != us.st_size:
        return False
    lsec, lns = divmod(ls.st_mtime_ns, 1_000_000_000)
    usec, uns = divmod(us.st_mtime_ns, 1_000_000_000)
    if lsec != usec:
        return False
    if lns == 0 and uns == 0:
        if stat.S_ISLNK(us.st_mode):
            return os.readlink(name, dir_fd=lfd) == os.readlink(name, dir_fd=ufd)
        if stat.S_ISREG(us.st_mode):
            return _same_content(lfd, ufd, name)
        return True
    return lns == uns


class _ChangeWriter:
    def __init__(self, upper_fd: int, out: BinaryIO) -> None:
        self.upper_fd = upper_fd
        self.tw = tar.TarWriter(out)
        self.inode_src: dict[tuple[int, int], str] = {}
        self.inode_refs: dict[tuple[int, int], list[str]] = {}
        self.added_dirs: set[str] = set()

    def whiteout(self, path: str) -> None:
        parent, _, base = path.rpartition("/")
        name = f"{parent}/.wh.{base}" if parent else f".wh.{base}"
        self._include_parents(name)
        self.tw.write_header(tar.Header(name=name, typeflag=tar.TYPE_REG, mode=0, size=0))

    def change(
        self, dir_fd: int, path: str, name: str, st: os.stat_result, *, modified: bool
    ) -> None:
        """Write ``path`` (entry ``name`` in ``dir_fd``) if changed or linked to a change."""
        fmt = stat.S_IFMT(st.st_mode)
        kind = _TYPES.get(fmt)
        if kind is None:
            return  # sockets (and anything stranger) are not layer content
        links: list[str] = []
        hdr = tar.Header(
            name=path + "/" if kind == tar.TYPE_DIR else path,
            typeflag=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind == tar.TYPE_REG else 0,
            mtime_ns=st.st_mtime_ns // 1_000_000_000 * 1_000_000_000,
        )
        if kind != tar.TYPE_DIR and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            source = self.inode_src.get(key)
            if source is not None:
                hdr.typeflag, hdr.linkname, hdr.size = tar.TYPE_LINK, source, 0
            elif not modified:
                self.inode_refs.setdefault(key, []).append(path)
                return
            else:
                self.inode_src[key] = path
                links = self.inode_refs.pop(key, [])
        elif not modified:
            return
        if kind == tar.TYPE_SYMLINK:
            hdr.linkname = os.readlink(name, dir_fd=dir_fd)
        elif kind in (tar.TYPE_CHAR, tar.TYPE_BLOCK):
            hdr.devmajor, hdr.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if kind != tar.TYPE_SYMLINK and (cap := _capability(dir_fd, name)) is not None:
            hdr.xattrs[_CAPABILITY] = cap
        self._include_parents(path)
        self.tw.write_header(hdr)
        if hdr.typeflag == tar.TYPE_REG and hdr.size:
            self._copy(dir_fd, name, path, hdr.size)
        for extra in links:
            self._include_parents(extra)
            self.tw.write_header(
                tar.Header(
                    name=extra,
                    typeflag=tar.TYPE_LINK,
                    linkname=path,
                    mode=hdr.mode,
                    uid=hdr.uid,
                    gid=hdr.gid,
                    mtime_ns=hdr.mtime_ns,
                )
            )
        if kind == tar.TYPE_DIR:
            self.added_dirs.add(path)

    def _copy(self, dir_fd: int, name: str, path: str, size: int) -> None:
        fd = os.open(name, _FILE_OPEN, dir_fd=dir_fd)
        try:
            left = size
            while left:
                chunk = os.read(fd, min(left, _CHUNK))
                if not chunk:
                    break
                self.tw.write(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        if left:
            raise errdefs.FailedPrecondition(f"file {path!r} shrank while its diff was written")
        self.tw.pad(size)

    def _include_parents(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        if not parent or parent in self.added_dirs:
            return
        self.added_dirs.add(parent)
        grand, _, base = parent.rpartition("/")
        pfd = _open_beneath(self.upper_fd, grand) if grand else self.upper_fd
        try:
            st = os.lstat(base, dir_fd=pfd)
            self.change(pfd, parent, base, st, modified=True)
        finally:
            if grand:
                os.close(pfd)


def _sorted(names: set[str]) -> list[str]:
    return sorted(names, key=os.fsencode)


def _walk(cw: _ChangeWriter, rel: str, lfd: int | None, ufd: int) -> None:
    lower = _listing(lfd) if lfd is not None else {}
    upper = _listing(ufd)
    for name in _sorted(set(lower) | set(upper)):
        path = f"{rel}/{name}" if rel else name
        ls, us = lower.get(name), upper.get(name)
        if us is None:
            cw.whiteout(path)
            continue
        if ls is None or lfd is None:
            cw.change(ufd, path, name, us, modified=True)
        else:
            same = stat.S_IFMT(ls.st_mode) == stat.S_IFMT(us.st_mode) and _same(
                lfd, ufd, name, ls, us
            )
            cw.change(ufd, path, name, us, modified=not same)
        if stat.S_ISDIR(us.st_mode):
            lower_dir = lfd is not None and ls is not None and stat.S_ISDIR(ls.st_mode)
            sub_upper = os.open(name, _DIR_OPEN, dir_fd=ufd)
            try:
                sub_lower = os.open(name, _DIR_OPEN, dir_fd=lfd) if lower_dir else None
            except BaseException:
                os.close(sub_upper)
                raise
            try:
                _walk(cw, path, sub_lower, sub_upper)
            finally:
                os.close(sub_upper)
                if sub_lower is not None:
                    os.close(sub_lower)


def write_diff(lower: str | Path | None, upper: str | Path, out: BinaryIO) -> None:
    """Write to ``out`` an uncompressed OCI layer that turns ``lower`` into ``upper``."""
    ufd = os.open(upper, _DIR_OPEN)
    lfd = os.open(lower, _DIR_OPEN) if lower is not None else None
    try:
        cw = _ChangeWriter(ufd, out)
        _walk(cw, "", lfd, ufd)
        cw.tw.close()
    finally:
        os.close(ufd)
        if lfd is not None:
            os.close(lfd)


def write_tree(root: str | Path, out: BinaryIO) -> None:
    """Write all of ``root`` as one layer (a diff against an empty directory)."""
    write_diff(None, root, out)
