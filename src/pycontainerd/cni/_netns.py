"""Named network namespaces: a task's netns bind-mounted onto a file.

As ``ip netns add`` does, a file under the netns directory holds a bind
mount of ``/proc/<pid>/ns/net``: the namespace lives as long as the mount,
so the plugins' ``DEL`` still finds it after the task has died, and nothing
else can take its place if the pid is reused.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pycontainerd import errdefs, mount

__all__ = ["create", "is_mounted", "remove"]

_MNT_DETACH = 2


def create(path: Path, pid: int) -> None:
    """Bind-mount the network namespace of ``pid`` onto a new file ``path``.

    AlreadyExists when ``path`` does (a network set up already, or left by a
    crash: remove it first); NotFound when ``pid`` is gone;
    FailedPrecondition when ``pid`` is in our own network namespace (the
    plugins would rewire the host's).
    """
    if pid <= 0:
        raise errdefs.InvalidArgument(f"invalid pid {pid}")
    source = f"/proc/{pid}/ns/net"
    try:
        theirs = os.stat(source)
    except FileNotFoundError as exc:
        raise errdefs.NotFound(f"process {pid}: not found") from exc
    ours = os.stat("/proc/self/ns/net")
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        raise errdefs.FailedPrecondition(
            f"process {pid} shares the host's network namespace: no network to set up"
        )
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    except FileExistsError as exc:
        raise errdefs.AlreadyExists(f"network namespace {path}: already exists") from exc
    os.close(fd)
    try:
        mount.bind(source, path)
    except errdefs.ContainerdError as exc:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if isinstance(exc, errdefs.NotFound):
            raise errdefs.NotFound(f"process {pid}: not found") from exc
        raise


def is_mounted(path: Path) -> bool:
    """Whether ``path`` holds a namespace (a mount of another device than its directory's)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except FileNotFoundError:
        return False


def remove(path: Path) -> None:
    """Unmount and remove ``path``; nothing to do when it is gone."""
    mount.unmount_all(path, _MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
