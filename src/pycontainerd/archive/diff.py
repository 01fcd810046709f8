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
in by a running container cannot make us read a host file into the layer; a
file the listing saw is looked at through ``O_PATH`` and opened only if it is
still that regular inode, so a device node swapped in is never opened.  The
walk keeps its stack on the heap and at most a few directory fds open
(:mod:`pycontainerd._tree`), so depth costs memory -- per level of the current
path, both listings of that directory -- never recursion or long paths.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pycontainerd import errdefs
from pycontainerd._openat import open_regular
from pycontainerd._tree import DirCursor, at, open_beneath
from pycontainerd.archive import tar

__all__ = ["write_diff", "write_tree"]

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


def _capability(path: str) -> bytes | None:
    # follow_symlinks=False: the entry itself, never a symlink's target.
    try:
        return os.getxattr(path, _CAPABILITY, follow_symlinks=False)
    except OSError:
        return None


def _listing(dir_fd: int) -> dict[str, os.stat_result]:
    with os.scandir(dir_fd) as it:
        return {e.name: e.stat(follow_symlinks=False) for e in it}


def _open_listed(dir_fd: int, name: str, st: os.stat_result, path: str) -> int:
    """Open the regular file the listing saw as ``st``; a running container may
    have swapped it since for a device node, a FIFO or a symlink."""
    fd = open_regular(dir_fd, name, st)
    if fd is None:
        raise errdefs.FailedPrecondition(f"file {path!r} was replaced while its diff was written")
    return fd


def _same_content(lfd: int, ufd: int, name: str, ls: os.stat_result, us: os.stat_result) -> bool:
    a = open_regular(lfd, name, ls)
    if a is None:
        return False  # replaced since listed: written whole, or refused there
    try:
        b = open_regular(ufd, name, us)
        if b is None:
            return False
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
    if _capability(at(lfd, name)) != _capability(at(ufd, name)):
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
            return _same_content(lfd, ufd, name, ls, us)
        return True
    return lns == uns


def _header(path: str, kind: str, st: os.stat_result) -> tar.Header:
    return tar.Header(
        name=path + "/" if kind == tar.TYPE_DIR else path,
        typeflag=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if kind == tar.TYPE_REG else 0,
        mtime_ns=st.st_mtime_ns // 1_000_000_000 * 1_000_000_000,
    )


@dataclass(frozen=True, slots=True)
class _DirMeta:
    """What a directory's header needs, kept while the walk is inside it."""

    stat: os.stat_result
    capability: bytes | None


class _ChangeWriter:
    def __init__(self, upper_fd: int, out: BinaryIO) -> None:
        self.upper_fd = upper_fd
        self.tw = tar.TarWriter(out)
        self.inode_src: dict[tuple[int, int], str] = {}
        self.inode_refs: dict[tuple[int, int], list[str]] = {}
        self.added_dirs: set[str] = set()
        #: The directory the walk is in, and its ancestors' metadata, top first:
        #: what a change below needs to write its unchanged parents.
        self.here = ""
        self.path_dirs: list[_DirMeta] = []

    def enter(self, path: str, st: os.stat_result, fd: int) -> None:
        """The walk went into directory ``path`` (open as ``fd``)."""
        cap = None if path in self.added_dirs else _capability(f"/proc/self/fd/{fd}")
        self.path_dirs.append(_DirMeta(st, cap))
        self.here = path

    def leave(self) -> None:
        self.path_dirs.pop()
        self.here = self.here.rpartition("/")[0]

    def whiteout(self, path: str) -> None:
        parent, _, base = path.rpartition("/")
        name = f"{parent}/.wh.{base}" if parent else f".wh.{base}"
        self._include_parents(name)
        self.tw.write_header(tar.Header(name=name, typeflag=tar.TYPE_REG, mode=0, size=0))

    def change(
        self, dir_fd: int, path: str, name: str, st: os.stat_result, *, modified: bool
    ) -> None:
        """Write ``path`` (entry ``name`` in ``dir_fd``) if changed or linked to a change."""
        kind = _TYPES.get(stat.S_IFMT(st.st_mode))
        if kind is None:
            return  # sockets (and anything stranger) are not layer content
        links: list[str] = []
        hdr = _header(path, kind, st)
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
        if kind != tar.TYPE_SYMLINK and (cap := _capability(at(dir_fd, name))) is not None:
            hdr.xattrs[_CAPABILITY] = cap
        self._include_parents(path)
        self.tw.write_header(hdr)
        if hdr.typeflag == tar.TYPE_REG and hdr.size:
            self._copy(dir_fd, name, path, st)
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

    def _copy(self, dir_fd: int, name: str, path: str, st: os.stat_result) -> None:
        size = st.st_size
        fd = _open_listed(dir_fd, name, st, path)
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
        """Write the directories above ``path`` not yet written, top first."""
        missing: list[str] = []
        parent = path.rpartition("/")[0]
        while parent and parent not in self.added_dirs:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for dir_path in reversed(missing):
            meta = self._dir_meta(dir_path)
            hdr = _header(dir_path, tar.TYPE_DIR, meta.stat)
            if meta.capability is not None:
                hdr.xattrs[_CAPABILITY] = meta.capability
            self.tw.write_header(hdr)
            self.added_dirs.add(dir_path)

    def _dir_meta(self, path: str) -> _DirMeta:
        depth = path.count("/") + 1
        if depth <= len(self.path_dirs) and (
            self.here == path or self.here.startswith(path + "/")
        ):
            return self.path_dirs[depth - 1]
        # Off the walk's path: only a hardlink's earlier, unchanged name gets here.
        *parents, base = path.split("/")
        pfd = open_beneath(self.upper_fd, parents)
        try:
            st = os.lstat(base, dir_fd=pfd)
            if not stat.S_ISDIR(st.st_mode):
                raise errdefs.FailedPrecondition(
                    f"directory {path!r} was replaced while its diff was written"
                )
            return _DirMeta(st, _capability(at(pfd, base)))
        finally:
            os.close(pfd)


