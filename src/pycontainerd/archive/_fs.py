"""Directory handles that cannot leave a root: the only way the applier touches the disk.

:class:`Root` hands out O_PATH directory fds for paths inside one root.  The
kernel resolves them with ``openat2(RESOLVE_IN_ROOT)`` when it can; otherwise,
and whenever missing directories must be created, we walk component by
component with ``O_NOFOLLOW``, reading symlinks ourselves and scoping them to
the root, which gives the same answers as containerd's ``fs.RootPath``.
Callers then act on a final component relative to such an fd with the ``*at``
syscalls and never follow it, so nothing outside the root is ever reached.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pycontainerd import _openat, errdefs
from pycontainerd._tree import remove_tree

__all__ = ["DirInfo", "Root", "clean_parts", "proc_fd", "remove_entry"]

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_RESOLVE = _openat.RESOLVE_IN_ROOT | _openat.RESOLVE_NO_MAGICLINKS
_MAX_SYMLINKS = 40  # the kernel's limit on one lookup
_ACL_DEFAULT = "system.posix_acl_default"
# A lower layer's file is looked at through O_PATH first: opening a device
# node the layer planted there could act on the host.
_FILE_LOOK = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _cache_size() -> int:
    """Directory fds to keep: enough for a wide layer (a miss costs three
    syscalls per entry), never more than a sixteenth of the fd limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 2048
    return max(128, min(2048, soft // 16))


@dataclass(frozen=True, slots=True)
class DirInfo:
    """What the kernel gives a new entry in a directory on its own.

    ``setgid``: new entries take the directory's group, not ours.
    ``default_acl``: the umask is not what shapes a new entry's mode.
    """

    setgid: bool
    default_acl: bool


def clean_parts(parts: list[str]) -> list[str]:
    """Lexical cleaning with ``..`` stopping at the root."""
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


def proc_fd(fd: int) -> str:
    """The magic link for an fd: for calls that have no ``*at`` form (xattrs, chmod of O_PATH)."""
    return f"/proc/self/fd/{fd}"


def remove_entry(dir_fd: int, name: str) -> bool:
    """Remove ``name`` (with everything below, for a directory) without following links.

    Return True when what was removed could be a path component (a directory
    or a symlink), so cached directory handles below it are stale.
    """
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        remove_tree(name, dir_fd=dir_fd)
        return True
    os.unlink(name, dir_fd=dir_fd)
    return stat.S_ISLNK(st.st_mode)


def _dir_info(fd: int) -> DirInfo:
    setgid = bool(os.fstat(fd).st_mode & stat.S_ISGID)
    try:
        os.getxattr(proc_fd(fd), _ACL_DEFAULT)
    except OSError as exc:
        # No default ACL, or a filesystem without ACLs: the umask applies.
        default_acl = exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)
    else:
        default_acl = True
    return DirInfo(setgid, default_acl)


class Root:
    """A root directory and a small LRU of directory fds resolved inside it."""

    def __init__(self, path: str | Path, parents: Sequence[str | Path] = ()) -> None:
        self.fd = os.open(path, _DIR_FLAGS)
        self._prefix = os.readlink(proc_fd(self.fd)).rstrip("/")
        self._parents: list[int] = []
        self._cache: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._cache_size = _cache_size()
        self._stale: list[int] = []
        self._info: dict[int, DirInfo] = {}
        #: Resolved paths of the directories made through this handle: nothing
        #: in them predates it.
        self.created: set[str] = set()
        try:
            for parent in parents:
                self._parents.append(os.open(parent, _DIR_FLAGS))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.invalidate()
        self.release_stale()
        for fd in self._parents:
            os.close(fd)
        self._parents.clear()
        self._info.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def invalidate(self) -> None:
        """Forget cached handles (after a directory or symlink was removed).

        The fds stay open until :meth:`release_stale`, since a caller may still
        be using one for the entry in progress.
        """
        self._stale.extend(fd for fd, _ in self._cache.values())
        self._cache.clear()

    def release_stale(self) -> None:
        for fd in self._stale:
            self._info.pop(fd, None)
            os.close(fd)
        self._stale.clear()

    def has_stale(self) -> bool:
        return bool(self._stale)

    def cached(self, rel: str) -> bool:
        """Whether :meth:`dir` has ``rel`` at hand (no lookup, nothing created)."""
        return not rel or rel in self._cache

    def info(self, fd: int) -> DirInfo:
        """:class:`DirInfo` of a directory fd this root handed out (two syscalls, then cached)."""
        found = self._info.get(fd)
        if found is None:
            found = self._info[fd] = _dir_info(fd)
        return found

    def forget_info(self) -> None:
        """Drop all :meth:`info` answers (a directory's mode or ACLs were just changed)."""
        self._info.clear()

    def _resolved(self, fd: int) -> str:
        """The path of an opened directory relative to the root, symlinks resolved."""
        path = os.readlink(proc_fd(fd))
        if path == self._prefix:
            return ""
        if not path.startswith(self._prefix + "/"):
            raise errdefs.InvalidArgument(f"directory {path!r} resolved outside the root")
        return path[len(self._prefix) + 1 :]

    def dir(self, rel: str, *, create: bool) -> tuple[int, str]:
        """An fd for directory ``rel`` (no leading slash) and its resolved relative path.

        With ``create``, missing directories are made (mode 0755, metadata
        copied from the nearest parent layer that has them, as containerd's
        mkparent does).  Raises FileNotFoundError / NotADirectoryError.
        """
        if not rel:
            return self.fd, ""
        hit = self._cache.get(rel)
        if hit is not None:
            self._cache.move_to_end(rel)
            return hit
        fd = -1
        if _openat.AVAILABLE:
            try:
                fd = _openat.openat2(self.fd, rel, _DIR_FLAGS, _RESOLVE)
            except FileNotFoundError:
                if not create:
                    raise
        if fd < 0:
            fd = self._walk(rel, create=create)
        entry = (fd, self._resolved(fd))
        self._cache[rel] = entry
        if len(self._cache) > self._cache_size:
            _, (old, _) = self._cache.popitem(last=False)
            self._stale.append(old)
        return entry

    def _walk(self, rel: str, *, create: bool, root: int | None = None) -> int:
        """Resolve ``rel`` one component at a time, scoped to the root like RESOLVE_IN_ROOT.

        ``root`` defaults to our root; a parent layer's fd resolves in that layer.
        """
        top = self.fd if root is None else root
        stack: list[tuple[int, str]] = []  # (fd, name) of the directories we stand in
        todo = clean_parts(rel.split("/"))
        todo.reverse()
        hops = 0
        cur = top
        try:
            while todo:
                name = todo.pop()  # never "..": every path here is cleaned first
                try:
                    st = os.lstat(name, dir_fd=cur)
                except FileNotFoundError:
                    if not create or root is not None:  # parent layers are read-only
                        raise
                    self._mkdir(cur, name, "/".join([n for _, n in stack] + [name]))
                    st = os.lstat(name, dir_fd=cur)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > _MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel)
                    target = os.readlink(name, dir_fd=cur)
                    # continuity's RootPath joins the target to the link's
                    # directory and cleans the result lexically, so a missing
                    # "x" in "x/.." is never created; start again from the root.
                    here = [] if target.startswith("/") else [n for _, n in stack]
                    joined = clean_parts([*here, *target.split("/")])
                    for fd, _ in stack:
                        os.close(fd)
                    stack.clear()
                    cur = top
                    todo.extend(reversed(joined))
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), rel)
                fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=cur)
                stack.append((fd, name))
                cur = fd
        except BaseException:
            for fd, _ in stack:
                os.close(fd)
            raise
        if not stack:
            return os.open(".", _DIR_FLAGS, dir_fd=top)
        for fd, _ in stack[:-1]:
            os.close(fd)
        return stack[-1][0]

    def _mkdir(self, dir_fd: int, name: str, resolved: str) -> None:
        """Create a missing parent directory, taking its metadata from a parent layer."""
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            return
        self.created.add(resolved)
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
        )
        try:
            os.fchmod(fd, 0o755)
            for parent in self._parents:
                if self._copy_dir_info(parent, resolved, fd):
                    break
        finally:
            os.close(fd)

    def _copy_dir_info(self, parent: int, resolved: str, fd: int) -> bool:
        """Copy owner, mode, times and non-trusted xattrs of ``resolved`` in a parent layer.

        False when that layer does not have it (look further down); True when
        done, or when the layer has something else there (keep the defaults).
        """
        try:
            if _openat.AVAILABLE:
                src = _openat.openat2(parent, resolved, os.O_PATH | os.O_CLOEXEC, _RESOLVE)
            else:
                src = self._walk(resolved, create=False, root=parent)
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            return True
        try:
            st = os.fstat(src)
            if not stat.S_ISDIR(st.st_mode):
                return True  # replaced in that layer: keep the defaults, look no further
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            try:
                names = os.listxattr(proc_fd(src))
            except OSError:
                names = []
            for key in names:
                if key.startswith("trusted."):
                    continue
                try:
                    os.setxattr(fd, key, os.getxattr(proc_fd(src), key), os.XATTR_CREATE)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTSUP, errno.ENODATA, errno.EEXIST):
                        raise
            return True
        finally:
            os.close(src)

    def parent_file(self, path: str) -> tuple[int, str] | None:
        """The regular file ``path`` in the nearest parent layer having it.

        Returns an O_RDONLY fd and the file's real path in that layer
        (symlinks resolved, inside the layer), or None.  Anything else there
        (a device node, a FIFO) is only looked at, never opened.
        """
        for parent in self._parents:
            try:
                if _openat.AVAILABLE:
                    found = _openat.openat2(parent, path, _FILE_LOOK, _RESOLVE)
                else:
                    found = self._open_in(parent, path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return None  # a symlink there: not a file we may copy
                raise
            try:
                # A whiteout or other non-file hides anything further down.
                return self._readable_in(parent, found)
            finally:
                os.close(found)
        return None

    def _readable_in(self, parent: int, found: int) -> tuple[int, str] | None:
        """An O_RDONLY fd and layer path for the O_PATH fd ``found``, if a regular file there."""
        prefix = os.readlink(proc_fd(parent)).rstrip("/") + "/"
        real = os.readlink(proc_fd(found))
        if not real.startswith(prefix):
            return None
        fd = _openat.reopen_regular(found)
        return None if fd is None else (fd, real[len(prefix) :])

    def _open_in(self, parent: int, path: str) -> int:
        """Fallback for :meth:`parent_file` without openat2."""
        dir_part, _, name = path.rpartition("/")
        dfd = self._walk(dir_part, create=False, root=parent) if dir_part else parent
        try:
            return os.open(name, _FILE_LOOK, dir_fd=dfd)
        finally:
            if dfd != parent:
                os.close(dfd)
