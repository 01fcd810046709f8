"""Garbage collection rules: the metadata database read as a reference graph.

Behaviour follows containerd 1.6's ``metadata/gc.go`` and
``DB.GarbageCollect``.  Nodes are :class:`pycontainerd.gc.Node`s keyed by
namespace and, per type: a digest (content), an ingest ref (ingests), a
lease id (leases) or ``<snapshotter>/<key>`` (snapshots).

Roots, per namespace:

* a lease, unless its ``containerd.io/gc.expire`` label (RFC 3339) is in
  the past — an expired lease is not a root, so the sweep deletes it — with
  every resource it holds: content, ingests, ``snapshots/<snapshotter>``
  keys; a lease labelled ``containerd.io/gc.flat`` holds them flat (the
  resources themselves, not what their labels refer to);
* an image's target digest, and what the image's labels refer to;
* a container's snapshot (``<snapshotter>/<snapshot_key>``, when it has a
  snapshotter) and what its labels refer to;
* content and snapshots labelled ``containerd.io/gc.root``;
* an ingest whose ``expires_at`` is still ahead (one no lease holds stays
  24 hours after its writer last opened it; see ``metadata/content.py``).

References (edges):

* from labels on content, images, containers and snapshots:
  ``containerd.io/gc.ref.content`` and ``containerd.io/gc.ref.content.<name>``
  or ``…content/<name>`` name a digest in the same namespace;
  ``containerd.io/gc.ref.snapshot.<snapshotter>`` (or
  ``…<snapshotter>/<name>``) names a snapshot key of that snapshotter;
* a snapshot refers to its parent (a flat one to its parent only, itself
  flat);
* an ingest refers to the blob it expects (a write sharing a blob another
  namespace committed).

Snapshot rows take part through a :class:`Collectible` the metadata
snapshot store registers (:class:`pycontainerd.metadata.snapshots.SnapshotCollectible`:
its rows, roots, references and how to delete one), so this module holds
no snapshot SQL of its own.

The sweep deletes the unreachable ``leases`` (their resources cascade),
``content``, ``ingests`` and ``snapshots`` rows in one write transaction;
only after it has committed do the backends lose anything.  The content
store drops blobs no namespace has a row for and ingests no row names
(:meth:`ContentStore.collect_locked`); the collector holds the content
store's lock exclusively from before the sweep until then, so a commit in
flight (blob in the backend, row not yet written) is never swept.  Each
snapshotter that is dirty — one of its rows was swept, a snapshot was
removed outside collection, or the daemon just started (the metadata
plugin marks every snapshotter dirty when it opens, as a crash may have
left half-made or half-removed snapshots) — then runs its cleanup callback
(:meth:`GarbageCollector.register_snapshotter`): the backend snapshots no
row names are removed, children first, and the backend clears its
directory of anything it does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pycontainerd import leases
from pycontainerd.gc import Node, ResourceType, sweep, tricolor
from pycontainerd.metadata._codec import load_map
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.db import Database
from pycontainerd.times import EPOCH

__all__ = [
    "LABEL_CONTENT_REF",
    "LABEL_EXPIRE",
    "LABEL_FLAT",
    "LABEL_REF",
    "LABEL_ROOT",
    "LABEL_SNAPSHOT_REF",
    "Collectible",
    "GCStats",
    "GarbageCollector",
    "Graph",
    "parse_expiry",
]

log = logging.getLogger(__name__)

LABEL_ROOT = "containerd.io/gc.root"
LABEL_REF = "containerd.io/gc.ref."
LABEL_CONTENT_REF = "containerd.io/gc.ref.content"
LABEL_SNAPSHOT_REF = "containerd.io/gc.ref.snapshot."
LABEL_EXPIRE = leases.EXPIRE_LABEL
LABEL_FLAT = "containerd.io/gc.flat"

CONTENT = ResourceType.CONTENT
SNAPSHOT = ResourceType.SNAPSHOT
LEASE = ResourceType.LEASE
INGEST = ResourceType.INGEST

_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})\Z")

#: SQL: a ``labels`` column (JSON) that may hold a reference label.
_HAS_REFS = "labels LIKE '%containerd.io/gc.ref.%'"
#: SQL: the labels when they may hold a reference, else NULL.
_REF_LABELS = f"CASE WHEN {_HAS_REFS} THEN labels END"


def parse_expiry(value: str) -> int | None:
    """An RFC 3339 time (Go's ``time.RFC3339``) as nanoseconds since the epoch, or None."""
    m = _RFC3339.match(value)
    if m is None:
        return None
    base, frac, zone = m.groups()
    try:
        when = dt.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    micros = (when - EPOCH) // dt.timedelta(microseconds=1)
    return micros * 1000 + int((frac or "0").ljust(9, "0"))


class Collectible(Protocol):
    """One more kind of resource taking part in collection (snapshots).

    Every method runs inside the collection's write transaction on ``conn``
    and must not block on anything but the database.
    """

    #: The node type this collectible owns.
    type: ResourceType

    def all(self, conn: sqlite3.Connection) -> Iterable[Node]:
        """Every node of this type that a collection may remove."""
        ...

    def roots(self, conn: sqlite3.Connection, now: int) -> Iterable[Node]:
        """Nodes in use by themselves (e.g. labelled ``containerd.io/gc.root``)."""
        ...

    def references(self, conn: sqlite3.Connection, node: Node) -> Iterable[Node]:
        """What ``node`` refers to (a snapshot's parent, its labels' references).

        A flat node (held by a ``containerd.io/gc.flat`` lease) refers to its
        parent only, itself flat, as containerd's flat snapshots do.
        """
        ...

    def remove(self, conn: sqlite3.Connection, node: Node) -> None:
        """Delete ``node``'s row."""
        ...


SnapshotterCleanup = Callable[[], Awaitable[None]]


def label_refs(ns: str, labels: Mapping[str, str]) -> Iterator[Node]:
    """The content and snapshot nodes that ``containerd.io/gc.ref.*`` labels name."""
    for key, value in labels.items():
        if not key.startswith(LABEL_REF):
            continue
        if key.startswith(LABEL_CONTENT_REF):
            rest = key[len(LABEL_CONTENT_REF) :]
            # Named references ("….content.config", "….content/l.0"); other
            # keys merely starting with the prefix are not references.
            if not rest or rest[0] in "./":
                yield Node(CONTENT, ns, value)
        elif key.startswith(LABEL_SNAPSHOT_REF):
            snapshotter = key[len(LABEL_SNAPSHOT_REF) :].split("/", 1)[0]
            yield Node(SNAPSHOT, ns, f"{snapshotter}/{value}")


class Graph:
    """The reference graph as the database holds it inside one transaction.

    Labels that can carry references are read up front (rows whose labels
    mention ``containerd.io/gc.ref.``), so following an edge costs a dict
    lookup rather than a query.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        now: int,
        collectibles: Mapping[ResourceType, Collectible] | None = None,
    ) -> None:
        self._conn = conn
        self._now = now
        self._collectibles = dict(collectibles or {})
        self._content_labels: dict[tuple[str, str], dict[str, str]] = {
            (ns, dgst): load_map(lbls)
            for ns, dgst, lbls in conn.execute(
                f"SELECT namespace, digest, labels FROM content WHERE {_HAS_REFS}"
            )
        }
        self._expected: dict[tuple[str, str], str] = {
            (ns, ref): expected
            for ns, ref, expected in conn.execute(
                "SELECT namespace, ref, expected FROM ingests WHERE expected != ''"
            )
        }

    def _live_leases(self) -> dict[tuple[str, str], bool]:
        """Unexpired leases -> whether they are flat."""
        live = {}
        for ns, lease_id, text in self._conn.execute("SELECT namespace, id, labels FROM leases"):
            lbls = load_map(text)
            expire = lbls.get(LABEL_EXPIRE)
            if expire is not None:
                at = parse_expiry(expire)
                if at is None:
                    log.info(
                        "ignoring invalid expiration value",
                        extra={"namespace": ns, "lease": lease_id, "value": expire},
                    )
                elif at < self._now:
                    continue
            live[(ns, lease_id)] = LABEL_FLAT in lbls
        return live

    def roots(self) -> Iterator[Node]:
        conn = self._conn
        live = self._live_leases()
        for ns, lease_id in live:
            yield Node(LEASE, ns, lease_id)
        for ns, lease_id, kind, rid in conn.execute(
            "SELECT namespace, lease, type, id FROM lease_resources"
        ):
            flat = live.get((ns, lease_id))
            if flat is None:
                continue  # expired
            if kind == "content":
                yield Node(CONTENT, ns, rid, flat)
            elif kind == "ingests":
                yield Node(INGEST, ns, rid)
            elif kind.startswith("snapshots/"):
                yield Node(SNAPSHOT, ns, f"{kind[len('snapshots/') :]}/{rid}", flat)
        # Labels are only decoded where they may hold a reference.
        for ns, dgst, text in conn.execute(f"SELECT namespace, digest, {_REF_LABELS} FROM images"):
            yield Node(CONTENT, ns, dgst)
            if text is not None:
                yield from label_refs(ns, load_map(text))
        for ns, snapshotter, key, text in conn.execute(
            f"SELECT namespace, snapshotter, snapshot_key, {_REF_LABELS} FROM containers"
        ):
            if snapshotter:
                yield Node(SNAPSHOT, ns, f"{snapshotter}/{key}")
            if text is not None:
                yield from label_refs(ns, load_map(text))
        for ns, dgst, text in conn.execute(
            "SELECT namespace, digest, labels FROM content WHERE labels LIKE ?",
            (f"%{LABEL_ROOT}%",),
        ):
            if LABEL_ROOT in load_map(text):
                yield Node(CONTENT, ns, dgst)
        for ns, ref in conn.execute(
            "SELECT namespace, ref FROM ingests WHERE expires_at > ?", (self._now,)
        ):
            yield Node(INGEST, ns, ref)
        for collectible in self._collectibles.values():
            yield from collectible.roots(conn, self._now)

    def references(self, node: Node) -> Iterable[Node]:
        if node.type == CONTENT:
            if node.flat:
                return ()
            lbls = self._content_labels.get((node.namespace, node.key))
            return label_refs(node.namespace, lbls) if lbls else ()
        if node.type == INGEST:
            expected = self._expected.get((node.namespace, node.key))
            return (Node(CONTENT, node.namespace, expected),) if expected else ()
        collectible = self._collectibles.get(node.type)
        if collectible is not None:
            return collectible.references(self._conn, node)
        return ()

    def all(self) -> Iterator[Node]:
        """Every node a collection may remove (images and containers never are)."""
        conn = self._conn
        for ns, lease_id in conn.execute("SELECT namespace, id FROM leases"):
            yield Node(LEASE, ns, lease_id)
        for ns, dgst in conn.execute("SELECT namespace, digest FROM content"):
            yield Node(CONTENT, ns, dgst)
        for ns, ref in conn.execute("SELECT namespace, ref FROM ingests"):
            yield Node(INGEST, ns, ref)
        for collectible in self._collectibles.values():
            yield from collectible.all(conn)

    def remove(self, node: Node) -> None:
        conn = self._conn
        if node.type == LEASE:
            # Its lease_resources rows cascade.
            conn.execute(
                "DELETE FROM leases WHERE namespace = ? AND id = ?", (node.namespace, node.key)
            )
        elif node.type == CONTENT:
            conn.execute(
                "DELETE FROM content WHERE namespace = ? AND digest = ?",
                (node.namespace, node.key),
            )
        elif node.type == INGEST:
            conn.execute(
                "DELETE FROM ingests WHERE namespace = ? AND ref = ?", (node.namespace, node.key)
            )
        else:
            collectible = self._collectibles.get(node.type)
            if collectible is not None:
                collectible.remove(conn, node)
        log.debug(
            "remove %s",
            node.type.name.lower(),
            extra={"namespace": node.namespace, "key": node.key},
        )

    def collect(self) -> list[Node]:
        """Mark from the roots and delete every unreachable row; returns what went."""
        reachable = tricolor(self.roots(), self.references)
        return sweep(reachable, list(self.all()), self.remove)


@dataclass(frozen=True, slots=True)
class GCStats:
    """One collection, as containerd's ``metadata.GCStats`` (durations in seconds)."""

    #: Time the metadata was held: marking and the sweep's transaction.
    meta_d: float
    #: Time the content store's cleanup took, when it ran.
    content_d: float | None = None
    #: Time each snapshotter's cleanup took, by snapshotter.
    snapshot_d: Mapping[str, float] = field(default_factory=dict)
    #: The rows the sweep deleted.
    removed: tuple[Node, ...] = ()

    @property
    def elapsed(self) -> float:
        """The pause the collection imposed (what the scheduler paces itself by)."""
        return self.meta_d


class GarbageCollector:
    """Collects the metadata database and, after it, the backends (see the module doc)."""

    def __init__(self, db: Database, content: ContentStore | None = None) -> None:
        self._db = db
        self._content = content
        self._collectibles: dict[ResourceType, Collectible] = {}
        self._snapshotters: dict[str, SnapshotterCleanup] = {}
        self._dirty_snapshotters: set[str] = set()
        self._running = asyncio.Lock()

    def register_collectible(self, collectible: Collectible) -> None:
        """Let rows of ``collectible.type`` take part (the snapshot store's hook)."""
        self._collectibles[collectible.type] = collectible

    def register_snapshotter(self, name: str, cleanup: SnapshotterCleanup) -> None:
        """Run ``cleanup`` (remove backend snapshots no row refers to) after a
        collection that removed a snapshot of ``name``, or after it was marked dirty."""
        self._snapshotters[name] = cleanup

    def mark_snapshotter_dirty(self, name: str) -> None:
        """A snapshot of ``name`` was removed outside collection: clean it up next time."""
        self._dirty_snapshotters.add(name)

    def register_mutation_callback(self, callback: Callable[[bool], None]) -> None:
        """``callback(dirty)`` after every committed metadata write (for the scheduler)."""
        self._db.register_mutation_callback(callback)

    @contextlib.asynccontextmanager
    async def _content_locked(self) -> AsyncIterator[None]:
        if self._content is None:
            yield
        else:
            async with self._content.lock.exclusive():
                yield

    async def garbage_collect(self) -> GCStats:
        """Run one collection now; a second caller waits for the first to finish."""
        async with self._running:
            return await self._collect()

    async def _collect(self) -> GCStats:
        db = self._db
        content_d: float | None = None
        async with self._content_locked():
            start = time.monotonic()
            now = time.time_ns()
            collectibles = dict(self._collectibles)

            def tx(conn: sqlite3.Connection) -> list[Node]:
                removed = Graph(conn, now, collectibles).collect()
                db.dirty = 0  # as containerd resets it under its write lock
                return removed

            removed = await db.write(tx, notify=False)
            meta_d = time.monotonic() - start

            content = self._content
            if content is not None and (
                content.dirty or any(n.type in (CONTENT, INGEST) for n in removed)
            ):
                t = time.monotonic()
                try:
                    await content.collect_locked()
                except Exception as exc:
                    log.warning("content garbage collection failed", extra={"error": str(exc)})
                content_d = time.monotonic() - t

        dirty = self._dirty_snapshotters
        self._dirty_snapshotters = set()
        for node in removed:
            if node.type == SNAPSHOT:
                dirty.add(node.key.split("/", 1)[0])
        snapshot_d: dict[str, float] = {}

        async def cleanup(name: str, fn: SnapshotterCleanup) -> None:
            t = time.monotonic()
            try:
                await fn()
            except Exception as exc:
                log.warning(
                    "snapshot garbage collection failed",
                    extra={"snapshotter": name, "error": str(exc)},
                )
            snapshot_d[name] = time.monotonic() - t

        await asyncio.gather(
            *(
                cleanup(name, self._snapshotters[name])
                for name in dirty
                if name in self._snapshotters
            )
        )
        return GCStats(meta_d, content_d, snapshot_d, tuple(removed))
