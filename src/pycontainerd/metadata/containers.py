"""Container records in the metadata database, namespaced and transactional.

Behaviour follows containerd 1.6's ``metadata/containers.go``: the same
validation (identifier, labels, runtime name, spec, snapshotter), the same
field paths on update, the same messages.  Labels with an empty value are
not stored (containerd drops them on write), so setting ``labels.KEY`` to ""
removes the label.
"""

from __future__ import annotations

import builtins
import dataclasses
import sqlite3
import time
from collections.abc import Mapping, Sequence

from pycontainerd import errdefs, filters, identifiers, labels, namespaces
from pycontainerd.containers import Container, RawContainer, RuntimeInfo
from pycontainerd.errdefs import q
from pycontainerd.metadata._adapt import check_map, parse_filters
from pycontainerd.metadata._codec import (
    dump_any,
    dump_any_map,
    dump_map,
    load_any,
    load_any_map,
    load_map,
    to_datetime,
)
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.namespaces import ensure_namespace

__all__ = ["Container", "ContainerStore", "RawContainer", "RuntimeInfo"]

#: What an update with no field paths replaces; everything else is fixed.
_REPLACEABLE = ("labels", "spec", "extensions", "image", "snapshotkey")

_COLUMNS = (
    "id, labels, image, runtime_name, runtime_options, spec, snapshotter, snapshot_key, "
    "extensions, created_at, updated_at"
)

_Row = tuple[str, str, str, str, bytes | None, bytes | None, str, str, str, int, int]


def _from_row(row: _Row) -> Container:
    cid, lbls, image, rname, ropts, spec, snapshotter, skey, ext, created, updated = row
    return Container(
        id=cid,
        labels=load_map(lbls),
        image=image,
        runtime=RuntimeInfo(rname, None if ropts is None else load_any(ropts)),
        spec=load_any(spec),
        snapshotter=snapshotter,
        snapshot_key=skey,
        created_at=to_datetime(created),
        updated_at=to_datetime(updated),
        extensions=load_any_map(ext),
    )


def _raw_from_row(row: _Row) -> RawContainer:
    cid, lbls, image, rname, ropts, spec, snapshotter, skey, ext, created, updated = row
    return RawContainer(
        id=cid,
        labels=load_map(lbls),
        image=image,
        runtime_name=rname,
        runtime_options=ropts,
        spec=spec,
        snapshotter=snapshotter,
        snapshot_key=skey,
        created_at=created,
        updated_at=updated,
        extensions={k: v.SerializeToString() for k, v in load_any_map(ext).items()},
    )


def _present(value: str) -> tuple[str, bool]:
    return value, bool(value)


def _adaptor(cid: str, image: str, runtime_name: str, lbls: Mapping[str, str]) -> filters.FieldFunc:
    """containerd's container adaptor: id, image, runtime.name, labels.<key>."""

    def field(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "id":
            return _present(cid)
        if head == "image":
            return _present(image)
        if head == "runtime":
            if len(path) > 1 and path[1] == "name":
                return _present(runtime_name)
            return "", False
        if head == "labels":
            return check_map(path[1:], lbls)
        return "", False

    return field


def _container_adaptor(c: Container) -> filters.FieldFunc:
    return _adaptor(c.id, c.image, c.runtime.name, c.labels)


def _raw_adaptor(c: RawContainer) -> filters.FieldFunc:
    return _adaptor(c.id, c.image, c.runtime_name, c.labels)


def _without_empty(m: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in m.items() if v != ""}


def _validate(c: Container) -> None:
    try:
        identifiers.validate(c.id)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"container.ID: {exc.message}") from None
    if any(k == "" for k in c.extensions):
        raise errdefs.InvalidArgument("container.Extension keys must not be zero-length")
    try:
        labels.validate_all(c.labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"containers.Labels: {exc.message}") from None
    if not c.runtime.name:
        raise errdefs.InvalidArgument("container.Runtime.Name must be set")
    if c.spec is None:
        raise errdefs.InvalidArgument("container.Spec must be set")
    if c.snapshot_key and not c.snapshotter:
        raise errdefs.InvalidArgument(
            "container.Snapshotter must be set if container.SnapshotKey is set"
        )


def _values(ns: str, c: Container) -> tuple[object, ...]:
    return (
        dump_map(c.labels),
        c.image,
        c.runtime.name,
        dump_any(c.runtime.options),
        dump_any(c.spec),
        c.snapshotter,
        c.snapshot_key,
        dump_any_map(c.extensions),
        ns,
        c.id,
    )


def _apply_mask(current: Container, new: Container, paths: Sequence[str]) -> Container:
    """The record after an update: ``current`` with ``paths`` taken from ``new``."""
    lbls = dict(current.labels)
    exts = dict(current.extensions)
    spec, image, snapshot_key = current.spec, current.image, current.snapshot_key
    for path in paths:
        if path.startswith("labels."):
            key = path[len("labels.") :]
            lbls[key] = new.labels.get(key, "")
        elif path.startswith("extensions."):
            key = path[len("extensions.") :]
            if key in new.extensions:
                exts[key] = new.extensions[key]
            else:
                exts.pop(key, None)
        elif path == "labels":
            lbls = dict(new.labels)
        elif path == "spec":
            spec = new.spec
        elif path == "extensions":
            exts = dict(new.extensions)
        elif path == "image":
            image = new.image
        elif path == "snapshotkey":
            snapshot_key = new.snapshot_key
        else:
            raise errdefs.InvalidArgument(f"cannot update {q(path)} field on {q(new.id)}")
    return dataclasses.replace(
        current,
        labels=_without_empty(lbls),
        extensions=exts,
        spec=spec,
        image=image,
        snapshot_key=snapshot_key,
    )


