"""What the overlay and native snapshotters share: a metastore, a
``snapshots/<id>`` directory per snapshot, and the order of operations that
keeps rows and directories consistent through a crash.

* Creating: the directory is built under a temporary name (``new-*``), the
  row is inserted, the directory is renamed to its id, then the
  transaction commits.  A failure rolls the row back and removes the
  directory; a crash leaves at worst a directory no row owns.
* Removing: the row is deleted and the directory renamed to ``rm-<id>``
  inside the transaction; after the commit it is deleted.  A crash leaves
  at worst an ``rm-*`` directory.
* :meth:`cleanup` deletes every entry of ``snapshots/`` no row owns.

Subclasses say where a snapshot's own layer lives, what a new directory
holds and what mounts a snapshot gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import platform
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

from pycontainerd import errdefs
from pycontainerd._tree import remove_tree
from pycontainerd.mount import Mount
from pycontainerd.snapshots import Info, Kind, Usage
from pycontainerd.snapshots._fs import disk_usage, spread_subdirectories
from pycontainerd.snapshots.storage import MetaStore, Snapshot, Transaction

__all__ = ["LocalSnapshotter", "host_platform"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _typed_os_errors(what: str) -> Iterator[None]:
    """Filesystem failures as errdefs errors, so clients see a typed status."""
    try:
        yield
    except OSError as exc:
        cls: type[errdefs.ContainerdError] = errdefs.Unknown
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            cls = errdefs.ResourceExhausted
        elif exc.errno in (errno.EPERM, errno.EACCES):
            cls = errdefs.PermissionDenied
        raise cls(f"{what}: {exc}") from exc


def host_platform() -> str:
    """This host as containerd names a platform (``linux/amd64``), which is
    what containerd lists for its snapshotter plugins."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    variant = {"arm64": "/v8", "arm": "/v7"}.get(arch, "")
    return f"linux/{arch}{variant}"


