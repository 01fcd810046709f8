"""Snapshots in the metadata database: each snapshotter, namespaced.

Behaviour follows containerd 1.6's ``metadata/snapshot.go``:

* A core snapshotter knows nothing of namespaces.  Each namespace's keys
  live in the ``snapshots`` table, which maps ``(namespace, snapshotter,
  key)`` to a backend key unique to it, ``<namespace>/<seq>/<key>`` (the
  sequence counts per namespace and snapshotter and never goes back), so two
  namespaces may use the same key without meeting.
* Labels and times are the row's; kind and usage come from the backend.
  Only labels under ``containerd.io/snapshot/`` travel down to the backend
  (containerd's "inherited" labels, for remote snapshotters).
* A parent is named by the namespace's key; the row keeps that name and the
  backend gets the parent's backend key.
* Commit re-keys: the committed name gets a fresh row and backend key, the
  active key's row goes.
* Under a lease (``pycontainerd.leases.current()``) a created snapshot is
  held by it (type ``snapshots/<snapshotter>``, id = the key); a removal or
  commit lets the old key go.
* Remove only deletes the row; the backend snapshot goes when garbage
  collection next cleans the snapshotter (:meth:`SnapshotStore.collect`:
  backend snapshots no row names, children first), as containerd's.

Every mutation holds the store's lock, which collection also takes, so a
backend snapshot whose row is being written is never swept.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

from pycontainerd import errdefs, filters, labels, leases, namespaces
from pycontainerd.errdefs import q
from pycontainerd.gc import Node, ResourceType
from pycontainerd.metadata._adapt import check_map, parse_filters
from pycontainerd.metadata._codec import dump_map, load_map, to_datetime
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.gc import LABEL_ROOT, label_refs
from pycontainerd.metadata.namespaces import ensure_namespace
from pycontainerd.mount import Mount
from pycontainerd.snapshots import Info, Kind, Snapshotter, Usage, validate_key

__all__ = ["SnapshotCollectible", "SnapshotStore", "backend_key", "lease_type"]

log = logging.getLogger(__name__)

#: Labels the backend sees too (containerd's ``inheritedLabelsPrefix``).
INHERITED_PREFIX = "containerd.io/snapshot/"

_COLUMNS = "key, backend_key, parent, labels, created_at, updated_at"
_Row = tuple[str, str, str, str, int, int]

_KIND_NAMES = {Kind.VIEW: "view", Kind.ACTIVE: "active", Kind.COMMITTED: "committed"}


def backend_key(namespace: str, seq: int, key: str) -> str:
    """The key a snapshot has in the core snapshotter (containerd's ``createKey``)."""
    return f"{namespace}/{seq}/{key}"


def lease_type(snapshotter: str) -> str:
    """The lease resource type of a snapshotter's snapshots."""
    return f"snapshots/{snapshotter}"


def _not_found(key: str) -> errdefs.NotFound:
    return errdefs.NotFound(f"snapshot {key} does not exist")


def _inherited(lbls: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in lbls.items() if k.startswith(INHERITED_PREFIX)}


def _clean_labels(lbls: Mapping[str, str] | None) -> dict[str, str]:
    result = {k: v for k, v in (lbls or {}).items() if v != ""}
    try:
        labels.validate_all(result)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"info.Labels: {exc.message}") from None
    return result


def _merge(backend: Info, row: _Row) -> Info:
    """The backend's kind with the row's name, parent, labels and times."""
    key, _, parent, lbls, created, updated = row
    merged = dict(backend.labels)
    merged.update(load_map(lbls))
    return Info(
        name=key,
        kind=backend.kind,
        parent=parent,
        labels=merged,
        created_at=to_datetime(created),
        updated_at=to_datetime(updated),
    )


