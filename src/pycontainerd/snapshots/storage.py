"""The metastore a local snapshotter keeps beside its directories.

One SQLite file (``metadata.db`` in the snapshotter's root) records every
snapshot, as containerd's ``snapshots/storage`` does in bolt.  A snapshot's
numeric id names its directory (``snapshots/<id>``): keys are client
strings and never become paths.  AUTOINCREMENT never hands out the id of a
committed row again, even a deleted one; but the id a rolled-back
transaction took (a create that failed, or a crash before its commit) is
handed out again, and such a create may have left its directory behind.
No row owns that directory, so the snapshotter replaces it when the id comes
round again, and :meth:`cleanup` removes it before then.

Schema (``PRAGMA user_version`` is the schema version)::

    snapshots(id INTEGER PK AUTOINCREMENT, key UNIQUE, parent_id -> snapshots(id),
              kind, labels, created_at, updated_at, size, inodes)

``parent_id`` links by id, so committing (which renames a key to its name
and keeps the id) leaves children pointing at it; the foreign key refuses
to delete a parent that still has children.  ``kind`` is the wire number of
:class:`~pycontainerd.snapshots.Kind`; ``labels`` is a JSON object; times
are integer nanoseconds since the epoch; ``size`` and ``inodes`` are the
usage measured at commit (zero before).

The file runs in WAL mode with ``synchronous=FULL`` and foreign keys on.
A snapshotter does its filesystem work *inside* a write transaction
(:meth:`MetaStore.transaction`) so that the row and the directory change
together: if the directory work fails the row is rolled back.  Every call
blocks; snapshotters run them in a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pycontainerd import errdefs, filters, labels
from pycontainerd._sqlite import connect, dump_map, load_map, to_datetime
from pycontainerd.snapshots import Info, Kind, Usage, validate_key

__all__ = ["MetaStore", "Snapshot", "Transaction"]

SCHEMA_VERSION = 1

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
    kind INTEGER NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX snapshots_by_parent ON snapshots(parent_id);
"""

_KIND_NAMES = {Kind.ACTIVE: "active", Kind.VIEW: "view", Kind.COMMITTED: "committed"}

_SELECT_INFO = """
SELECT s.id, s.key, s.kind, COALESCE(p.key, ''), s.labels, s.created_at, s.updated_at,
       s.size, s.inodes
FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a snapshotter needs to build mounts: ids, nearest parent first."""

    id: str
    kind: Kind
    parent_ids: tuple[str, ...] = ()


def _now_ns() -> int:
    return time.time_ns()


def _row_info(row: tuple[object, ...]) -> tuple[str, Info, Usage]:
    sid, key, kind, parent, labels_text, created, updated, size, inodes = row
    assert isinstance(labels_text, str) and isinstance(created, int) and isinstance(updated, int)
    assert isinstance(size, int) and isinstance(inodes, int) and isinstance(kind, int)
    info = Info(
        name=str(key),
        kind=Kind(kind),
        parent=str(parent),
        labels=load_map(labels_text),
        created_at=to_datetime(created),
        updated_at=to_datetime(updated),
    )
    return str(sid), info, Usage(size=size, inodes=inodes)


