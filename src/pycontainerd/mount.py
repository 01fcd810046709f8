"""Mounts: how a snapshot becomes a directory.

A :class:`Mount` is containerd's ``types.Mount``: what a snapshotter hands
out and what ``mount(8)`` would need to put the snapshot somewhere.  The
daemon never mounts a snapshot for a client; the client (or the diff
service, while applying a layer) does, with :func:`mount_all` and
:func:`unmount`.  Kept at the package top level because the snapshotters,
the diff service and the client all speak it.

A mount's target is never joined to the mount root as text: it is resolved
inside the root by the kernel (``openat2`` with ``RESOLVE_IN_ROOT``) and the
mount made on the resulting fd (``/proc/self/fd/N``), so a symlink in an
earlier mount's content cannot send a later mount out of the root; what
:func:`temp_mount` mounted it takes away through fds it kept, not paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pycontainerd import _openat, errdefs
from pycontainerd._tree import open_beneath

__all__ = [
    "Mount",
    "OverlayDirs",
    "bind",
    "mount_all",
    "overlay_dirs",
    "read_only",
    "temp_mount",
    "temp_mount_async",
    "unmount",
    "unmount_all",
]


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount: ``mount -t TYPE -o OPTIONS SOURCE TARGET``.

    ``type`` is ``overlay`` or ``bind`` for our snapshotters; ``options``
    holds both flags (``ro``, ``rbind``) and data (``lowerdir=…``).
    ``target`` is a sub-path for nested mounts and is empty for a root.
    """

    type: str
    source: str
    options: tuple[str, ...] = field(default_factory=tuple)
    target: str = ""


# Flags of mount(2) (linux/mount.h).
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# Flags of umount2(2).
MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

#: option -> (clears the flag, flag); anything else is filesystem data.
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}

#: Propagation options: applied by a second mount(2) call, as the kernel requires.
_PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_RESOLVE = _openat.RESOLVE_IN_ROOT | _openat.RESOLVE_NO_MAGICLINKS
_LOWERDIR = "lowerdir="
_UPPERDIR = "upperdir="
_WORKDIR = "workdir="

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int


def _error(err: int, what: str) -> errdefs.ContainerdError:
    """A typed error for a failed mount syscall."""
    msg = f"{what}: {os.strerror(err)}"
    if err == errno.ENOENT:
        return errdefs.NotFound(msg)
    if err in (errno.EPERM, errno.EACCES):
        return errdefs.PermissionDenied(msg)
    if err == errno.EBUSY:
        return errdefs.FailedPrecondition(msg)
    if err in (errno.EINVAL, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ENODEV, errno.ELOOP):
        return errdefs.InvalidArgument(msg)
    return errdefs.Unknown(msg)