def adapt_info(info: Info) -> filters.FieldFunc:
    """containerd's snapshot filter fields: kind, name, parent, labels.<key>."""

    def field(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "kind":
            name = _KIND_NAMES.get(info.kind)
            return (name, True) if name else ("", False)
        if head == "name":
            return info.name, True
        if head == "parent":
            return info.parent, True
        if head == "labels":
            return check_map(path[1:], info.labels)
        return "", False

    return field


def update_labels(
    name: str, current: Mapping[str, str], new: Mapping[str, str], fieldpaths: Sequence[str]
) -> dict[str, str]:
    """Apply an update mask to a snapshot's labels (``labels``, ``labels.<key>``)."""
    result = labels.apply_update(f"snapshot {q(name)}", current, new, fieldpaths)
    return _clean_labels(result)


class SnapshotStore:
    """One snapshotter as every namespace sees it (see the module docstring).

    Implements :class:`pycontainerd.snapshots.Snapshotter` for the namespace
    of the calling context.
    """

    def __init__(
        self,
        db: Database,
        name: str,
        backend: Snapshotter,
        *,
        on_remove: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self.name = name
        self._backend = backend
        self._on_remove = on_remove
        self._lock = asyncio.Lock()
        self._lease_type = lease_type(name)

    @property
    def backend(self) -> Snapshotter:
        return self._backend

    # -- reads

    def _row(self, ns: str, key: str) -> _Row | None:
        row: _Row | None = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM snapshots WHERE namespace = ? AND snapshotter = ? "
                "AND key = ?",
                (ns, self.name, key),
            ).fetchone()
        )
        return row

    def _resolve(self, key: str) -> _Row:
        ns = namespaces.required()
        row = self._row(ns, key)
        if row is None:
            raise _not_found(key)
        return row

    async def stat(self, key: str) -> Info:
        row = self._resolve(key)
        return _merge(await self._backend.stat(row[1]), row)

    async def usage(self, key: str) -> Usage:
        return await self._backend.usage(self._resolve(key)[1])

    async def mounts(self, key: str) -> list[Mount]:
        return await self._backend.mounts(self._resolve(key)[1])

    async def walk(self, *filter_strings: str) -> AsyncIterator[Info]:
        ns = namespaces.required()
        flt = await parse_filters(filter_strings)
        rows: builtins.list[_Row] = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM snapshots WHERE namespace = ? AND snapshotter = ? "
                "ORDER BY key",
                (ns, self.name),
            ).fetchall()
        )
        infos = []
        for row in rows:
            try:
                infos.append(_merge(await self._backend.stat(row[1]), row))
            except errdefs.NotFound:
                continue  # being created or committed right now
        for info in await filters.select(flt, infos, adapt_info):
            yield info

    # -- writes

    def _attach(self, conn: sqlite3.Connection, ns: str, lease_id: str | None, key: str) -> None:
        if not lease_id:
            return
        if (
            conn.execute(
                "SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (ns, lease_id)
            ).fetchone()
            is None
        ):
            raise errdefs.NotFound("lease does not exist")
        conn.execute(
            "INSERT OR IGNORE INTO lease_resources(namespace, lease, type, id) VALUES (?, ?, ?, ?)",
            (ns, lease_id, self._lease_type, key),
        )

    def _detach(self, conn: sqlite3.Connection, ns: str, lease_id: str | None, key: str) -> None:
        if lease_id:
            conn.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? "
                "AND id = ?",
                (ns, lease_id, self._lease_type, key),
            )

    def _next_key(self, conn: sqlite3.Connection, ns: str, key: str) -> str:
        row = conn.execute(
            "INSERT INTO snapshot_sequences(namespace, snapshotter, value) VALUES (?, ?, 1) "
            "ON CONFLICT(namespace, snapshotter) DO UPDATE SET value = value + 1 "
            "RETURNING value",
            (ns, self.name),
        ).fetchone()
        return backend_key(ns, int(row[0]), key)

    def _insert(
        self,
        conn: sqlite3.Connection,
        ns: str,
        key: str,
        parent: str,
        lbls: Mapping[str, str],
        now: int,
    ) -> str:
        """Add ``key``'s row (AlreadyExists if taken); returns its backend key."""
        if conn.execute(
            "SELECT 1 FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
            (ns, self.name, key),
        ).fetchone():
            raise errdefs.AlreadyExists(f"snapshot {q(key)}")
        bkey = self._next_key(conn, ns, key)
        conn.execute(
            "INSERT INTO snapshots(namespace, snapshotter, key, backend_key, parent, labels, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ns, self.name, key, bkey, parent, dump_map(lbls), now, now),
        )
        return bkey

    def _delete_row(
        self, ns: str, key: str, lease_id: str | None
    ) -> Callable[[sqlite3.Connection], None]:
        """Undo a row whose backend snapshot could not be made."""

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (ns, self.name, key),
            )
            self._detach(conn, ns, lease_id, key)

        return tx

    async def _create(
        self, key: str, parent: str, lbls: Mapping[str, str] | None, readonly: bool
    ) -> list[Mount]:
        ns = namespaces.required()
        validate_key(key)
        if parent:
            validate_key(parent, "parent")
        base = _clean_labels(lbls)
        lease_id = leases.current()
        now = time.time_ns()

        def tx(conn: sqlite3.Connection) -> str:
            ensure_namespace(conn, ns)
            bparent = ""
            if parent:
                row = conn.execute(
                    "SELECT backend_key FROM snapshots WHERE namespace = ? AND snapshotter = ? "
                    "AND key = ?",
                    (ns, self.name, parent),
                ).fetchone()
                if row is None:
                    raise errdefs.NotFound(f"parent snapshot {parent} does not exist")
                bparent = row[0]
            bkey = self._insert(conn, ns, key, parent, base, now)
            self._attach(conn, ns, lease_id, key)
            return f"{bkey}\x00{bparent}"

        async with self._lock:
            bkey, _, bparent = (await self._db.write(tx)).partition("\x00")
            create = self._backend.view if readonly else self._backend.prepare
            try:
                return await create(bkey, bparent, _inherited(base))
            except BaseException:
                await self._db.write(self._delete_row(ns, key, lease_id))
                raise

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(key, parent, labels, readonly=False)

    async def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(key, parent, labels, readonly=True)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        ns = namespaces.required()
        validate_key(name, "name")
        validate_key(key)
        base = _clean_labels(labels)
        lease_id = leases.current()
        now = time.time_ns()

        def reserve(conn: sqlite3.Connection) -> tuple[str, str]:
            row = conn.execute(
                "SELECT backend_key, parent FROM snapshots WHERE namespace = ? "
                "AND snapshotter = ? AND key = ?",
                (ns, self.name, key),
            ).fetchone()
            if row is None:
                raise _not_found(key)
            bkey, parent = row
            name_key = self._insert(conn, ns, name, parent, base, now)
            self._attach(conn, ns, lease_id, name)
            return bkey, name_key

        def finish(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (ns, self.name, key),
            )
            self._detach(conn, ns, lease_id, key)

        async with self._lock:
            bkey, name_key = await self._db.write(reserve)
            try:
                await self._backend.commit(name_key, bkey, _inherited(base))
            except BaseException:
                await self._db.write(self._delete_row(ns, name, lease_id))
                raise
            await self._db.write(finish)

    async def remove(self, key: str) -> None:
        ns = namespaces.required()
        validate_key(key)
        lease_id = leases.current()

        def tx(conn: sqlite3.Connection) -> None:
            if (
                conn.execute(
                    "SELECT 1 FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                    (ns, self.name, key),
                ).fetchone()
                is None
            ):
                raise _not_found(key)
            if conn.execute(
                "SELECT 1 FROM snapshots WHERE namespace = ? AND snapshotter = ? AND parent = ? "
                "LIMIT 1",
                (ns, self.name, key),
            ).fetchone():
                raise errdefs.FailedPrecondition("cannot remove snapshot with child")
            conn.execute(
                "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (ns, self.name, key),
            )
            self._detach(conn, ns, lease_id, key)
            self._db.mark_dirty()

        async with self._lock:
            await self._db.write(tx)
        if self._on_remove is not None:
            self._on_remove(self.name)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        ns = namespaces.required()
        if not info.name:
            raise errdefs.InvalidArgument("snapshot name must not be empty")
        now = time.time_ns()

        def tx(conn: sqlite3.Connection) -> _Row:
            row: _Row | None = conn.execute(
                f"SELECT {_COLUMNS} FROM snapshots WHERE namespace = ? AND snapshotter = ? "
                "AND key = ?",
                (ns, self.name, info.name),
            ).fetchone()
            if row is None:
                raise _not_found(info.name)
            new = update_labels(info.name, load_map(row[3]), info.labels, fieldpaths)
            conn.execute(
                "UPDATE snapshots SET labels = ?, updated_at = ? WHERE namespace = ? "
                "AND snapshotter = ? AND key = ?",
                (dump_map(new), now, ns, self.name, info.name),
            )
            return (row[0], row[1], row[2], dump_map(new), row[4], now)

        row = await self._db.write(tx)
        return _merge(await self._backend.stat(row[1]), row)

    # -- garbage collection

    def referenced(self) -> set[str]:
        """Backend keys some row names, in every namespace."""
        rows: builtins.list[tuple[str]] = self._db.read(
            lambda c: c.execute(
                "SELECT backend_key FROM snapshots WHERE snapshotter = ?", (self.name,)
            ).fetchall()
        )
        return {r[0] for r in rows}

    async def collect(self) -> builtins.list[str]:
        """Remove backend snapshots no row names, children before parents, then
        let the backend clean up; returns the backend keys removed."""
        async with self._lock:
            keep = self.referenced()
            infos = [i async for i in self._backend.walk()]
            children: dict[str, int] = {}
            for i in infos:
                if i.parent:
                    children[i.parent] = children.get(i.parent, 0) + 1
            by_name = {i.name: i for i in infos}
            doomed = [i.name for i in infos if i.name not in keep]
            removed: builtins.list[str] = []
            # Leaves first; removing one may free its parent for a later pass.
            pending = set(doomed)
            while pending:
                leaves = sorted(k for k in pending if not children.get(k))
                if not leaves:
                    break  # the rest still carry snapshots a row names
                for k in leaves:
                    pending.discard(k)
                    try:
                        await self._backend.remove(k)
                    except errdefs.ContainerdError as exc:
                        log.warning(
                            "failed to remove snapshot",
                            extra={"snapshotter": self.name, "key": k, "error": str(exc)},
                        )
                        continue
                    removed.append(k)
                    parent = by_name[k].parent
                    if parent:
                        children[parent] -= 1
            await self._backend.cleanup()
            return removed

    async def cleanup(self) -> None:
        await self.collect()

    async def close(self) -> None:
        """The backend belongs to its own plugin, which closes it."""