class LocalSnapshotter(ABC):
    """A snapshotter keeping its snapshots as directories under ``root``."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root = root
        self.snapshots_dir = root / "snapshots"
        self.snapshots_dir.mkdir(exist_ok=True, mode=0o700)
        spread_subdirectories(self.snapshots_dir)
        self.ms = MetaStore(root / "metadata.db")

    # -- what differs between snapshotters

    def snapshot_dir(self, sid: str) -> Path:
        return self.snapshots_dir / sid

    @abstractmethod
    def layer_dir(self, sid: str) -> Path:
        """The directory holding a snapshot's own files (what usage counts)."""

    @abstractmethod
    def _needs_dir(self, kind: Kind, parent: str) -> bool:
        """Whether a new snapshot of this kind gets a directory of its own."""

    @abstractmethod
    def _fill_dir(self, tmp: Path, kind: Kind, snap: Snapshot) -> None:
        """Lay out a new snapshot's directory (under a temporary name)."""

    @abstractmethod
    def _mounts(self, snap: Snapshot) -> list[Mount]:
        """The mounts of an active snapshot or a view."""

    # -- the Snapshotter protocol

    def _decorate(self, sid: str, info: Info) -> Info:
        """The info a caller sees (the overlay snapshotter may add a label)."""
        return info

    async def stat(self, key: str) -> Info:
        def run(tx: Transaction) -> Info:
            sid, info, _ = tx.get_info(key)
            return self._decorate(sid, info)

        return await asyncio.to_thread(self.ms.read, run)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        def run(tx: Transaction) -> Info:
            updated = tx.update(info, fieldpaths)
            return self._decorate(tx.get_info(updated.name)[0], updated)

        return await asyncio.to_thread(self.ms.write, run)

    async def usage(self, key: str) -> Usage:
        found: tuple[str, Info, Usage] = await asyncio.to_thread(
            self.ms.read, lambda tx: tx.get_info(key)
        )
        sid, info, usage = found
        if info.kind != Kind.ACTIVE:
            return usage
        try:
            return await asyncio.to_thread(disk_usage, self.layer_dir(sid))
        except FileNotFoundError as exc:  # removed while we looked
            raise errdefs.NotFound(f"snapshot {key} does not exist") from exc

    async def mounts(self, key: str) -> list[Mount]:
        snap = await asyncio.to_thread(self.ms.read, lambda tx: tx.get_snapshot(key))
        return self._mounts(snap)

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        with _typed_os_errors(f"failed to prepare snapshot {key}"):
            return await asyncio.to_thread(self._create, Kind.ACTIVE, key, parent, labels)

    async def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        with _typed_os_errors(f"failed to create view {key}"):
            return await asyncio.to_thread(self._create, Kind.VIEW, key, parent, labels)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        with _typed_os_errors(f"failed to commit snapshot {key}"):
            await asyncio.to_thread(self._commit, name, key, labels)

    async def remove(self, key: str) -> None:
        await asyncio.to_thread(self._remove, key)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        found = await asyncio.to_thread(self.ms.read, lambda tx: tx.walk(*filters))
        for sid, info in found:
            yield self._decorate(sid, info)

    async def cleanup(self) -> None:
        await asyncio.to_thread(self._cleanup)

    async def close(self) -> None:
        self.ms.close()

    # -- blocking work, run in a thread

    def _create(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> list[Mount]:
        tmp: Path | None = None
        final: Path | None = None
        try:
            with self.ms.transaction(writable=True) as tx:
                snap = tx.create(kind, key, parent, labels)
                if self._needs_dir(kind, parent):
                    tmp = Path(tempfile.mkdtemp(prefix="new-", dir=self.snapshots_dir))
                    self._fill_dir(tmp, kind, snap)
                    final = self.snapshot_dir(snap.id)
                    self._set_aside_stale(final)
                    os.rename(tmp, final)
                    tmp = None
        except BaseException:
            for leftover in (tmp, final):
                if leftover is not None:
                    _remove_logged(leftover)  # what stays, cleanup() retries
            raise
        return self._mounts(snap)

    def _set_aside_stale(self, path: Path) -> None:
        """Remove what a rolled-back create left at ``path``.

        Called inside the write transaction that just took ``path``'s id: no
        committed row can own it (see the metastore's docstring), so it is
        a crash leftover, not another snapshot's directory.
        """
        aside = self.snapshots_dir / f"rm-stale-{path.name}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        log.warning("removing a directory left by a rolled-back create", extra={"path": str(path)})
        _remove_logged(aside)

    def _active_id(self, tx: Transaction, key: str) -> str | None:
        try:
            sid, info, _ = tx.get_info(key)
        except errdefs.NotFound:
            return None
        return sid if info.kind == Kind.ACTIVE else None

    def _commit(self, name: str, key: str, labels: Mapping[str, str] | None) -> None:
        # The layer is measured before the write transaction, so a big one does
        # not hold up every other snapshot's changes; the id is checked again
        # inside it in case the key was removed and prepared anew meanwhile.
        measured = self.ms.read(lambda tx: self._active_id(tx, key))
        usage = disk_usage(self.layer_dir(measured)) if measured is not None else Usage()

        def run(tx: Transaction) -> None:
            sid = self._active_id(tx, key)
            final = usage
            if sid is not None and sid != measured:
                final = disk_usage(self.layer_dir(sid))
            # An unknown key or a view: tx.commit raises what containerd does,
            # after checking the name first as containerd does.
            tx.commit(key, name, final, labels)

        self.ms.write(run)

    def _remove(self, key: str) -> None:
        path = renamed = None
        with (
            _typed_os_errors(f"failed to remove snapshot {key}"),
            self.ms.transaction(writable=True) as tx,
        ):
            sid, _ = tx.remove(key)
            path = self.snapshot_dir(sid)
            renamed = self.snapshots_dir / f"rm-{sid}"
            try:
                os.rename(path, renamed)
            except FileNotFoundError:  # a view that shares its parent's directory
                renamed = None
        if renamed is not None:
            _remove_logged(renamed)  # the row is gone: what stays, cleanup() retries

    def _cleanup(self) -> None:
        # A write transaction: no snapshot is created while the listing is taken.
        with self.ms.transaction(writable=True) as tx:
            known = tx.id_map()
            with os.scandir(self.snapshots_dir) as entries:
                stale = [e.name for e in entries if e.name not in known]
        for name in stale:
            _remove_logged(self.snapshots_dir / name)


def _remove_logged(path: Path) -> None:
    """Remove ``path`` and all below it; log what stays instead of raising.

    Cleanup is best effort and goes entry by entry: whatever one entry
    raises, the next one is still removed.
    """
    try:
        remove_tree(path)
    except Exception as exc:
        log.warning(
            "failed to remove snapshot directory", extra={"path": str(path), "error": str(exc)}
        )
