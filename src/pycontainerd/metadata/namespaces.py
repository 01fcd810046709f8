"""Namespaces in the metadata database.

A namespace is deleted only when empty: no images, blobs, containers or
snapshots left in it (leases and ingests go with it).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from pycontainerd import errdefs, labels, namespaces
from pycontainerd.errdefs import q
from pycontainerd.metadata.db import NAMESPACED_TABLES, Database

__all__ = ["Namespace", "NamespaceStore", "ensure_namespace"]


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


def ensure_namespace(conn: sqlite3.Connection, name: str) -> None:
    """Create ``name`` if missing, inside the caller's write transaction.

    Creating any object in a namespace creates the namespace, as in containerd.
    """
    now = time.time()
    conn.execute(
        "INSERT OR IGNORE INTO namespaces(name, labels, created_at, updated_at) "
        "VALUES (?, '{}', ?, ?)",
        (name, now, now),
    )


def _not_found(name: str) -> errdefs.NotFound:
    return errdefs.NotFound(f"namespace {q(name)}")


# containerd 1.6 names what a namespace still holds in this order.
_HELD_ORDER = ("images", "content", "containers", "snapshots")


def _held(conn: sqlite3.Connection, name: str) -> list[str]:
    """What keeps namespace ``name`` from being deleted, worded as containerd
    does: ``images, blobs, containers, snapshots on "overlayfs" snapshotter``
    (one entry per snapshotter, by name)."""
    held: list[str] = []
    for table in _HELD_ORDER:
        if table == "snapshots":
            rows = conn.execute(
                "SELECT DISTINCT snapshotter FROM snapshots WHERE namespace = ? "
                "ORDER BY snapshotter",
                (name,),
            )
            held.extend(f"snapshots on {q(sn)} snapshotter" for (sn,) in rows)
        elif conn.execute(f"SELECT 1 FROM {table} WHERE namespace = ? LIMIT 1", (name,)).fetchone():
            held.append(NAMESPACED_TABLES[table])
    return held


class NamespaceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, labels_: Mapping[str, str] | None = None) -> Namespace:
        namespaces.validate(name)
        lbls = dict(labels_ or {})
        labels.validate_all(lbls)
        now = time.time()

        def tx(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO namespaces(name, labels, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?)",
                    (name, json.dumps(lbls, sort_keys=True), now, now),
                )
            except sqlite3.IntegrityError:
                raise errdefs.AlreadyExists(f"namespace {q(name)}") from None

        await self._db.write(tx)
        return Namespace(name, lbls)

    def get(self, name: str) -> Namespace:
        namespaces.validate(name)
        row = self._db.read(
            lambda c: c.execute("SELECT labels FROM namespaces WHERE name = ?", (name,)).fetchone()
        )
        if row is None:
            raise _not_found(name)
        return Namespace(name, json.loads(row[0]))

    def list(self) -> list[Namespace]:
        rows = self._db.read(
            lambda c: c.execute("SELECT name, labels FROM namespaces ORDER BY name").fetchall()
        )
        return [Namespace(n, json.loads(lbl)) for n, lbl in rows]

    async def update_labels(
        self, name: str, new: Mapping[str, str], paths: builtins.list[str] | None
    ) -> Namespace:
        """Apply a field-mask update: no paths or ``labels`` replaces all labels,
        ``labels.KEY`` sets (or, when absent from ``new``, removes) one key.

        As containerd's, an update creates a namespace that does not exist:
        always with paths (containerd sets each label, creating the namespace
        as it goes), otherwise when it sets any label.
        """
        namespaces.validate(name)
        for p in paths or []:
            if p != "labels" and not p.startswith("labels."):
                raise errdefs.InvalidArgument(f"cannot update {q(p)} field on namespace {q(name)}")

        def tx(conn: sqlite3.Connection) -> Namespace:
            row = conn.execute("SELECT labels FROM namespaces WHERE name = ?", (name,)).fetchone()
            current: dict[str, str] = {} if row is None else json.loads(row[0])
            if not paths or "labels" in paths:
                current = dict(new)
            else:
                for p in paths:
                    key = p[len("labels.") :]
                    if key in new and new[key] != "":
                        current[key] = new[key]
                    else:
                        current.pop(key, None)
            labels.validate_all(current)
            if row is None and not paths and not current:
                return Namespace(name, current)  # nothing set: nothing created
            ensure_namespace(conn, name)
            conn.execute(
                "UPDATE namespaces SET labels = ?, updated_at = ? WHERE name = ?",
                (json.dumps(current, sort_keys=True), time.time(), name),
            )
            return Namespace(name, current)

        return await self._db.write(tx)

    async def delete(self, name: str) -> None:
        namespaces.validate(name)

        def tx(conn: sqlite3.Connection) -> None:
            if held := _held(conn, name):
                raise errdefs.FailedPrecondition(
                    f"namespace {q(name)} must be empty, but it still has {', '.join(held)}"
                )
            if conn.execute("DELETE FROM namespaces WHERE name = ?", (name,)).rowcount == 0:
                raise _not_found(name)

        await self._db.write(tx)
