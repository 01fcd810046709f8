"""Content in the metadata database: the namespaced view over the core store.

Behaviour follows containerd 1.6's ``metadata/content.go``:

* A blob is visible in a namespace only through its ``content`` row, which
  also holds its labels and times; the core store below knows nothing of
  namespaces and keeps no labels.
* An ingest ref is namespaced through the ``ingests`` table, which maps
  ``(namespace, ref)`` to a backend ref unique to it (``<ns>/<seq>/<ref>``),
  so two namespaces may use the same ref without meeting.
* Creating anything creates its namespace (``INSERT OR IGNORE``).
* Under a lease (``pycontainerd.leases.current()``) a writer attaches its
  ingest (type ``ingests``, id = the ref) and a commit its blob (type
  ``content``, id = the digest) to the lease, and a delete detaches it.
* Content is *shared* between namespaces (containerd's default policy): a
  writer whose expected digest is already in the backend, put there through
  another namespace, needs no bytes — it reports the blob's size as its
  offset and its commit only adds the row.  Committing a blob the namespace
  already has still lands (the ingest goes) and returns AlreadyExists, as
  containerd does; ``ctr`` treats that as success.
* Delete removes only the namespace's row.  The bytes go when garbage
  collection finds no namespace (and no ingest expecting them) refers to
  them: :meth:`ContentStore.garbage` lists those blobs and
  :meth:`ContentStore.collect` removes them, with the backend ingests no
  ``ingests`` row names; every delete sets :attr:`ContentStore.dirty` and
  bumps ``Database.dirty`` for the scheduler.
* An ingest opened outside a lease expires 24 hours after its writer was
  last opened (``ingests.expires_at``), as containerd's; one opened under a
  lease has no expiry and goes with the lease.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import itertools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from pycontainerd import content, errdefs, filters, leases, namespaces
from pycontainerd.content import Info, Status, adapt_info, adapt_status, validate_ref
from pycontainerd.digest import validate as validate_digest
from pycontainerd.errdefs import q
from pycontainerd.metadata._codec import dump_map, load_map, to_datetime
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.namespaces import ensure_namespace

__all__ = ["ContentStore", "RWLock"]

log = logging.getLogger(__name__)

CONTENT = "content"
INGESTS = "ingests"

_INFO_COLUMNS = "digest, size, labels, created_at, updated_at"
_InfoRow = tuple[str, int, str, int, int]

_seq = itertools.count(1)

#: How long an ingest no lease holds outlives its last writer (containerd's 24h).
INGEST_EXPIRY_NS = 24 * 3600 * 10**9


def _info(row: _InfoRow) -> Info:
    dgst, size, lbls, created, updated = row
    return Info(
        digest=dgst,
        size=size,
        created_at=to_datetime(created),
        updated_at=to_datetime(updated),
        labels=load_map(lbls),
    )


def _not_found(dgst: str) -> errdefs.NotFound:
    return errdefs.NotFound(f"content digest {dgst}")


def _attach(conn: sqlite3.Connection, ns: str, lease_id: str | None, kind: str, rid: str) -> bool:
    """Hold ``rid`` under the context's lease, if there is one; True if there is."""
    if not lease_id:
        return False
    row = conn.execute(
        "SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (ns, lease_id)
    ).fetchone()
    if row is None:
        raise errdefs.NotFound("lease does not exist")
    conn.execute(
        "INSERT OR IGNORE INTO lease_resources(namespace, lease, type, id) VALUES (?, ?, ?, ?)",
        (ns, lease_id, kind, rid),
    )
    return True


def _detach(conn: sqlite3.Connection, ns: str, lease_id: str | None, kind: str, rid: str) -> None:
    if lease_id:
        conn.execute(
            "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
            (ns, lease_id, kind, rid),
        )


class RWLock:
    """Many holders of ``shared()`` or one of ``exclusive()``.

    Writers, commits and deletes hold it shared; garbage collection holds it
    exclusively, so it never sweeps a blob between its backend commit and its
    row (containerd's ``contentStore.l``).  A waiting exclusive holder goes
    before new shared ones.
    """

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            if self._readers == 0:
                async with cond:
                    cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        cond = self._condition()
        async with cond:
            self._writers_waiting += 1
            try:
                await cond.wait_for(lambda: not self._writer and self._readers == 0)
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            self._writer = False
            async with cond:
                cond.notify_all()


