"""Leases and the resources they hold, in the metadata database.

Behaviour follows containerd 1.6's ``metadata/leases.go``: a lease is an id,
labels and a creation time; it holds resources of the types ``content`` (a
digest), ``ingests`` (an ingest ref) and ``snapshots/<snapshotter>`` (a
snapshot key) until it is deleted, and the garbage collector keeps whatever
a lease holds.  Expiry is only a label (``containerd.io/gc.expire``) that
the collector reads.

As in containerd, lease ids are not held to the identifier rules (Go clients
generate ids such as ``123-a_-b``); they only ever reach SQL as bound
parameters.  Lease labels are not size-capped either.
"""

from __future__ import annotations

import builtins
import sqlite3
import time
from collections.abc import Mapping, Sequence

from pycontainerd import digest, errdefs, filters, namespaces
from pycontainerd.errdefs import q
from pycontainerd.leases import Lease, Resource
from pycontainerd.metadata._adapt import check_map, parse_filters
from pycontainerd.metadata._codec import dump_map, load_map, to_datetime
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.namespaces import ensure_namespace

__all__ = ["Lease", "LeaseManager", "Resource", "parse_resource"]

CONTENT = "content"
INGESTS = "ingests"
SNAPSHOTS = "snapshots"


def parse_resource(resource: Resource) -> Resource:
    """Check a resource's type and id; returns it with the id normalised.

    Unknown types are NotImplemented (containerd may learn more types than a
    given daemon knows), malformed ones InvalidArgument.
    """
    kind, _, rest = resource.type.partition("/")
    if kind in (CONTENT, INGESTS):
        if "/" in resource.type:
            raise errdefs.InvalidArgument(f"invalid resource type {resource.type}")
        if kind == CONTENT:
            try:
                digest.validate(resource.id)
            except errdefs.InvalidArgument as exc:
                raise errdefs.InvalidArgument(
                    f"invalid content resource id {resource.id}: {exc.message}"
                ) from None
    elif kind == SNAPSHOTS:
        if "/" not in resource.type or "/" in rest:
            raise errdefs.InvalidArgument(f"invalid snapshot resource type {resource.type}")
        if not rest:
            raise errdefs.InvalidArgument("bucket name required")
    else:
        raise errdefs.NotImplemented(f"resource type {resource.type} not supported yet")
    if not resource.id:
        raise errdefs.InvalidArgument("key required")
    return resource


def _adaptor(lease: Lease) -> filters.FieldFunc:
    """containerd's lease adaptor: id, labels.<key>."""

    def field(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "id":
            return lease.id, bool(lease.id)
        if path[0] == "labels":
            return check_map(path[1:], lease.labels)
        return "", False

    return field


def _lease_exists(conn: sqlite3.Connection, ns: str, lease_id: str) -> None:
    row = conn.execute(
        "SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (ns, lease_id)
    ).fetchone()
    if row is None:
        raise errdefs.NotFound(f"lease {q(lease_id)}")


class LeaseManager:
    """Leases of every namespace; each call works in the context's namespace."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, lease_id: str, labels: Mapping[str, str] | None = None) -> Lease:
        if not lease_id:
            raise errdefs.InvalidArgument("lease id must be provided")
        ns = namespaces.required()
        lbls = {k: v for k, v in (labels or {}).items() if v != ""}
        now = time.time_ns()

        def tx(conn: sqlite3.Connection) -> None:
            ensure_namespace(conn, ns)
            try:
                conn.execute(
                    "INSERT INTO leases(namespace, id, labels, created_at) VALUES (?, ?, ?, ?)",
                    (ns, lease_id, dump_map(lbls), now),
                )
            except sqlite3.IntegrityError:
                raise errdefs.AlreadyExists(f"lease {q(lease_id)}") from None

        await self._db.write(tx)
        return Lease(lease_id, lbls, to_datetime(now))

    async def delete(self, lease_id: str) -> None:
        """Delete a lease; what it held is left for the garbage collector."""
        ns = namespaces.required()

        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM leases WHERE namespace = ? AND id = ?", (ns, lease_id))
            if cur.rowcount == 0:
                raise errdefs.NotFound(f"lease {q(lease_id)}")
            self._db.mark_dirty()

        await self._db.write(tx)

    async def list(self, *fs: str) -> builtins.list[Lease]:
        """Leases matching any of ``fs`` (containerd's filter syntax), by id."""
        ns = namespaces.required()
        flt = await parse_filters(fs)
        rows: builtins.list[tuple[str, str, int]] = self._db.read(
            lambda c: c.execute(
                "SELECT id, labels, created_at FROM leases WHERE namespace = ? ORDER BY id",
                (ns,),
            ).fetchall()
        )
        records = [Lease(i, load_map(lbl), to_datetime(at)) for i, lbl, at in rows]
        return await filters.select(flt, records, _adaptor)

    async def add_resource(self, lease_id: str, resource: Resource) -> None:
        ns = namespaces.required()

        def tx(conn: sqlite3.Connection) -> None:
            _lease_exists(conn, ns, lease_id)
            r = parse_resource(resource)
            conn.execute(
                "INSERT OR IGNORE INTO lease_resources(namespace, lease, type, id) "
                "VALUES (?, ?, ?, ?)",
                (ns, lease_id, r.type, r.id),
            )

        await self._db.write(tx)

    async def delete_resource(self, lease_id: str, resource: Resource) -> None:
        ns = namespaces.required()

        def tx(conn: sqlite3.Connection) -> None:
            _lease_exists(conn, ns, lease_id)
            r = parse_resource(resource)
            conn.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? "
                "AND id = ?",
                (ns, lease_id, r.type, r.id),
            )
            self._db.mark_dirty()

        await self._db.write(tx)

    def list_resources(self, lease_id: str) -> builtins.list[Resource]:
        """Content first, then ingests, then snapshots by snapshotter; ids sorted."""
        ns = namespaces.required()

        def read(conn: sqlite3.Connection) -> builtins.list[tuple[str, str]]:
            _lease_exists(conn, ns, lease_id)
            rows: builtins.list[tuple[str, str]] = conn.execute(
                "SELECT id, type FROM lease_resources WHERE namespace = ? AND lease = ? "
                "ORDER BY CASE type WHEN 'content' THEN 0 WHEN 'ingests' THEN 1 ELSE 2 END, "
                "type, id",
                (ns, lease_id),
            ).fetchall()
            return rows

        return [Resource(i, t) for i, t in self._db.read(read)]
