"""Apply an OCI layer tar to a directory without ever touching anything outside it.

Names are cleaned the way containerd cleans them: ``..`` and a leading ``/``
are contained to the root (``/../x`` lands on ``x``), an entry that resolves
to the root itself is skipped.  Parent directories are resolved inside the
root (symlinks included, scoped to the root) by :class:`~._fs.Root`; the final
component is created, replaced, chowned, chmodded, timed and given xattrs
relative to that directory fd and never followed.  Hardlink targets are
resolved inside the root in the same way.  Directory times are set last,
after their contents.

Small regular files are created by worker threads (:mod:`._writer`) while
this thread parses on, and a new file is given its owner and mode by open()
alone when the kernel would give the same ones (our owner, no setgid parent,
no umask or default ACL bits to lose): per file, the disk work is open,
write, futimens, close.

Whiteouts follow the two conventions containerd supports:
:attr:`Whiteouts.REMOVE` deletes the named path (and, for an opaque marker,
everything in the directory not written by this layer);
:attr:`Whiteouts.OVERLAY` writes overlayfs's own markers into an upperdir: a
0/0 character device for a deleted name, ``trusted.overlay.opaque=y`` for an
opaque directory.

Bounds: an entry's cleaned path is handed to the kernel whole, so one longer
than ``PATH_MAX`` (4,095 bytes) is refused with InvalidArgument; directories
an opaque marker empties are walked iteratively (:mod:`pycontainerd._tree`).

Where we knowingly differ from containerd 1.6: in OVERLAY mode a hardlink
whose target only a lower layer has is served by copying that file up
(containerd fails the layer), if it is a regular file -- anything else there
(a device node, a FIFO) is looked at through ``O_PATH``, never opened, and
the layer refused; an overlay whiteout replaces an entry already
in the upperdir (containerd fails on EEXIST); symlinks along an existing path
are resolved by the kernel (containerd cleans ``..`` after a symlink
lexically; the two agree for any path a real image builder writes).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pycontainerd import errdefs
from pycontainerd._tree import Visit, walk
from pycontainerd.archive import tar
from pycontainerd.archive._fs import Root, clean_parts, proc_fd, remove_entry
from pycontainerd.archive._writer import FileJob, FileWriter, JobError, write_file

__all__ = ["ApplyStats", "Whiteouts", "apply_layer"]

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
_OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_TIME_NS = (1 << 63) - 1
# Files up to this size are read into memory and created by a worker; larger
# ones are written straight from the stream on the applier's thread.
_WORKER_MAX_FILE = 1 << 20
_WORKERS = max(2, min(4, os.cpu_count() or 1))  # 0: all on the applier's thread
_NODE_TYPES = {
    tar.TYPE_CHAR: stat.S_IFCHR,
    tar.TYPE_BLOCK: stat.S_IFBLK,
    tar.TYPE_FIFO: stat.S_IFIFO,
}


class Whiteouts(enum.StrEnum):
    """How deletions in a layer are written to the target."""

    OVERLAY = "overlay"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ApplyStats:
    """``size``: uncompressed tar bytes consumed; ``files``: entries applied, whiteouts too."""

    size: int
    files: int


def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields != ["0", "0", "4294967295"]


def _umask() -> int | None:
    """The process umask, read without changing it (None when the kernel does not say)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _empty(dir_fd: int) -> bool:
    fd = os.open(".", _DIR_OPEN, dir_fd=dir_fd)  # O_PATH fds cannot be listed
    try:
        with os.scandir(fd) as entries:
            return next(entries, None) is None
    finally:
        os.close(fd)


def _bound_ns(ns: int) -> int:
    """containerd's boundTime: a time outside what the kernel can store becomes the epoch."""
    return ns if 0 <= ns <= _MAX_TIME_NS else 0


def _times(hdr: tar.Header) -> tuple[int, int]:
    mtime = _bound_ns(hdr.mtime_ns)
    atime = hdr.atime_ns if hdr.atime_ns is not None and hdr.atime_ns > hdr.mtime_ns else mtime
    return _bound_ns(atime), mtime


