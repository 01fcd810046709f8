"""The metadata database: one SQLite file holding everything namespaced.

Schema (``PRAGMA user_version`` is the schema version; ``MIGRATIONS[i]``
moves version i to i+1, each inside one transaction).  Times are integer
nanoseconds since the epoch (containerd's resolution); labels and other
string maps are JSON objects; ``google.protobuf.Any`` values are stored as
their serialized bytes.

    namespaces(name PK, labels, created_at, updated_at)
    containers(namespace, id, labels, image, runtime_name, runtime_options,
               spec, snapshotter, snapshot_key, extensions, created_at,
               updated_at; PK(namespace, id))
        runtime_options, spec: serialized Any (NULL when unset);
        extensions: serialized ``map<string, Any>`` as a JSON object of
        name -> [type_url, base64 value]
    images(namespace, name, labels, media_type, digest, size, annotations,
           created_at, updated_at; PK(namespace, name))   -- the target descriptor inline
    leases(namespace, id, labels, created_at; PK(namespace, id))
    lease_resources(namespace, lease, type, id; PK(namespace, lease, type, id))
        type is containerd's resource type: "content", "ingests",
        "snapshots/<snapshotter>"; rows go with their lease (cascade)
    content(namespace, digest, size, labels, created_at, updated_at;
            PK(namespace, digest))      -- a blob's visibility in a namespace
    ingests(namespace, ref, backend_ref, expected, created_at, expires_at;
            PK(namespace, ref))        -- namespaced names of backend ingests
        backend_ref: the content store's ref, ``<ns>/<seq>/<ref>``; expected:
        set only while the ingest shares a blob another namespace committed
        (no backend ingest exists then; GC keeps that blob); expires_at
        (schema 3): when garbage collection may drop an ingest no lease
        holds, 24h after its writer last opened it; NULL for an ingest
        opened under a lease, which lives exactly as long as the lease
    snapshots(namespace, snapshotter, key, backend_key, parent, labels,
              created_at, updated_at; PK(namespace, snapshotter, key))  -- schema 4
        a snapshot's visibility in a namespace (metadata/snapshots.py):
        backend_key is the core snapshotter's key, ``<ns>/<seq>/<key>``;
        parent is the parent's key in the same namespace ('' for none); kind
        and usage live in the backend
    snapshot_sequences(namespace, snapshotter, value; PK(namespace, snapshotter))
        the last ``<seq>`` handed out there, so no backend key is reused
        (kept when the namespace goes: its backend snapshots may outlive it)

Garbage collection (:mod:`pycontainerd.metadata.gc`) reads these tables as
a graph: images, containers, live leases, unexpired ingests and objects
labelled ``containerd.io/gc.root`` are roots; ``containerd.io/gc.ref.*``
labels are edges; unreachable ``leases``, ``content``, ``ingests`` and
``snapshots`` rows are deleted in one transaction.

The tables of objects a user keeps (images, containers, blobs, snapshots)
are listed in ``NAMESPACED_TABLES`` so a namespace that still holds any
cannot be deleted; leases and ingests go with their namespace.

The file runs in WAL mode with ``synchronous=FULL`` so a committed change
survives a crash.  Every write runs on one dedicated thread (SQLite allows
one writer at a time anyway), keeping fsyncs off the event loop; reads run on
their own connection in the caller's thread, which WAL lets proceed while a
write is in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pycontainerd._sqlite import connect

__all__ = ["NAMESPACED_TABLES", "Database"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS: list[str] = [
    """
    CREATE TABLE namespaces (
        name TEXT PRIMARY KEY,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    """
    CREATE TABLE containers (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        id TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        image TEXT NOT NULL DEFAULT '',
        runtime_name TEXT NOT NULL DEFAULT '',
        runtime_options BLOB,
        spec BLOB,
        snapshotter TEXT NOT NULL DEFAULT '',
        snapshot_key TEXT NOT NULL DEFAULT '',
        extensions TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, id)
    ) WITHOUT ROWID;
    CREATE TABLE images (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        name TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        media_type TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        annotations TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
    ) WITHOUT ROWID;
    CREATE TABLE leases (
        namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
        id TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, id)
    ) WITHOUT ROWID;
    CREATE TABLE lease_resources (
        namespace TEXT NOT NULL,
        lease TEXT NOT NULL,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (namespace, lease, type, id),
        FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE content (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, digest)
    ) WITHOUT ROWID;
    CREATE INDEX content_by_digest ON content(digest);
    CREATE TABLE ingests (
        namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
        ref TEXT NOT NULL,
        backend_ref TEXT NOT NULL UNIQUE,
        expected TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, ref)
    ) WITHOUT ROWID;
    """,
    # 3: ingests expire unless a lease holds them (read by garbage collection).
    # Ingests from before it get the expiry containerd gives an unleased one.
    """
    ALTER TABLE ingests ADD COLUMN expires_at INTEGER;
    UPDATE ingests SET expires_at = created_at + 86400000000000;
    """,
    # 4: namespaced snapshots (see metadata/snapshots.py).
    """
    CREATE TABLE snapshots (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        snapshotter TEXT NOT NULL,
        key TEXT NOT NULL,
        backend_key TEXT NOT NULL,
        parent TEXT NOT NULL DEFAULT '',
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, snapshotter, key),
        UNIQUE (snapshotter, backend_key)
    ) WITHOUT ROWID;
    CREATE INDEX snapshots_by_parent ON snapshots(namespace, snapshotter, parent);
    CREATE TABLE snapshot_sequences (
        namespace TEXT NOT NULL,
        snapshotter TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (namespace, snapshotter)
    ) WITHOUT ROWID;
    """,
]