def _field(info: Info) -> filters.FieldFunc:
    """containerd's snapshot adaptor: name, parent, kind (by name), labels.<key>."""

    def field(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "name":
            return info.name, True
        if head == "parent":
            return info.parent, True
        if head == "kind":
            name = _KIND_NAMES.get(info.kind)
            return (name, True) if name else ("", False)
        if head == "labels" and len(path) > 1 and info.labels:
            key = ".".join(path[1:])
            if key in info.labels:
                return info.labels[key], True
        return "", False

    return field


class Transaction:
    """The metastore operations, all inside one open SQLite transaction."""

    def __init__(self, conn: sqlite3.Connection, *, writable: bool) -> None:
        self._conn = conn
        self.writable = writable

    def _require_write(self) -> None:
        if not self.writable:
            raise errdefs.FailedPrecondition("snapshot metastore: write in a read-only transaction")

    def _lookup(self, key: str) -> tuple[int, int, int | None] | None:
        row = self._conn.execute(
            "SELECT id, kind, parent_id FROM snapshots WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _parent_ids(self, first: int) -> tuple[str, ...]:
        rows = self._conn.execute(
            """
            WITH RECURSIVE chain(id, parent_id, depth) AS (
                SELECT id, parent_id, 0 FROM snapshots WHERE id = ?
                UNION ALL
                SELECT s.id, s.parent_id, c.depth + 1
                FROM snapshots s JOIN chain c ON s.id = c.parent_id
            )
            SELECT id FROM chain ORDER BY depth
            """,
            (first,),
        ).fetchall()
        return tuple(str(r[0]) for r in rows)

    # -- reads

    def get_info(self, key: str) -> tuple[str, Info, Usage]:
        """The id, info and recorded usage of any snapshot."""
        row = self._conn.execute(_SELECT_INFO + " WHERE s.key = ?", (key,)).fetchone()
        if row is None:
            raise errdefs.NotFound(f"snapshot {key} does not exist")
        return _row_info(row)

    def get_snapshot(self, key: str) -> Snapshot:
        """The ids needed to mount an active snapshot or a view."""
        found = self._lookup(key)
        if found is None:
            raise errdefs.NotFound(f"snapshot {key} does not exist")
        sid, kind, parent_id = found
        if kind not in (Kind.ACTIVE, Kind.VIEW):
            raise errdefs.FailedPrecondition(f"requested snapshot {key} not active or view")
        parents = self._parent_ids(parent_id) if parent_id is not None else ()
        return Snapshot(id=str(sid), kind=Kind(kind), parent_ids=parents)

    def walk(self, *filter_texts: str) -> list[tuple[str, Info]]:
        """Every snapshot (id and info) matching any of the filters, by key."""
        flt = filters.parse_all(filter_texts)
        found = []
        for row in self._conn.execute(_SELECT_INFO + " ORDER BY s.key").fetchall():
            sid, info, _ = _row_info(row)
            if flt.match(_field(info)):
                found.append((sid, info))
        return found

    def id_map(self) -> dict[str, str]:
        """Every id (as a directory name) with its key."""
        return {str(i): k for i, k in self._conn.execute("SELECT id, key FROM snapshots")}

    # -- writes

    def create(
        self,
        kind: Kind,
        key: str,
        parent: str = "",
        labels_: Mapping[str, str] | None = None,
    ) -> Snapshot:
        """Record a new active snapshot or view on a committed parent."""
        self._require_write()
        if kind not in (Kind.ACTIVE, Kind.VIEW):
            raise errdefs.InvalidArgument(
                f"snapshot type {kind} invalid; only snapshots of type Active or View "
                "can be created"
            )
        validate_key(key)
        labels.validate_all(labels_)
        parent_id: int | None = None
        if parent:
            found = self._lookup(parent)
            if found is None:
                raise errdefs.NotFound(f"missing parent {errdefs.q(parent)} bucket")
            if found[1] != Kind.COMMITTED:
                raise errdefs.InvalidArgument(
                    f"parent {errdefs.q(parent)} is not committed snapshot"
                )
            parent_id = found[0]
        if self._lookup(key) is not None:
            raise errdefs.AlreadyExists(f"snapshot {key}")
        now = _now_ns()
        cur = self._conn.execute(
            "INSERT INTO snapshots (key, parent_id, kind, labels, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, parent_id, int(kind), dump_map(labels_), now, now),
        )
        sid = cur.lastrowid
        assert sid is not None
        parents = self._parent_ids(parent_id) if parent_id is not None else ()
        return Snapshot(id=str(sid), kind=kind, parent_ids=parents)

    def commit(
        self, key: str, name: str, usage: Usage, labels_: Mapping[str, str] | None = None
    ) -> str:
        """Turn active ``key`` into committed ``name`` (same id); labels are replaced."""
        self._require_write()
        validate_key(name, "name")
        labels.validate_all(labels_)
        if self._lookup(name) is not None:
            raise errdefs.AlreadyExists(f"committed snapshot {name}")
        found = self._lookup(key)
        if found is None:
            raise errdefs.NotFound(f"failed to get active snapshot {errdefs.q(key)}")
        if found[1] != Kind.ACTIVE:
            raise errdefs.FailedPrecondition(f"snapshot {errdefs.q(key)} is not active")
        now = _now_ns()
        self._conn.execute(
            "UPDATE snapshots SET key = ?, kind = ?, labels = ?, created_at = ?, updated_at = ?,"
            " size = ?, inodes = ? WHERE id = ?",
            (
                name,
                int(Kind.COMMITTED),
                dump_map(labels_),
                now,
                now,
                usage.size,
                usage.inodes,
                found[0],
            ),
        )
        return str(found[0])

    def remove(self, key: str) -> tuple[str, Kind]:
        """Delete a snapshot that has no children; its id and kind."""
        self._require_write()
        found = self._lookup(key)
        if found is None:
            raise errdefs.NotFound(f"snapshot {key}")
        sid, kind, _ = found
        child = self._conn.execute(
            "SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1", (sid,)
        ).fetchone()
        if child is not None:
            raise errdefs.FailedPrecondition("cannot remove snapshot with child")
        self._conn.execute("DELETE FROM snapshots WHERE id = ?", (sid,))
        return str(sid), Kind(kind)

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Change labels by field path (``labels``, ``labels.<key>``); nothing else."""
        self._require_write()
        row = self._conn.execute(_SELECT_INFO + " WHERE s.key = ?", (info.name,)).fetchone()
        if row is None:
            raise errdefs.NotFound(f"snapshot {info.name} does not exist")
        sid, current, _ = _row_info(row)
        new_labels = dict(current.labels)
        if fieldpaths:
            for path in fieldpaths:
                if path.startswith("labels."):
                    lkey = path[len("labels.") :]
                    value = info.labels.get(lkey, "")
                    if value:
                        new_labels[lkey] = value
                    else:
                        new_labels.pop(lkey, None)
                elif path == "labels":
                    new_labels = dict(info.labels)
                else:
                    raise errdefs.InvalidArgument(
                        f"cannot update {errdefs.q(path)} field on snapshot {errdefs.q(info.name)}"
                    )
        else:
            new_labels = dict(info.labels)
        labels.validate_all(new_labels)
        now = _now_ns()
        self._conn.execute(
            "UPDATE snapshots SET labels = ?, updated_at = ? WHERE id = ?",
            (dump_map(new_labels), now, int(sid)),
        )
        return Info(
            name=current.name,
            kind=current.kind,
            parent=current.parent,
            labels=new_labels,
            created_at=current.created_at,
            updated_at=to_datetime(now),
        )


class MetaStore:
    """One snapshotter's SQLite file.

    Writes are serialised on one connection; reads use another, which WAL
    lets run while a write (and the directory work inside it) is in flight.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = connect(path)
        self._write_lock = threading.RLock()
        self._migrate()
        self._reader = connect(path)
        self._read_lock = threading.Lock()

    def _migrate(self) -> None:
        (version,) = self._writer.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            self._writer.close()
            raise errdefs.FailedPrecondition(
                f"{self.path}: snapshot metastore schema version {version} is not {SCHEMA_VERSION}"
            )
        with self.transaction(writable=True):
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._writer.execute(stmt)
            self._writer.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def transaction(self, *, writable: bool = False) -> Iterator[Transaction]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        lock, conn = (
            (self._write_lock, self._writer) if writable else (self._read_lock, self._reader)
        )
        with lock:
            conn.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
            try:
                yield Transaction(conn, writable=writable)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def read(self, fn: Callable[[Transaction], T]) -> T:
        with self.transaction() as tx:
            return fn(tx)

    def write(self, fn: Callable[[Transaction], T]) -> T:
        with self.transaction(writable=True) as tx:
            return fn(tx)

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._reader.close()
            self._writer.close()
