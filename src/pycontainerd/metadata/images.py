"""Image records in the metadata database, namespaced and transactional.

Behaviour follows containerd 1.6's ``metadata/images.go``: a name, labels
and a target descriptor that must carry a valid digest, a positive size and
a media type; updates by field path (``labels``, ``labels.<key>``,
``annotations``, ``annotations.<key>``, ``target``) or, with no paths, a
whole replacement.  Empty label and annotation values are not stored.
"""

from __future__ import annotations

import builtins
import dataclasses
import sqlite3
import time
from collections.abc import Mapping, Sequence

from pycontainerd import digest, errdefs, filters, labels, namespaces
from pycontainerd.errdefs import q
from pycontainerd.images import Descriptor, Image
from pycontainerd.metadata._adapt import check_map, parse_filters
from pycontainerd.metadata._codec import dump_map, load_map, to_datetime
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.namespaces import ensure_namespace

__all__ = ["Descriptor", "Image", "ImageStore"]

_COLUMNS = "name, labels, media_type, digest, size, annotations, created_at, updated_at"

_Row = tuple[str, str, str, str, int, str, int, int]


def _from_row(row: _Row) -> Image:
    name, lbls, media_type, dgst, size, annotations, created, updated = row
    return Image(
        name=name,
        labels=load_map(lbls),
        target=Descriptor(media_type, dgst, size, load_map(annotations)),
        created_at=to_datetime(created),
        updated_at=to_datetime(updated),
    )


def _adaptor(image: Image) -> filters.FieldFunc:
    """containerd's image adaptor: name, target.digest, target.mediatype,
    labels.<key>, annotations.<key>."""

    def field(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "name":
            return image.name, bool(image.name)
        if head == "target":
            if len(path) < 2:
                return "", False
            if path[1] == "digest":
                return image.target.digest, bool(image.target.digest)
            if path[1] == "mediatype":
                return image.target.media_type, bool(image.target.media_type)
            return "", False
        if head == "labels":
            return check_map(path[1:], image.labels)
        if head == "annotations":
            return check_map(path[1:], image.target.annotations)
        return "", False

    return field


def _validate(image: Image) -> None:
    if not image.name:
        raise errdefs.InvalidArgument("image name must not be empty")
    try:
        labels.validate_all(image.labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"image.Labels: {exc.message}") from None
    target = image.target
    try:
        digest.validate(target.digest)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(
            f"Target.Digest {q(target.digest)} invalid: {exc.message}"
        ) from None
    if target.size <= 0:
        raise errdefs.InvalidArgument("Target.Size must be greater than zero")
    if not target.media_type:
        raise errdefs.InvalidArgument("Target.MediaType must be set")


def _without_empty(m: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in m.items() if v != ""}


def _cleaned(image: Image) -> Image:
    """The image as stored: empty label and annotation values dropped."""
    target = dataclasses.replace(image.target, annotations=_without_empty(image.target.annotations))
    return dataclasses.replace(image, labels=_without_empty(image.labels), target=target)


def _apply_mask(current: Image, new: Image, paths: Sequence[str]) -> Image:
    lbls = dict(current.labels)
    target = current.target
    annotations = dict(target.annotations)
    for path in paths:
        if path.startswith("labels."):
            key = path[len("labels.") :]
            lbls[key] = new.labels.get(key, "")
        elif path.startswith("annotations."):
            key = path[len("annotations.") :]
            annotations[key] = new.target.annotations.get(key, "")
        elif path == "labels":
            lbls = dict(new.labels)
        elif path == "target":
            # The target is replaced as a unit: digest, size and media type
            # only make sense together.
            target = new.target
            annotations = dict(new.target.annotations)
        elif path == "annotations":
            annotations = dict(new.target.annotations)
        else:
            raise errdefs.InvalidArgument(f"cannot update {q(path)} field on image {q(new.name)}")
    return dataclasses.replace(
        current, labels=lbls, target=dataclasses.replace(target, annotations=annotations)
    )


class ImageStore:
    """Images of every namespace; each call works in the context's namespace."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, name: str) -> Image:
        ns = namespaces.required()
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM images WHERE namespace = ? AND name = ?", (ns, name)
            ).fetchone()
        )
        if row is None:
            raise errdefs.NotFound(f"image {q(name)}")
        return _from_row(row)

    async def list(self, *fs: str) -> builtins.list[Image]:
        """Images matching any of ``fs`` (containerd's filter syntax), by name."""
        ns = namespaces.required()
        flt = await parse_filters(fs)
        rows: builtins.list[_Row] = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM images WHERE namespace = ? ORDER BY name", (ns,)
            ).fetchall()
        )
        return await filters.select(flt, [_from_row(r) for r in rows], _adaptor)

    async def create(self, image: Image) -> Image:
        ns = namespaces.required()
        _validate(image)
        now = time.time_ns()
        record = dataclasses.replace(
            _cleaned(image), created_at=to_datetime(now), updated_at=to_datetime(now)
        )

        def tx(conn: sqlite3.Connection) -> None:
            ensure_namespace(conn, ns)
            try:
                _write(conn, ns, record, now, now, insert=True)
            except sqlite3.IntegrityError:
                raise errdefs.AlreadyExists(f"image {q(image.name)}") from None

        await self._db.write(tx)
        return record

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        """Change the fields named by ``fieldpaths``, or replace the record when none."""
        ns = namespaces.required()
        if not image.name:
            raise errdefs.InvalidArgument("image name is required for update")

        def tx(conn: sqlite3.Connection) -> Image:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM images WHERE namespace = ? AND name = ?",
                (ns, image.name),
            ).fetchone()
            if row is None:
                raise errdefs.NotFound(f"image {q(image.name)}")
            current = _from_row(row)
            if fieldpaths:
                updated = _apply_mask(current, image, fieldpaths)
            else:
                updated = dataclasses.replace(image, created_at=current.created_at)
            _validate(updated)
            now = time.time_ns()
            updated = dataclasses.replace(_cleaned(updated), updated_at=to_datetime(now))
            _write(conn, ns, updated, None, now, insert=False)
            return updated

        return await self._db.write(tx)

    async def delete(self, name: str) -> None:
        ns = namespaces.required()

        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM images WHERE namespace = ? AND name = ?", (ns, name))
            if cur.rowcount == 0:
                raise errdefs.NotFound(f"image {q(name)}")
            self._db.mark_dirty()

        await self._db.write(tx)


def _write(
    conn: sqlite3.Connection,
    ns: str,
    image: Image,
    created: int | None,
    updated: int,
    *,
    insert: bool,
) -> None:
    t = image.target
    values = (
        dump_map(image.labels),
        t.media_type,
        t.digest,
        t.size,
        dump_map(t.annotations),
        updated,
        ns,
        image.name,
    )
    if insert:
        conn.execute(
            "INSERT INTO images(labels, media_type, digest, size, annotations, updated_at, "
            "namespace, name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, created),
        )
    else:
        conn.execute(
            "UPDATE images SET labels = ?, media_type = ?, digest = ?, size = ?, "
            "annotations = ?, updated_at = ? WHERE namespace = ? AND name = ?",
            values,
        )
