"""Task bundles: the directories a shim works in (containerd's ``runtime/v2/bundle.go``).

A task's bundle is ``<state>/<namespace>/<id>`` (the runtime plugin's state
directory, ``/run/pycontainerd/io.containerd.runtime.v2.task``): the OCI
``config.json``, an empty ``rootfs`` the shim mounts the container's root
filesystem on, and a ``work`` symlink to ``<root>/<namespace>/<id>``, a
directory that survives a reboot for the runtime's own use.  The shim adds
its files there (``address``, ``shim.pid``, ``log``, ``init.pid``, ...) and
the manager adds ``shim-binary-path``, which names the shim to run for
``delete`` and to restore with, as containerd 1.6 does.

The namespace and id are validated before either touches a path.  Deleting a
bundle first unmounts whatever is still on ``rootfs``, then renames the
directory to a hidden name and removes it, so a crash half-way leaves a
dot-directory that restore skips rather than a half-removed bundle.

A task whose spec maps gid 0 to a host gid (a user namespace) gets its
bundle in that group, mode 0710: runc mounts the rootfs from inside the
namespace, as the remapped root, and must get through to it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pycontainerd import errdefs, identifiers, mount, namespaces

__all__ = ["CONFIG_FILENAME", "SHIM_BINARY_FILENAME", "Bundle", "load_bundle", "new_bundle"]

CONFIG_FILENAME = "config.json"
#: The shim binary a bundle's task was started with (read back at restore).
SHIM_BINARY_FILENAME = "shim-binary-path"

# Detached, and never through a symlink planted in the bundle.
_UNMOUNT_FLAGS = mount.MNT_DETACH | mount.UMOUNT_NOFOLLOW


def _validated(namespace: str, id: str) -> None:
    namespaces.validate(namespace)
    try:
        identifiers.validate(id)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"invalid task id {id}: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class Bundle:
    id: str
    namespace: str
    #: ``<state>/<namespace>/<id>``: the shim's working directory.
    path: Path
    #: ``<root>/<namespace>/<id>``, linked from the bundle as ``work``.
    work: Path

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def shim_binary(self) -> str:
        """The shim recorded at start (``""`` when none was)."""
        try:
            return (self.path / SHIM_BINARY_FILENAME).read_text()
        except FileNotFoundError:
            return ""

    def record_shim_binary(self, binary: str) -> None:
        _write_atomic(self.path / SHIM_BINARY_FILENAME, binary.encode(), 0o600)

    def delete(self) -> None:
        """Unmount the rootfs and remove the bundle and its work directory."""
        mount.unmount_all(self.rootfs, _UNMOUNT_FLAGS)
        try:
            self.rootfs.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Not empty: what runc made in a rootfs nothing was mounted on (a
            # task created with no rootfs mounts); removed with the bundle.
            # Something still mounted there is never removed through.
            if exc.errno != errno.ENOTEMPTY or os.path.ismount(self.rootfs):
                raise errdefs.FailedPrecondition(
                    f"bundle of task {self.id}: rootfs still in use: {exc.strerror}"
                ) from None
        _atomic_delete(self.path)
        _atomic_delete(self.work)


def new_bundle(root: Path, state: Path, namespace: str, id: str, spec: bytes | None) -> Bundle:
    """Make the bundle of a new task; AlreadyExists when the task has one."""
    _validated(namespace, id)
    bundle = Bundle(id, namespace, state / namespace / id, root / namespace / id)
    made: list[Path] = []
    try:
        bundle.path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        try:
            bundle.path.mkdir(mode=0o700)
        except FileExistsError:
            raise errdefs.AlreadyExists(f"bundle of task {id}") from None
        made.append(bundle.path)
        if spec is not None:
            _open_to_remapped_root(bundle.path, spec)
        bundle.rootfs.mkdir(mode=0o711)
        bundle.work.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        try:
            bundle.work.mkdir(mode=0o711)
        except FileExistsError:
            # Left by a task that was not cleaned up (the state dir is a tmpfs
            # that a reboot empties; the root is not).
            shutil.rmtree(bundle.work)
            bundle.work.mkdir(mode=0o711)
        made.append(bundle.work)
        (bundle.path / "work").symlink_to(bundle.work)
        if spec is not None:
            _write_atomic(bundle.path / CONFIG_FILENAME, spec, 0o666)
    except BaseException:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return bundle


def remapped_gid(spec: bytes) -> int:
    """The host gid a spec's user namespace maps the container's gid 0 to;
    0 when it maps none (containerd's ``remappedGID``)."""
    if not spec.strip():
        return 0
    try:
        document = json.loads(spec)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"task spec is not JSON: {exc}") from None
    linux = document.get("linux") if isinstance(document, dict) else None
    mappings = linux.get("gidMappings") if isinstance(linux, dict) else None
    for mapping in mappings if isinstance(mappings, list) else ():
        if isinstance(mapping, dict) and mapping.get("containerID") == 0:
            host = mapping.get("hostID")
            if isinstance(host, int) and 0 <= host < 1 << 32:
                return host
            raise errdefs.InvalidArgument(f"task spec: invalid gid mapping {mapping}")
    return 0


def _open_to_remapped_root(path: Path, spec: bytes) -> None:
    # runc mounts the rootfs from inside the container's user namespace,
    # as the remapped root: the bundle (0700, root's) must let that group
    # through, and nobody else (containerd's prepareBundleDirectoryPermissions).
    gid = remapped_gid(spec)
    if gid:
        os.chown(path, -1, gid)
        os.chmod(path, 0o710)


def load_bundle(root: Path, state: Path, namespace: str, id: str) -> Bundle:
    """The bundle of an existing task (as restore finds it)."""
    _validated(namespace, id)
    return Bundle(id, namespace, state / namespace / id, root / namespace / id)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _atomic_delete(path: Path) -> None:
    """Rename to a hidden name, then remove: restore never sees half a bundle."""
    hidden = path.with_name("." + path.name)
    try:
        os.rename(path, hidden)
    except FileNotFoundError:
        return
    # Never follow a mount the shim left behind out of the bundle.
    mount.unmount_all(hidden / "rootfs", _UNMOUNT_FLAGS)
    shutil.rmtree(hidden, ignore_errors=True)