def _sorted(names: set[str]) -> list[str]:
    """Names in byte order, last first (the walk pops them)."""
    return sorted(names, key=os.fsencode, reverse=True)


@dataclass(slots=True)
class _Frame:
    """A directory the walk is in: both listings, and the names still to visit."""

    lower: dict[str, os.stat_result] | None
    upper: dict[str, os.stat_result]
    todo: list[str]


def _frame(lower: DirCursor | None, upper: DirCursor) -> _Frame:
    lower_list = _listing(lower.fd) if lower is not None else None
    upper_list = _listing(upper.fd)
    return _Frame(lower_list, upper_list, _sorted(set(lower_list or ()) | set(upper_list)))


def _walk(cw: _ChangeWriter, lower: DirCursor | None, upper: DirCursor) -> None:
    """Both trees together, depth first, on the heap: no Python frame per level.

    ``lower`` is in the same directory as ``upper`` while the lower tree has
    it; below a directory only the upper tree has, it waits where it is.
    """
    frames = [_frame(lower, upper)]
    while frames:
        frame = frames[-1]
        if not frame.todo:
            frames.pop()
            if frames:
                upper.up()
                if frame.lower is not None and lower is not None:
                    lower.up()
                cw.leave()
            continue
        name = frame.todo.pop()
        path = f"{cw.here}/{name}" if cw.here else name
        ls = frame.lower.get(name) if frame.lower is not None else None
        us = frame.upper.get(name)
        if us is None:
            cw.whiteout(path)
            continue
        lfd = lower.fd if lower is not None and frame.lower is not None else -1
        if ls is None:
            cw.change(upper.fd, path, name, us, modified=True)
        else:
            same = stat.S_IFMT(ls.st_mode) == stat.S_IFMT(us.st_mode) and _same(
                lfd, upper.fd, name, ls, us
            )
            cw.change(upper.fd, path, name, us, modified=not same)
        if stat.S_ISDIR(us.st_mode):
            both = ls is not None and stat.S_ISDIR(ls.st_mode)
            upper.down(name)
            try:
                if both and lower is not None:
                    lower.down(name)
            except BaseException:
                upper.up()
                raise
            cw.enter(path, us, upper.fd)
            frames.append(_frame(lower if both else None, upper))


def write_diff(lower: str | Path | None, upper: str | Path, out: BinaryIO) -> None:
    """Write to ``out`` an uncompressed OCI layer that turns ``lower`` into ``upper``."""
    with contextlib.ExitStack() as stack:
        upper_cursor = stack.enter_context(DirCursor(upper))
        lower_cursor = stack.enter_context(DirCursor(lower)) if lower is not None else None
        # The cursor may close its top fd deep in the tree; off-path lookups need it.
        upper_fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=upper_cursor.fd)
        stack.callback(os.close, upper_fd)
        cw = _ChangeWriter(upper_fd, out)
        _walk(cw, lower_cursor, upper_cursor)
        cw.tw.close()


def write_tree(root: str | Path, out: BinaryIO) -> None:
    """Write all of ``root`` as one layer (a diff against an empty directory)."""
    write_diff(None, root, out)