def _sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    rc = _libc.mount(
        os.fsencode(source) if source else None,
        os.fsencode(target),
        os.fsencode(fstype) if fstype else None,
        flags,
        os.fsencode(data) if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise _error(err, f"mount {source or fstype} on {target} ({fstype or 'remount'})")


def _parse_options(options: Sequence[str]) -> tuple[int, int, list[str]]:
    """Split mount options into mount flags, propagation flags and data."""
    flags = 0
    propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, propagation, data


@contextlib.contextmanager
def _short_lowerdirs(data: list[str]) -> Iterator[str]:
    """Overlay data that fits the kernel's one-page limit.

    With many layers the ``lowerdir=`` list outgrows a page; each lower
    directory is then opened (``O_PATH``) and named ``/proc/self/fd/N``,
    which the kernel resolves at mount time.  Unlike containerd's chdir
    trick this changes no process-wide state, so threads may mount at once.
    """
    text = ",".join(data)
    if len(text) < _PAGE_SIZE:
        yield text
        return
    fds: list[int] = []
    try:
        short: list[str] = []
        for opt in data:
            if opt.startswith(_LOWERDIR):
                names = []
                for lower in opt[len(_LOWERDIR) :].split(":"):
                    try:
                        fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    except OSError as exc:
                        raise _error(exc.errno or errno.EIO, f"overlay lowerdir {lower}") from exc
                    fds.append(fd)
                    names.append(f"/proc/self/fd/{fd}")
                opt = _LOWERDIR + ":".join(names)
            short.append(opt)
        text = ",".join(short)
        if len(text) >= _PAGE_SIZE:
            raise errdefs.InvalidArgument(
                f"overlay mount options are {len(text)} bytes even with short lower "
                f"directory names; the kernel takes at most {_PAGE_SIZE - 1}"
            )
        yield text
    finally:
        for fd in fds:
            os.close(fd)


def _mount_one(m: Mount, where: int, target: str) -> int:
    """Mount ``m`` on the O_PATH fd ``where`` (the resolved ``target`` in ``root``).

    Returns an O_PATH fd on the new mount's root, for what follows the first
    mount(2) call and for undoing it.
    """
    flags, propagation, data = _parse_options(m.options)
    fstype = m.type
    if fstype == "bind":
        flags |= MS_BIND
    with (
        _short_lowerdirs(data)
        if fstype == "overlay"
        else contextlib.nullcontext(",".join(data)) as text
    ):
        if not flags & MS_REMOUNT or text:
            _sys_mount(m.source, _proc_fd(where), fstype, flags, text)
    # ``where`` still names the directory underneath: look the target up
    # again, which now crosses into the new mount.
    mounted = _resolve(target, m.target)
    try:
        if propagation:
            _sys_mount("", _proc_fd(mounted), "", propagation, "")
        # A bind mount ignores MS_RDONLY until it is remounted read-only.
        if flags & (MS_BIND | MS_RDONLY) == MS_BIND | MS_RDONLY:
            _sys_mount("", _proc_fd(mounted), "", flags | MS_REMOUNT, "")
    except BaseException:
        _detach(mounted)
        raise
    return mounted


def _proc_fd(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _sub_parts(sub: str) -> list[str]:
    """A mount target's components below the root; ``..`` is refused outright."""
    parts = [p for p in sub.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise errdefs.InvalidArgument(f"mount target {sub!r} escapes the mount root")
    return parts


def _resolve(target: str, sub: str) -> int:
    """An O_PATH fd on ``sub`` inside ``target``, resolved as if ``target`` were ``/``.

    A symlink on the way (an earlier mount's content may plant one) is
    followed only inside the root, by the kernel (openat2 RESOLVE_IN_ROOT);
    without openat2 a symlink on the way is refused.  ``target`` is opened
    anew each time, so the lookup sees the mounts made so far.
    """
    parts = _sub_parts(sub)
    flags = os.O_PATH | os.O_CLOEXEC
    try:
        root = os.open(target, flags | os.O_DIRECTORY)
    except OSError as exc:
        raise _error(exc.errno or errno.EIO, f"mount target {target}") from exc
    try:
        if not parts:
            return os.dup(root)
        if _openat.AVAILABLE:
            return _openat.openat2(root, "/".join(parts), flags, _RESOLVE)
        return _open_no_symlinks(root, parts)
    except OSError as exc:
        raise _error(exc.errno or errno.EIO, f"mount target {sub!r} in {target}") from exc
    finally:
        os.close(root)


def _open_no_symlinks(root: int, parts: list[str]) -> int:
    """Without openat2: an O_PATH fd on ``parts`` below ``root``; ELOOP at any symlink."""
    parent = open_beneath(root, parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)
    if stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), "/".join(parts))
    return fd


def _detach(fd: int) -> None:
    """Lazily unmount the mount whose root ``fd`` holds, then let go of it.

    Lazy, because the fd itself keeps the mount busy; once it is closed
    nothing of ours holds the mount, and it is gone from every path at once.
    """
    try:
        if _libc.umount2(os.fsencode(_proc_fd(fd)), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise _error(err, f"unmount {os.readlink(_proc_fd(fd))}")
    finally:
        os.close(fd)


def _detach_all(fds: Sequence[int]) -> None:
    """Detach the mounts of ``fds``, the last mounted first, and close every fd."""
    first: errdefs.ContainerdError | None = None
    for fd in reversed(fds):
        try:
            _detach(fd)
        except errdefs.ContainerdError as exc:
            first = first or exc
    if first is not None:
        raise first


def _mount_fds(mounts: Sequence[Mount], target: str | Path) -> list[int]:
    """Mount ``mounts`` on ``target`` in order; O_PATH fds on the mounts' roots.

    If one fails, those already made are unmounted and its error raised.
    """
    root = os.fspath(target)
    done: list[int] = []
    try:
        for m in mounts:
            where = _resolve(root, m.target)
            try:
                done.append(_mount_one(m, where, root))
            finally:
                os.close(where)
    except BaseException:
        with contextlib.suppress(errdefs.ContainerdError):
            _detach_all(done)
        raise
    return done


def bind(source: str | Path, target: str | Path) -> None:
    """Bind-mount ``source`` (a file or a directory) onto the existing ``target``."""
    _sys_mount(str(source), str(target), "", MS_BIND, "")


def mount_all(mounts: Sequence[Mount], target: str | Path) -> None:
    """Mount each of ``mounts`` on ``target`` in order (undone if one fails).

    A mount's ``target`` is looked up inside ``target`` as if that were
    ``/``: a symlink met on the way, even one an earlier mount brought, never
    leads out of it.
    """
    for fd in _mount_fds(mounts, target):
        os.close(fd)


def unmount(target: str | Path, flags: int = 0) -> None:
    """Unmount ``target`` once, retrying for a while while it is busy."""
    path = os.fsencode(os.fspath(target))
    for attempt in range(50):
        if _libc.umount2(path, flags) == 0:
            return
        err = ctypes.get_errno()
        if err != errno.EBUSY or attempt == 49:
            raise _error(err, f"unmount {os.fspath(target)}")
        time.sleep(0.05)


def unmount_all(target: str | Path, flags: int = 0) -> None:
    """Unmount ``target`` until nothing is mounted there (stacked mounts too)."""
    while True:
        try:
            unmount(target, flags)
        except errdefs.InvalidArgument:  # EINVAL: not a mount point (any more)
            return
        except errdefs.NotFound:
            return


def read_only(mounts: Sequence[Mount]) -> list[Mount]:
    """The same mounts made read-only.

    An overlay loses its upper and work directories and gets its upper
    stacked on top of its lowers, so nothing (not even overlay's own
    bookkeeping) is written through it; any other mount gets ``ro``.
    """
    out: list[Mount] = []
    for m in mounts:
        if m.type == "overlay":
            upper = ""
            kept: list[str] = []
            for opt in m.options:
                if opt.startswith(_UPPERDIR):
                    upper = opt[len(_UPPERDIR) :]
                elif not opt.startswith(_WORKDIR) and opt not in ("rw", "ro"):
                    kept.append(opt)
            if upper:
                kept = [
                    f"{_LOWERDIR}{upper}:{o[len(_LOWERDIR) :]}" if o.startswith(_LOWERDIR) else o
                    for o in kept
                ]
            out.append(replace(m, options=(*kept, "ro")))
        else:
            opts = tuple(o for o in m.options if o not in ("rw", "ro"))
            out.append(replace(m, options=(*opts, "ro")))
    return out


@dataclass(frozen=True, slots=True)
class OverlayDirs:
    """An overlay mount's directories: the writable upper (None for a view),
    the read-only lowers nearest first, and the work directory."""

    upper: Path | None
    lowers: tuple[Path, ...]
    work: Path | None = None


def overlay_dirs(m: Mount) -> OverlayDirs:
    """The directories an overlay mount stacks, so a layer can be applied
    straight into its upper directory without mounting it."""
    if m.type != "overlay":
        raise errdefs.InvalidArgument(f"mount of type {m.type!r} is not an overlay")
    upper: Path | None = None
    work: Path | None = None
    lowers: tuple[Path, ...] = ()
    for opt in m.options:
        if opt.startswith(_UPPERDIR):
            upper = Path(opt[len(_UPPERDIR) :])
        elif opt.startswith(_WORKDIR):
            work = Path(opt[len(_WORKDIR) :])
        elif opt.startswith(_LOWERDIR):
            lowers = tuple(Path(p) for p in opt[len(_LOWERDIR) :].split(":") if p)
    return OverlayDirs(upper=upper, lowers=lowers, work=work)


@contextlib.contextmanager
def temp_mount(
    mounts: Sequence[Mount], *, readonly: bool = False, root: str | Path | None = None
) -> Iterator[Path]:
    """Mount ``mounts`` on a fresh directory for the duration of the block.

    The mounts are always taken away afterwards (lazily: a process still
    using one keeps it until it lets go, but no path reaches it any more) and
    the directory is removed with ``rmdir`` only, so nothing is ever deleted
    through a mount.  No process-wide state changes, so threads may use it
    at once.
    """
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = Path(tempfile.mkdtemp(prefix="pycontainerd-mount-", dir=base))
    try:
        mounted = _mount_fds(read_only(mounts) if readonly else mounts, target)
        try:
            yield target
        finally:
            # Through the fds taken when mounting, never by joining the
            # targets again: their symlinks may have changed since.
            _detach_all(mounted)
    finally:
        # Still busy or not empty: leave it rather than delete through it.
        with contextlib.suppress(OSError):
            target.rmdir()


@contextlib.asynccontextmanager
async def temp_mount_async(
    mounts: Sequence[Mount], *, readonly: bool = False, root: str | Path | None = None
) -> AsyncIterator[Path]:
    """:func:`temp_mount` for async code: the syscalls run in a worker thread."""
    import asyncio

    cm = temp_mount(mounts, readonly=readonly, root=root)
    target = await asyncio.to_thread(cm.__enter__)
    try:
        yield target
    except BaseException as exc:
        await asyncio.to_thread(cm.__exit__, type(exc), exc, exc.__traceback__)
        raise
    else:
        await asyncio.to_thread(cm.__exit__, None, None, None)
