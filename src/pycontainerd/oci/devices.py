"""Device nodes of the host, as the spec's ``linux.devices`` lists them.

containerd's ``DeviceFromPath`` and ``getDevices``: a character, block or
FIFO node becomes ``{path, type, major, minor, fileMode, uid, gid}``; a
directory is walked (in name order, as Go's ``os.ReadDir``), skipping the
pseudo-filesystems containerd skips, ``console``, FIFOs, and anything that
is not a device.  Entries are ``lstat``-ed, so a symlink is never followed
below the path asked for.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Any

from pycontainerd import errdefs

__all__ = ["MAX_DEVICES", "device_from_path", "devices", "host_devices"]

#: Most entries one walk looks at: /dev holds a few hundred; this bounds the
#: time and memory a huge or looping tree could cost.
MAX_DEVICES = 1 << 16

# Directories containerd never descends into (lxc/lxd and udev internals,
# and the pseudo-filesystems a container gets its own of).
_SKIPPED_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


def device_from_path(path: str) -> dict[str, Any]:
    """The device node at ``path`` (not followed if a symlink).

    Raises InvalidArgument when it is not a device node, NotFound when it is
    missing.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise errdefs.NotFound(f"device {path!r}: no such file") from exc
    if stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        raise errdefs.InvalidArgument(f"{path}: not a device node")
    return {
        "path": path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _walk(root: str) -> Iterator[tuple[str, bool]]:
    """``(path, is_dir)`` of every entry under ``root`` in Go's recursive order
    (a directory's entries, sorted, each followed by its own subtree),
    without recursion and never through a symlink or a skipped directory."""
    stack = [iter(_sorted_entries(root))]
    seen = 0
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        seen += 1
        if seen > MAX_DEVICES:
            raise errdefs.ResourceExhausted(f"more than {MAX_DEVICES} entries under {root}")
        path, is_dir = entry
        yield entry
        if is_dir and os.path.basename(path) not in _SKIPPED_DIRS:
            stack.append(iter(_sorted_entries(path)))


def _sorted_entries(directory: str) -> list[tuple[str, bool]]:
    with os.scandir(directory) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    entries.sort(key=lambda e: os.fsencode(e[0]))
    return [(os.path.join(directory, name), is_dir) for name, is_dir in entries]


def devices(path: str, container_path: str = "") -> list[dict[str, Any]]:
    """The device at ``path``, or every device under the directory ``path``
    (containerd's ``getDevices``), placed under ``container_path`` in the
    container when given (else at the same path)."""
    try:
        top = os.stat(path)
    except FileNotFoundError as exc:
        raise errdefs.NotFound(f"error stating device path: {path}: no such file") from exc
    if not stat.S_ISDIR(top.st_mode):
        device = device_from_path(path)
        if container_path:
            device["path"] = container_path
        return [device]
    found: list[dict[str, Any]] = []
    for entry, is_dir in _walk(path):
        name = os.path.basename(entry)
        if is_dir or name == "console":
            continue
        try:
            device = device_from_path(entry)
        except (errdefs.InvalidArgument, errdefs.NotFound):
            continue
        if device["type"] == "p":
            continue
        if container_path:
            device["path"] = os.path.join(container_path, os.path.relpath(entry, path))
        found.append(device)
    return found


def host_devices() -> list[dict[str, Any]]:
    """Every device node under the host's /dev (containerd's ``HostDevices``)."""
    return devices("/dev")