def _clean(name: str) -> str:
    """containerd's name cleaning: lexical, with ``..`` stopping at the root; '' is the root."""
    return "/".join(clean_parts(name.split("/")))


def _split(path: str) -> tuple[str, str]:
    parent, _, base = path.rpartition("/")
    return parent, base


_Maker = Callable[[tar.TarReader, tar.Header, int, str], None]


class _Applier:
    def __init__(self, root: str | Path, whiteouts: Whiteouts, parents: Sequence[str | Path]):
        self.whiteouts = whiteouts
        self.fs = Root(root, parents)
        self.userns = _in_user_namespace()
        # What a new file gets without fchown/fchmod: our owner, mode & ~umask.
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.umask = _umask()
        self.writer: FileWriter | None = None
        # Paths written by this layer, resolved: an opaque marker in REMOVE
        # mode keeps them, and no worker is sent to create one of them again.
        self.unpacked: set[str] = set()
        self.dirs: list[tuple[str, tuple[int, int]]] = []
        self._makers: dict[str, _Maker] = {
            tar.TYPE_REG: self._regular,
            tar.TYPE_SYMLINK: self._symlink,
            tar.TYPE_LINK: self._hardlink,
            tar.TYPE_CHAR: self._node,
            tar.TYPE_BLOCK: self._node,
            tar.TYPE_FIFO: self._node,
        }

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()  # before any fd a job names is closed
        finally:
            self.fs.close()

    def run(self, stream: BinaryIO) -> ApplyStats:
        reader = tar.TarReader(stream)
        files = 0
        if _WORKERS:
            self.writer = FileWriter(_WORKERS)
            if _empty(self.fs.fd):
                self.fs.created.add("")  # an empty target: nothing in it predates us
        while (hdr := reader.next()) is not None:
            try:
                if self._entry(reader, hdr):
                    files += 1
                if self.fs.has_stale():
                    self._barrier()
            except errdefs.ContainerdError:
                raise
            except OSError as exc:
                raise _os_error(hdr, exc) from exc
            finally:
                if self.writer is None or not self.writer.pending:
                    self.fs.release_stale()
        self._barrier()
        self.fs.release_stale()
        for path, times in self.dirs:
            self._dir_times(path, times)
        reader.drain()
        return ApplyStats(size=reader.consumed, files=files)

    def _barrier(self) -> None:
        """Wait for files in flight; replace, in order, those that found their name taken."""
        if self.writer is None:
            return
        try:
            self.writer.barrier(self._redo)
        except JobError as err:
            if isinstance(err.exc, OSError):
                raise _os_error(err.job.hdr, err.exc) from err.exc
            raise errdefs.Unknown(f"apply layer entry {err.job.hdr.name!r}: {err.exc}") from err.exc

    def _redo(self, job: FileJob) -> None:
        try:
            self._remove(job.pfd, job.base)
            write_file(job)
        except OSError as exc:
            raise _os_error(job.hdr, exc) from exc

    # -- one entry --------------------------------------------------------------

    def _entry(self, reader: tar.TarReader, hdr: tar.Header) -> bool:
        if hdr.typeflag in (tar.TYPE_CHAR, tar.TYPE_BLOCK) and self.userns:
            log.warning(
                "file %r ignored: device nodes cannot be created in a user namespace", hdr.name
            )
            return False
        path = _clean(hdr.name)
        if not path:
            log.debug("file %r ignored: resolved to root", hdr.name)
            return False
        parent, base = _split(path)
        writer = self.writer
        pfd, presolved = self._parent(parent)
        key = f"{presolved}/{base}" if presolved else base
        if base.startswith(WHITEOUT_PREFIX):
            self._barrier()
            self._whiteout(hdr, pfd, presolved, base)
            return True
        if writer is not None and key in writer.pending:
            self._barrier()  # the same name again: the earlier one must be there first
        if (
            writer is not None
            and hdr.typeflag == tar.TYPE_REG
            and not hdr.xattrs
            and hdr.size <= _WORKER_MAX_FILE
            and self._vacant(key, pfd, base)
        ):
            writer.submit(key, self._file_job(reader, hdr, pfd, base))
        elif hdr.typeflag == tar.TYPE_DIR:
            self._directory(hdr, pfd, base, key)
            self.dirs.append((path, _times(hdr)))
        else:
            make = self._makers[hdr.typeflag]
            try:
                make(reader, hdr, pfd, base)
            except FileExistsError:
                # Whatever is there goes, unlinked without following; only a
                # directory meeting a directory is merged.
                self._remove(pfd, base)
                make(reader, hdr, pfd, base)
        self.unpacked.add(key)
        return True

    def _remove(self, pfd: int, base: str) -> None:
        self._barrier()  # a removed directory may hold files in flight
        if remove_entry(pfd, base):
            self.fs.invalidate()

    def _parent(self, parent: str) -> tuple[int, str]:
        """The parent directory's fd, made if missing.

        Making a directory where a file is still in flight would differ from
        an in-order apply (which fails there): look first, and let the
        workers finish before anything is made.
        """
        if self.writer is None or not self.writer.pending or self.fs.cached(parent):
            return self.fs.dir(parent, create=True)
        try:
            return self.fs.dir(parent, create=False)
        except (FileNotFoundError, NotADirectoryError):
            self._barrier()
            return self.fs.dir(parent, create=True)

    def _vacant(self, key: str, pfd: int, base: str) -> bool:
        """Nothing is at ``key`` and nothing in flight is: a worker may create it.

        In a directory this apply made, only this layer's entries can be
        there, and those in flight are in ``pending``; elsewhere, look.
        """
        if key.rpartition("/")[0] in self.fs.created:
            return key not in self.unpacked and key not in self.fs.created
        try:
            os.lstat(base, dir_fd=pfd)
        except FileNotFoundError:
            return True
        return False

    def _file_job(self, reader: tar.TarReader, hdr: tar.Header, pfd: int, base: str) -> FileJob:
        owned, moded = self._plain(hdr, pfd)
        mode = hdr.mode & 0o7777
        return FileJob(
            hdr=hdr,
            pfd=pfd,
            base=base,
            data=reader.read_data(),
            open_mode=mode if moded else 0o600,
            chown=not owned,
            chmod=not moded,
            times=_times(hdr),
        )

    def _plain(self, hdr: tar.Header, pfd: int) -> tuple[bool, bool]:
        """Whether a new file in ``pfd`` gets the header's owner, and its mode
        when given to open(), without fchown / fchmod."""
        if hdr.xattrs:
            return False, False  # the general order: owner, xattrs, then mode
        info = self.fs.info(pfd)
        mode = hdr.mode & 0o7777
        owned = hdr.uid == self.uid and hdr.gid == self.gid and not info.setgid
        # Without setuid/setgid/sticky (which writes and chown clear), the
        # mode given to open() is the final one unless the umask or a default
        # ACL takes bits away.
        moded = (
            not mode & 0o7000
            and self.umask is not None
            and not mode & self.umask
            and not info.default_acl
        )
        return owned, moded

    def _regular(self, reader: tar.TarReader, hdr: tar.Header, pfd: int, base: str) -> None:
        mode = hdr.mode & 0o7777
        owned, moded = self._plain(hdr, pfd)
        fd = os.open(base, _FILE_FLAGS, mode if moded else 0o600, dir_fd=pfd)
        try:
            reader.copy_to_fd(fd)
            if not owned:
                os.fchown(fd, hdr.uid, hdr.gid)
            self._xattrs(hdr, fd)
            if not moded:
                os.fchmod(fd, mode)
            os.utime(fd, ns=_times(hdr))
        finally:
            os.close(fd)

    def _directory(self, hdr: tar.Header, pfd: int, base: str, key: str) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
            self.fs.created.add(key)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(base, dir_fd=pfd).st_mode):
                self._remove(pfd, base)
                os.mkdir(base, 0o700, dir_fd=pfd)
                self.fs.created.add(key)
            else:
                # Its new mode or ACLs would change what files still in
                # flight inside it get from the kernel; and cached answers.
                self._barrier()
                self.fs.forget_info()
        fd = os.open(base, _DIR_OPEN, dir_fd=pfd)
        try:
            os.fchown(fd, hdr.uid, hdr.gid)
            self._xattrs(hdr, fd)
            os.fchmod(fd, hdr.mode & 0o7777)
        finally:
            os.close(fd)

    def _symlink(self, _r: tar.TarReader, hdr: tar.Header, pfd: int, base: str) -> None:
        # The target is stored, never resolved: it only means something inside a container.
        os.symlink(hdr.linkname, base, dir_fd=pfd)
        self._finish_node(hdr, pfd, base, chmod=False)

    def _node(self, _r: tar.TarReader, hdr: tar.Header, pfd: int, base: str) -> None:
        kind = _NODE_TYPES[hdr.typeflag]
        os.mknod(base, kind | 0o600, os.makedev(hdr.devmajor, hdr.devminor), dir_fd=pfd)
        self._finish_node(hdr, pfd, base, chmod=True)

    def _hardlink(self, _r: tar.TarReader, hdr: tar.Header, pfd: int, base: str) -> None:
        self._barrier()  # the target may still be in flight
        target = _clean(hdr.linkname)
        if not target:
            raise errdefs.InvalidArgument(f"hardlink {hdr.name!r} to the root directory")
        tparent, tbase = _split(target)
        try:
            tfd, _ = self.fs.dir(tparent, create=False)
            # follow_symlinks=False: a link to a symlink links the symlink itself.
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError) as exc:
            if not self._copy_up_link_target(target, pfd, base):
                raise errdefs.InvalidArgument(
                    f"hardlink {hdr.name!r} to {hdr.linkname!r}: target not found in the layer"
                ) from exc
        except PermissionError as exc:
            raise errdefs.InvalidArgument(
                f"hardlink {hdr.name!r} to {hdr.linkname!r}: target cannot be linked"
            ) from exc
        st = os.lstat(base, dir_fd=pfd)
        self._finish_node(hdr, pfd, base, chmod=not stat.S_ISLNK(st.st_mode))

    def _copy_up_link_target(self, target: str, pfd: int, base: str) -> bool:
        """Overlay upperdir: a hardlink to a file only a lower layer has.

        containerd fails here; we copy the lower file up (as overlayfs itself
        would on first write) and link to the copy, so the merged view is right.
        """
        if self.whiteouts is not Whiteouts.OVERLAY:
            return False
        found = self.fs.parent_file(target)
        if found is None:
            return False
        src, real = found
        # Copy to where the file really is in the lower layer, so no directory
        # is made where the lower layer has a symlink.
        rparent, rbase = _split(real)
        try:
            tfd, _ = self.fs.dir(rparent, create=True)
            try:  # this layer may already hold it there
                os.link(rbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
                return True
            except FileNotFoundError:
                pass
            st = os.fstat(src)
            dst = os.open(rbase, _FILE_FLAGS, 0o600, dir_fd=tfd)
            try:
                while chunk := os.read(src, 1 << 20):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(dst, view) :]
                os.fchown(dst, st.st_uid, st.st_gid)
                for key in os.listxattr(src):
                    if not key.startswith("trusted."):
                        os.setxattr(dst, key, os.getxattr(src, key))
                os.fchmod(dst, stat.S_IMODE(st.st_mode))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)
        os.link(rbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        return True

    def _finish_node(self, hdr: tar.Header, pfd: int, base: str, *, chmod: bool) -> None:
        """Owner, xattrs, mode, times for an entry we hold no ordinary fd for."""
        os.chown(base, hdr.uid, hdr.gid, dir_fd=pfd, follow_symlinks=False)
        if hdr.xattrs or chmod:
            # O_PATH never opens the device or fifo itself; the magic link only
            # reaches the inode this fd already names, never a symlink's target.
            fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                self._xattrs(hdr, proc_fd(fd))
                if chmod:
                    os.chmod(proc_fd(fd), hdr.mode & 0o7777)
            finally:
                os.close(fd)
        os.utime(base, ns=_times(hdr), dir_fd=pfd, follow_symlinks=False)

    def _xattrs(self, hdr: tar.Header, target: int | str) -> None:
        for key, value in hdr.xattrs.items():
            if key.startswith("trusted."):
                log.warning("ignored xattr %s in archive: admin attributes are not applied", key)
                continue
            try:
                os.setxattr(target, key, value)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise errdefs.InvalidArgument(
                        f"apply layer entry {hdr.name!r}: xattr {key}: {exc.strerror}"
                    ) from exc
                log.warning("ignored xattr %s in archive: %s", key, exc.strerror)

    # -- whiteouts --------------------------------------------------------------

    def _whiteout(self, hdr: tar.Header, pfd: int, presolved: str, base: str) -> None:
        if base == WHITEOUT_OPAQUE:
            if self.whiteouts is Whiteouts.OVERLAY:
                os.setxattr(proc_fd(pfd), _OVERLAY_OPAQUE_XATTR, b"y")
            else:
                self._empty_opaque(pfd, presolved)
            return
        original = base[len(WHITEOUT_PREFIX) :]
        if original in ("", ".", ".."):
            raise errdefs.InvalidArgument(f"invalid archive: invalid whiteout name {base!r}")
        if remove_entry(pfd, original):
            self.fs.invalidate()
        if self.whiteouts is Whiteouts.OVERLAY:
            os.mknod(original, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
            os.chown(original, hdr.uid, hdr.gid, dir_fd=pfd, follow_symlinks=False)

    def _empty_opaque(self, dfd: int, resolved: str) -> None:
        """Remove everything below the directory that this layer did not write."""
        prefix = f"{resolved}/" if resolved else ""

        def written(visit: Visit) -> bool:
            return prefix + visit.path in self.unpacked

        removed = False
        # Only directories this layer wrote are entered; everything else goes whole.
        for visit in walk(dfd, descend=written):
            if not visit.leaving and not written(visit):
                removed = remove_entry(visit.dir_fd, visit.name) or removed
        if removed:
            self.fs.invalidate()

    def _dir_times(self, path: str, times: tuple[int, int]) -> None:
        parent, base = _split(path)
        try:
            pfd, _ = self.fs.dir(parent, create=False)
            st = os.lstat(base, dir_fd=pfd)
            if stat.S_ISDIR(st.st_mode):
                os.utime(base, ns=times, dir_fd=pfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            pass  # removed or replaced later in the layer
        finally:
            self.fs.release_stale()


def _os_error(hdr: tar.Header, exc: OSError) -> errdefs.ContainerdError:
    """Turn a failed filesystem call into a typed error that names the entry."""
    what = f"apply layer entry {hdr.name!r}: {exc.strerror or exc}"
    if exc.errno in (
        errno.ENOTDIR,
        errno.ELOOP,
        errno.EEXIST,
        errno.ENOENT,
        errno.EXDEV,
        errno.ENAMETOOLONG,  # an entry path past the kernel's PATH_MAX
    ):
        return errdefs.InvalidArgument(what)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errdefs.ResourceExhausted(what)
    if exc.errno in (errno.EPERM, errno.EACCES):
        return errdefs.PermissionDenied(what)
    return errdefs.Unknown(what)


def apply_layer(
    root: str | Path,
    stream: BinaryIO,
    *,
    whiteouts: Whiteouts = Whiteouts.REMOVE,
    parents: Sequence[str | Path] = (),
) -> ApplyStats:
    """Apply the uncompressed layer tar ``stream`` to the directory ``root``.

    ``parents`` are the lower directories (nearest first) of an overlay
    upperdir; they give missing parent directories their metadata and, in
    OVERLAY mode, hardlink targets that only a lower layer has.  The stream is
    read to its end.
    """
    try:
        applier = _Applier(root, Whiteouts(whiteouts), parents)
    except FileNotFoundError as exc:
        raise errdefs.NotFound(f"apply layer: directory {exc.filename!r} does not exist") from exc
    except NotADirectoryError as exc:
        raise errdefs.InvalidArgument(f"apply layer: {exc.filename!r} is not a directory") from exc
    try:
        return applier.run(stream)
    finally:
        applier.close()