class ContainerStore:
    """Containers of every namespace; each call works in the context's namespace."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Every container of a namespace as read for the wire, with the
        # database version it was read at: listings are far more frequent
        # than writes, and any committed write makes the entry stale.
        self._raw: dict[str, tuple[int, tuple[RawContainer, ...]]] = {}

    def get(self, id: str) -> Container:
        ns = namespaces.required()
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? AND id = ?", (ns, id)
            ).fetchone()
        )
        if row is None:
            raise errdefs.NotFound(f"container {q(id)} in namespace {q(ns)}")
        return _from_row(row)

    def _rows(self, ns: str) -> builtins.list[_Row]:
        rows: builtins.list[_Row] = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? ORDER BY id", (ns,)
            ).fetchall()
        )
        return rows

    async def list(self, *fs: str) -> builtins.list[Container]:
        """Containers matching any of ``fs`` (containerd's filter syntax), by id."""
        ns = namespaces.required()
        flt = await parse_filters(fs)
        records = [_from_row(r) for r in self._rows(ns)]
        return await filters.select(flt, records, _container_adaptor)

    async def list_raw(self, *fs: str) -> Sequence[RawContainer]:
        """:meth:`list` with the ``Any`` values left serialized, for the wire.

        Without filters the answer is the same tuple object until a
        container of the namespace changes, so callers may cache what they
        derive from it by identity.
        """
        ns = namespaces.required()
        flt = await parse_filters(fs)
        version = self._db.data_version()
        cached = self._raw.get(ns)
        if cached is not None and cached[0] == version:
            records = cached[1]
        else:
            records = tuple(_raw_from_row(r) for r in self._rows(ns))
            self._raw[ns] = (version, records)
        if flt is filters.ALWAYS:
            return records
        return await filters.select(flt, records, _raw_adaptor)

    async def create(self, container: Container) -> Container:
        ns = namespaces.required()
        try:
            _validate(container)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(
                f"create container failed validation: {exc.message}"
            ) from None
        now = time.time_ns()
        record = dataclasses.replace(
            container,
            labels=_without_empty(container.labels),
            created_at=to_datetime(now),
            updated_at=to_datetime(now),
        )
        values = _values(ns, record)

        def tx(conn: sqlite3.Connection) -> None:
            ensure_namespace(conn, ns)
            try:
                conn.execute(
                    "INSERT INTO containers(labels, image, runtime_name, runtime_options, spec, "
                    "snapshotter, snapshot_key, extensions, namespace, id, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, now, now),
                )
            except sqlite3.IntegrityError:
                raise errdefs.AlreadyExists(f"container {q(container.id)}") from None

        await self._db.write(tx)
        return record

    async def update(self, container: Container, *fieldpaths: str) -> Container:
        """Change the fields named by ``fieldpaths`` (all replaceable ones when none).

        Paths: ``labels``, ``labels.<key>``, ``spec``, ``extensions``,
        ``extensions.<key>``, ``image``, ``snapshotkey``.  The runtime and
        the snapshotter never change.
        """
        ns = namespaces.required()
        if not container.id:
            raise errdefs.InvalidArgument("must specify a container id")

        def tx(conn: sqlite3.Connection) -> Container:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? AND id = ?",
                (ns, container.id),
            ).fetchone()
            if row is None:
                if _namespace_has_containers(conn, ns):
                    raise errdefs.NotFound(f"container {q(container.id)}")
                raise errdefs.NotFound(
                    f"cannot update container {q(container.id)} in namespace {q(ns)}"
                )
            current = _from_row(row)
            paths: Sequence[str] = fieldpaths
            if not paths:
                paths = _REPLACEABLE
                # Immutable fields must match on a full replace, so that they
                # can become mutable later without changing what this means.
                if current.snapshotter != container.snapshotter:
                    raise errdefs.InvalidArgument("container.Snapshotter field is immutable")
                if current.runtime.name != container.runtime.name:
                    raise errdefs.InvalidArgument("container.Runtime.Name field is immutable")
            updated = _apply_mask(current, container, paths)
            try:
                _validate(updated)
            except errdefs.InvalidArgument as exc:
                raise errdefs.InvalidArgument(f"update failed validation: {exc.message}") from None
            now = time.time_ns()
            conn.execute(
                "UPDATE containers SET labels = ?, image = ?, runtime_name = ?, "
                "runtime_options = ?, spec = ?, snapshotter = ?, snapshot_key = ?, "
                "extensions = ?, updated_at = ? WHERE namespace = ? AND id = ?",
                (*_values(ns, updated)[:8], now, ns, updated.id),
            )
            return dataclasses.replace(updated, updated_at=to_datetime(now))

        return await self._db.write(tx)

    async def delete(self, id: str) -> None:
        ns = namespaces.required()

        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM containers WHERE namespace = ? AND id = ?", (ns, id))
            if cur.rowcount == 0:
                if _namespace_has_containers(conn, ns):
                    # containerd prints this one with %v: no quotes.
                    raise errdefs.NotFound(f"container {id}")
                raise errdefs.NotFound(f"cannot delete container {q(id)} in namespace {q(ns)}")
            self._db.mark_dirty()

        await self._db.write(tx)


def _namespace_has_containers(conn: sqlite3.Connection, ns: str) -> bool:
    row = conn.execute("SELECT 1 FROM containers WHERE namespace = ? LIMIT 1", (ns,)).fetchone()
    return row is not None