class SnapshotCollectible:
    """Snapshot rows as nodes of the garbage collection graph.

    Node keys are ``<snapshotter>/<key>``.  Roots are snapshots labelled
    ``containerd.io/gc.root``; a snapshot refers to its parent and to what
    its ``containerd.io/gc.ref.*`` labels name (a flat one to its parent only,
    itself flat).
    """

    type = ResourceType.SNAPSHOT

    def all(self, conn: sqlite3.Connection) -> Iterable[Node]:
        for ns, sn, key in conn.execute("SELECT namespace, snapshotter, key FROM snapshots"):
            yield Node(ResourceType.SNAPSHOT, ns, f"{sn}/{key}")

    def roots(self, conn: sqlite3.Connection, now: int) -> Iterable[Node]:
        for ns, sn, key, text in conn.execute(
            "SELECT namespace, snapshotter, key, labels FROM snapshots WHERE labels LIKE ?",
            (f"%{LABEL_ROOT}%",),
        ):
            if LABEL_ROOT in load_map(text):
                yield Node(ResourceType.SNAPSHOT, ns, f"{sn}/{key}")

    def references(self, conn: sqlite3.Connection, node: Node) -> Iterable[Node]:
        sn, _, key = node.key.partition("/")
        row = conn.execute(
            "SELECT parent, labels FROM snapshots WHERE namespace = ? AND snapshotter = ? "
            "AND key = ?",
            (node.namespace, sn, key),
        ).fetchone()
        if row is None:
            return
        parent, text = row
        if parent:
            yield Node(ResourceType.SNAPSHOT, node.namespace, f"{sn}/{parent}", node.flat)
        if not node.flat and "containerd.io/gc.ref." in text:
            yield from label_refs(node.namespace, load_map(text))

    def remove(self, conn: sqlite3.Connection, node: Node) -> None:
        sn, _, key = node.key.partition("/")
        conn.execute(
            "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
            (node.namespace, sn, key),
        )
