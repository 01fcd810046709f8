"""Iterative, fd-based tree walks: how pycontainerd lists, copies and removes directory trees.

A tree written by a container or a layer can be as deep as it likes.  A walk
that recurses per level (``shutil.rmtree`` does in Python 3.11) dies with
``RecursionError`` near 1,000 levels, which no ``except OSError`` catches;
one that builds full paths fails past the kernel's ``PATH_MAX`` (4,096 bytes).
Everything here therefore

* keeps its own stack on the heap, never a Python frame per level;
* hands the kernel one path component at a time, relative to a directory fd
  (``dir_fd=`` and the ``*at`` calls), so no path given to the kernel grows
  with depth;
* enters directories with ``O_NOFOLLOW``: a symlink is an entry, never a way
  somewhere else.

Bounds:

* Depth: none is imposed.  Memory grows with it: per level of the current
  path, the names of that directory still to visit.
* File descriptors: a :class:`DirCursor` keeps at most :data:`HELD_FDS`
  directory fds open (the levels nearest the current one), plus one while a
  directory is being listed.  A level above those is reopened through ``..``
  and must have the ``(st_dev, st_ino)`` recorded on the way down: a directory
  moved during the walk stops it with :class:`TreeMoved` rather than lead it
  somewhere else.
* :func:`remove_tree` never enters another filesystem (a mount left in the
  tree stays, and is reported), and an entry it cannot remove does not stop it
  removing every other one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "HELD_FDS",
    "DirCursor",
    "TreeMoved",
    "Visit",
    "at",
    "open_beneath",
    "remove_tree",
    "walk",
]

#: Directory fds one cursor keeps open at most.
HELD_FDS = 16
DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeMoved(OSError):
    """A directory was moved while it was walked: going on could lead outside the tree."""


def at(dir_fd: int, name: str) -> str:
    """A path for ``name`` in ``dir_fd`` for calls without an ``*at`` form (xattrs).

    It goes through the fd's magic link, so its length never grows with depth.
    """
    return f"/proc/self/fd/{dir_fd}/{name}"


def open_beneath(top: int, parts: Sequence[str]) -> int:
    """A new fd for the directory ``parts`` below ``top``, following no symlink on the way."""
    cur = os.open(".", DIR_OPEN, dir_fd=top)
    try:
        for name in parts:
            nxt = os.open(name, DIR_OPEN, dir_fd=cur)
            os.close(cur)
            cur = nxt
    except BaseException:
        os.close(cur)
        raise
    return cur


class DirCursor:
    """An fd on one directory of a tree, moved down and up one level at a time."""

    def __init__(self, top: int | str | Path) -> None:
        """Start at ``top``, a directory path or fd (an fd stays the caller's)."""
        fd = os.open(".", DIR_OPEN, dir_fd=top) if isinstance(top, int) else os.open(top, DIR_OPEN)
        self._fds = [fd]  # one per level; -1 where closed to stay within HELD_FDS
        try:
            st = os.fstat(fd)
        except BaseException:
            self.close()
            raise
        self._ids = [(st.st_dev, st.st_ino)]
        self._held = 1  # the open fds are always the last _held levels

    def __enter__(self) -> DirCursor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def fd(self) -> int:
        """The current directory (readable: it can be listed)."""
        return self._fds[-1]

    @property
    def depth(self) -> int:
        return len(self._fds) - 1

    @property
    def device(self) -> int:
        return self._ids[-1][0]

    def down(self, name: str) -> None:
        """Enter directory ``name``; ELOOP or ENOTDIR when it is anything else."""
        fd = os.open(name, DIR_OPEN, dir_fd=self.fd)
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fds.append(fd)
        self._ids.append((st.st_dev, st.st_ino))
        self._held += 1
        if self._held > HELD_FDS:
            oldest = len(self._fds) - self._held
            os.close(self._fds[oldest])
            self._fds[oldest] = -1
            self._held -= 1

    def up(self) -> None:
        """Go back to the parent directory, the one :meth:`down` left."""
        if len(self._fds) == 1:
            raise ValueError("the cursor is at the top of its walk")
        child = self._fds.pop()
        self._ids.pop()
        self._held -= 1
        try:
            if self._fds[-1] < 0:
                self._fds[-1] = self._reopen_parent(child)
                self._held = 1
        finally:
            os.close(child)

    def _reopen_parent(self, child: int) -> int:
        fd = os.open("..", DIR_OPEN, dir_fd=child)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self._ids[-1]:
            os.close(fd)
            raise TreeMoved(errno.ESTALE, "a directory was moved while its tree was walked")
        return fd

    def close(self) -> None:
        for fd in self._fds:
            if fd >= 0:
                os.close(fd)
        self._fds = [-1]
        self._held = 0


@dataclass(frozen=True, slots=True)
class Visit:
    """One entry met by :func:`walk`.

    ``dir_fd`` holds the entry and ``parents`` names the directories from the
    top down to it; both are the walk's own and valid until it moves on.
    A directory is met twice: before its entries, and after them with
    ``leaving`` set.
    """

    dir_fd: int
    name: str
    stat: os.stat_result
    parents: Sequence[str]
    leaving: bool = False

    @property
    def path(self) -> str:
        """The path below the top, for bookkeeping and messages: never hand it to the kernel."""
        return "/".join([*self.parents, self.name])


def _names(fd: int) -> list[str]:
    """A directory's names, last first (the walk pops them in order)."""
    with os.scandir(fd) as entries:
        return sorted((e.name for e in entries), reverse=True)


def walk(
    top: int | str | Path, *, descend: Callable[[Visit], bool] | None = None
) -> Iterator[Visit]:
    """Every entry below ``top``, depth first, names in order, no symlink followed.

    ``descend`` says whether to enter a directory once its first visit is
    done (default: every one); a directory not entered gets no ``leaving``
    visit.  Entries that vanish during the walk are passed over.
    """
    with DirCursor(top) as cursor:
        parents: list[str] = []
        entered: list[os.stat_result] = []
        pending = [_names(cursor.fd)]
        while pending:
            todo = pending[-1]
            if not todo:
                pending.pop()
                if parents:
                    name, st = parents.pop(), entered.pop()
                    cursor.up()
                    yield Visit(cursor.fd, name, st, parents, leaving=True)
                continue
            name = todo.pop()
            try:
                st = os.lstat(name, dir_fd=cursor.fd)
            except FileNotFoundError:
                continue
            visit = Visit(cursor.fd, name, st, parents)
            yield visit
            if not stat.S_ISDIR(st.st_mode) or (descend is not None and not descend(visit)):
                continue
            try:
                cursor.down(name)
            except (FileNotFoundError, NotADirectoryError):
                # Gone or replaced since its visit: nothing below it to walk.
                yield Visit(cursor.fd, name, st, parents, leaving=True)
                continue
            parents.append(name)
            entered.append(st)
            pending.append(_names(cursor.fd))


def remove_tree(name: str | Path, *, dir_fd: int | None = None) -> None:
    """Remove ``name`` (a path, or one entry of ``dir_fd``), whatever it is, with all below it.

    Symlinks are removed, never followed.  A directory on another filesystem
    (a mount left in the tree) is not entered.  What cannot be removed stays
    and the rest still goes; then the first failure is raised.  A missing
    ``name`` is not an error.
    """
    if dir_fd is not None:
        _remove_at(dir_fd, os.fspath(name))
        return
    parent, base = os.path.split(os.path.abspath(name))
    if not base:
        raise ValueError("refusing to remove the root directory")
    try:
        parent_fd = os.open(parent, DIR_OPEN)
    except FileNotFoundError:
        return
    try:
        _remove_at(parent_fd, base)
    finally:
        os.close(parent_fd)


def _remove_at(dir_fd: int, name: str) -> None:
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return
    errors: list[OSError] = []
    with DirCursor(dir_fd) as cursor:
        _remove_dir(cursor, name, st.st_dev, errors)
    if errors:
        raise errors[0]


def _remove_dir(cursor: DirCursor, name: str, device: int, errors: list[OSError]) -> None:
    """Remove directory ``name`` of the cursor's directory, depth first, post order."""
    inside: list[str] = []  # the directories entered, top first
    pending = [[name]]  # per level: the subdirectories still to remove
    while pending:
        todo = pending[-1]
        if todo:
            sub = todo.pop()
            if _enter(cursor, sub, device, errors):
                inside.append(sub)
                pending.append(_unlink_files(cursor.fd, errors))
            continue
        pending.pop()
        if inside:
            emptied = inside.pop()
            cursor.up()
            try:
                os.rmdir(emptied, dir_fd=cursor.fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(exc)


def _enter(cursor: DirCursor, name: str, device: int, errors: list[OSError]) -> bool:
    try:
        cursor.down(name)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            errors.append(exc)
            return False
        try:  # replaced by a file or symlink since it was listed
            os.unlink(name, dir_fd=cursor.fd)
        except FileNotFoundError:
            pass
        except OSError as unlink_exc:
            errors.append(unlink_exc)
        return False
    if cursor.device != device:
        cursor.up()
        errors.append(OSError(errno.EXDEV, "a mount point: not removed through", name))
        return False
    return True


def _unlink_files(fd: int, errors: list[OSError]) -> list[str]:
    """Unlink every non-directory in ``fd``; return the subdirectories' names."""
    subdirs: list[str] = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                    else:
                        os.unlink(entry.name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except IsADirectoryError:
                    subdirs.append(entry.name)
                except OSError as exc:
                    errors.append(exc)
    except OSError as exc:
        errors.append(exc)
    return subdirs