#: Page cache of the read connection, in KiB (SQLite's default is 2 MiB).
READ_CACHE_KIB = 64 << 10

#: table name -> what containerd calls those objects in "still has ..." errors.
NAMESPACED_TABLES: dict[str, str] = {
    "images": "images",
    "containers": "containers",
    "content": "blobs",
    "snapshots": "snapshots",
}


class Database:
    """Owns the SQLite file, its schema and the single writer thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.path = path
        self._writer = connect(path)
        self._migrate()
        self._reader = connect(path)
        # Reads keep their pages between transactions (WAL tells it when they
        # went stale): listing thousands of records then reads no file.
        self._reader.execute(f"PRAGMA cache_size=-{READ_CACHE_KIB}")
        self._reader_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metadata-writer")
        #: Bumped by every change that may leave garbage behind (a deleted image,
        #: container or lease, a dropped lease resource), as containerd's
        #: ``db.dirty``: the garbage collector runs when it has moved, and resets it.
        self.dirty = 0
        self._mutation_callbacks: list[Callable[[bool], None]] = []

    def _migrate(self) -> None:
        (version,) = self._writer.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path}: schema version {version} is newer than this daemon knows "
                f"({len(MIGRATIONS)})"
            )
        for target in range(version, len(MIGRATIONS)):
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[target].split(";"):
                    if stmt.strip():
                        self._writer.execute(stmt)
                self._writer.execute(f"PRAGMA user_version={target + 1}")
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            log.info("metadata schema migrated", extra={"version": target + 1})

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, notify: bool = True) -> T:
        """Run ``fn`` in one write transaction on the writer thread.

        Once it has committed, the mutation callbacks hear of it (with
        whether anything is dirty), unless ``notify`` is false — the
        collector's own sweep is not a mutation to schedule a collection for.
        """
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool, self._transaction, fn)
        if notify:
            dirty = self.dirty > 0
            for callback in self._mutation_callbacks:
                callback(dirty)
        return result

    def register_mutation_callback(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(dirty)`` on the event loop after every committed write
        (containerd's ``RegisterMutationCallback``; the GC scheduler counts them)."""
        self._mutation_callbacks.append(callback)

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (a consistent snapshot)."""
        with self._reader_lock:
            conn = self._reader
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

    def data_version(self) -> int:
        """A number that changes whenever a write has committed since the last
        call (SQLite's ``PRAGMA data_version`` on the reader): what read
        caches compare to know they are still current."""
        with self._reader_lock:
            row = self._reader.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def mark_dirty(self) -> None:
        """Note that a change inside the current write may have orphaned something."""
        self.dirty += 1

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._reader.close()
        self._writer.close()