class ContentStore:
    """The content store as every namespace sees it (see the module docstring)."""

    def __init__(self, db: Database, backend: content.Store, *, shared: bool = True) -> None:
        self._db = db
        self._backend = backend
        self._shared = shared
        #: Held shared by writes and deletes, exclusively by garbage collection.
        self.lock = RWLock()
        #: Set by every delete: the backend may hold a blob nobody refers to.
        self.dirty = False

    @property
    def backend(self) -> content.Store:
        return self._backend

    # -- Manager

    def _row(self, ns: str, dgst: str) -> _InfoRow | None:
        row: _InfoRow | None = self._db.read(
            lambda c: c.execute(
                f"SELECT {_INFO_COLUMNS} FROM content WHERE namespace = ? AND digest = ?",
                (ns, dgst),
            ).fetchone()
        )
        return row

    async def info(self, digest: str) -> Info:
        ns = namespaces.required()
        validate_digest(digest)
        row = self._row(ns, digest)
        if row is None:
            raise _not_found(digest)
        return _info(row)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        ns = namespaces.required()
        validate_digest(info.digest)
        now = time.time_ns()

        def tx(conn: sqlite3.Connection) -> Info:
            row: _InfoRow | None = conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM content WHERE namespace = ? AND digest = ?",
                (ns, info.digest),
            ).fetchone()
            if row is None:
                raise _not_found(info.digest)
            current = _info(row)
            new = content.update_labels(info.digest, current.labels, info.labels, fieldpaths)
            conn.execute(
                "UPDATE content SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?",
                (dump_map(new), now, ns, info.digest),
            )
            return dataclasses.replace(current, labels=new, updated_at=to_datetime(now))

        async with self.lock.shared():
            return await self._db.write(tx)

    async def walk(self, *filter_strings: str) -> AsyncIterator[Info]:
        ns = namespaces.required()
        flt = await filters.parse_async(filter_strings)
        rows: builtins.list[_InfoRow] = self._db.read(
            lambda c: c.execute(
                f"SELECT {_INFO_COLUMNS} FROM content WHERE namespace = ? ORDER BY digest", (ns,)
            ).fetchall()
        )
        for info in await filters.select(flt, [_info(row) for row in rows], adapt_info):
            yield info

    async def delete(self, digest: str) -> None:
        ns = namespaces.required()
        validate_digest(digest)
        lease_id = leases.current()

        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "DELETE FROM content WHERE namespace = ? AND digest = ?", (ns, digest)
            )
            if cur.rowcount == 0:
                raise _not_found(digest)
            _detach(conn, ns, lease_id, CONTENT, digest)
            self._db.mark_dirty()

        async with self.lock.shared():
            await self._db.write(tx)
            self.dirty = True

    # -- Provider

    async def reader_at(self, digest: str) -> content.ReaderAt:
        ns = namespaces.required()
        validate_digest(digest)
        if self._row(ns, digest) is None:
            raise _not_found(digest)
        return await self._backend.reader_at(digest)

    # -- IngestManager

    def _ingest(self, ns: str, ref: str) -> tuple[str, str] | None:
        row: tuple[str, str] | None = self._db.read(
            lambda c: c.execute(
                "SELECT backend_ref, expected FROM ingests WHERE namespace = ? AND ref = ?",
                (ns, ref),
            ).fetchone()
        )
        return row

    async def status(self, ref: str) -> Status:
        ns = namespaces.required()
        validate_ref(ref)
        row = self._ingest(ns, ref)
        if row is None:
            raise errdefs.NotFound(f"reference {ref}")
        st = await self._backend.status(row[0])
        return dataclasses.replace(st, ref=ref)

    async def list_statuses(self, *filter_strings: str) -> builtins.list[Status]:
        ns = namespaces.required()
        flt = await filters.parse_async(filter_strings)
        rows: builtins.list[tuple[str, str]] = self._db.read(
            lambda c: c.execute(
                "SELECT ref, backend_ref FROM ingests WHERE namespace = ? ORDER BY ref", (ns,)
            ).fetchall()
        )
        statuses = []
        for ref, bref in rows:
            try:
                statuses.append(dataclasses.replace(await self._backend.status(bref), ref=ref))
            except errdefs.NotFound:
                continue  # a shared ingest, or one whose bytes never arrived
        return await filters.select(flt, statuses, adapt_status)

    async def abort(self, ref: str) -> None:
        ns = namespaces.required()
        validate_ref(ref)
        lease_id = leases.current()

        def tx(conn: sqlite3.Connection) -> tuple[str, str]:
            row: tuple[str, str] | None = conn.execute(
                "SELECT backend_ref, expected FROM ingests WHERE namespace = ? AND ref = ?",
                (ns, ref),
            ).fetchone()
            if row is None:
                raise errdefs.NotFound(f"ingest ref {q(ref)}")
            conn.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
            _detach(conn, ns, lease_id, INGESTS, ref)
            return row

        bref, expected = await self._db.write(tx)
        if not expected:  # a shared ingest has nothing in the backend
            with contextlib.suppress(errdefs.NotFound):
                await self._backend.abort(bref)

    # -- Ingester

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> _Writer:
        ns = namespaces.required()
        validate_ref(ref)
        if total < 0:
            raise errdefs.InvalidArgument(f"negative total {total}")
        if expected:
            validate_digest(expected)
        lease_id = leases.current()

        async with self.lock.shared():
            shared_size = -1
            if expected and self._shared and self._row(ns, expected) is None:
                with contextlib.suppress(errdefs.NotFound):
                    found = await self._backend.info(expected)
                    # A size that disagrees is the caller's mistake; let commit tell them.
                    if total in (0, found.size):
                        shared_size = found.size
            new_bref = f"{ns}/{time.time_ns()}{next(_seq)}/{ref}"
            now = time.time_ns()

            def tx(conn: sqlite3.Connection) -> tuple[str, bool] | None:
                if expected:
                    row = conn.execute(
                        "SELECT 1 FROM content WHERE namespace = ? AND digest = ?", (ns, expected)
                    ).fetchone()
                    if row is not None:
                        # Hold it for the lease so a later removal cannot take it away.
                        _attach(conn, ns, lease_id, CONTENT, expected)
                        return None
                ensure_namespace(conn, ns)
                leased = _attach(conn, ns, lease_id, INGESTS, ref)
                # Unleased, the ingest may be dropped once stale; leased, it goes with the lease.
                expires = None if leased else now + INGEST_EXPIRY_NS
                shared_expected = expected if shared_size >= 0 else ""
                row = conn.execute(
                    "SELECT backend_ref FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref)
                ).fetchone()
                if row is not None:
                    conn.execute(
                        "UPDATE ingests SET expected = ?, expires_at = "
                        "CASE WHEN ? THEN expires_at ELSE ? END WHERE namespace = ? AND ref = ?",
                        (shared_expected, leased, expires, ns, ref),
                    )
                    return row[0], False
                conn.execute(
                    "INSERT INTO ingests(namespace, ref, backend_ref, expected, created_at, "
                    "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (ns, ref, new_bref, shared_expected, now, expires),
                )
                return new_bref, True

            found_row = await self._db.write(tx)
            if found_row is None:
                raise errdefs.AlreadyExists(f"content {expected}")
            bref, created = found_row
            if shared_size >= 0:
                return _Writer(self, ns, ref, bref, None, shared_size, expected)
            try:
                backend_writer = await self._backend.writer(bref, total=total)
            except BaseException:
                if created:
                    await self._forget_ingest(ns, ref, lease_id)
                raise
            return _Writer(self, ns, ref, bref, backend_writer, total, "")

    async def _forget_ingest(self, ns: str, ref: str, lease_id: str | None) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
            _detach(conn, ns, lease_id, INGESTS, ref)

        with contextlib.suppress(Exception):
            await self._db.write(tx)

    async def _committed(
        self, ns: str, ref: str, dgst: str, size: int, lbls: Mapping[str, str]
    ) -> bool:
        """Record a committed blob in ``ns``; False when the row was already there."""
        lease_id = leases.current()
        now = time.time_ns()

        def tx(conn: sqlite3.Connection) -> bool:
            ensure_namespace(conn, ns)
            cur = conn.execute(
                "INSERT OR IGNORE INTO content(namespace, digest, size, labels, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (ns, dgst, size, dump_map({k: v for k, v in lbls.items() if v}), now, now),
            )
            conn.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
            _detach(conn, ns, lease_id, INGESTS, ref)
            _attach(conn, ns, lease_id, CONTENT, dgst)
            return cur.rowcount == 1

        return await self._db.write(tx)

    # -- garbage collection hooks

    def referenced(self) -> set[str]:
        """Digests some namespace refers to: its rows and its shared ingests' expected digests."""
        rows: builtins.list[tuple[str]] = self._db.read(
            lambda c: c.execute(
                "SELECT digest FROM content UNION SELECT expected FROM ingests WHERE expected != ''"
            ).fetchall()
        )
        return {r[0] for r in rows}

    async def garbage(self) -> builtins.list[str]:
        """Backend blobs that no namespace refers to (what a collection would remove)."""
        referenced = self.referenced()
        return [i.digest async for i in self._backend.walk() if i.digest not in referenced]

    async def collect(self) -> builtins.list[str]:
        """Remove unreferenced blobs and ingests from the backend; returns the blobs' digests.

        Holds the lock exclusively, so no write can commit (or start sharing)
        a blob while it is judged and removed.
        """
        async with self.lock.exclusive():
            return await self.collect_locked()

    async def collect_locked(self) -> builtins.list[str]:
        """:meth:`collect` for a caller already holding :attr:`lock` exclusively.

        As containerd's ``contentStore.garbageCollect``: a blob goes when no
        namespace has a row for it (nor an ingest expecting it), a backend
        ingest when no ``ingests`` row names it.
        """
        self.dirty = False
        removed = []
        for dgst in await self.garbage():
            try:
                await self._backend.delete(dgst)
            except errdefs.NotFound:
                continue
            removed.append(dgst)
            log.debug("removed content", extra={"digest": dgst})
        live: builtins.list[tuple[str]] = self._db.read(
            lambda c: c.execute("SELECT backend_ref FROM ingests").fetchall()
        )
        refs = {r[0] for r in live}
        for st in await self._backend.list_statuses():
            if st.ref in refs:
                continue
            with contextlib.suppress(errdefs.NotFound):
                await self._backend.abort(st.ref)
                log.debug("cleanup aborting ingest", extra={"ref": st.ref})
        return removed


class _Writer:
    """A namespaced ingest: the backend writer, or none while the blob is shared."""

    def __init__(
        self,
        store: ContentStore,
        ns: str,
        ref: str,
        bref: str,
        backend: content.Writer | None,
        size: int,
        expected: str,
    ) -> None:
        self._store = store
        self._ns = ns
        self._ref = ref
        self._bref = bref
        self._w = backend
        self._size = size
        self._expected = expected
        self._started = time.time_ns()

    @property
    def ref(self) -> str:
        return self._ref

    @property
    def digest(self) -> str:
        return self._w.digest if self._w is not None else self._expected

    async def status(self) -> Status:
        if self._w is not None:
            return dataclasses.replace(await self._w.status(), ref=self._ref)
        started = to_datetime(self._started)
        return Status(
            ref=self._ref,
            offset=self._size,
            total=self._size,
            started_at=started,
            updated_at=started,
            expected=self._expected,
        )

    async def _unshare(self, size: int) -> content.Writer:
        """Start a real backend ingest holding the first ``size`` bytes of the shared blob."""
        backend = self._store.backend
        w = await backend.writer(self._bref, total=self._size if size else 0)
        try:
            if size > 0:
                async for chunk in content.read_chunks(backend, self._expected, size=size):
                    await w.write(chunk)
        except BaseException:
            await w.close()
            raise
        self._w = w
        return w

    async def write(self, data: bytes) -> int:
        w = self._w
        if w is None:
            if not data:
                return 0
            w = await self._unshare(self._size)
        return await w.write(data)

    async def truncate(self, size: int) -> None:
        if self._w is not None:
            await self._w.truncate(size)
        else:
            await self._unshare(size)

    async def commit(
        self, size: int = 0, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> str:
        w = self._w
        try:
            content.validate_labels(labels)
        except errdefs.InvalidArgument:
            if w is not None:
                await w.close()
            raise
        async with self._store.lock.shared():
            if w is None:
                if size and size != self._size:
                    raise errdefs.FailedPrecondition(
                        f"{q(self._ref)} failed size validation: {self._size} != {size}"
                    )
                if expected and expected != self._expected:
                    raise errdefs.FailedPrecondition(f"{q(self._ref)} unexpected digest")
                size, actual = self._size, self._expected
            else:
                st = await w.status()
                if size and size != st.offset:
                    await w.close()
                    raise errdefs.FailedPrecondition(
                        f"{q(self._ref)} failed size validation: {st.offset} != {size}"
                    )
                size = st.offset
                with contextlib.suppress(errdefs.AlreadyExists):
                    await w.commit(size, expected)
                actual = w.digest
            if not await self._store._committed(self._ns, self._ref, actual, size, labels or {}):
                raise errdefs.AlreadyExists(f"content {actual}")
            return actual

    async def close(self) -> None:
        if self._w is not None:
            await self._w.close()
