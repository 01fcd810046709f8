"""Leases and their resources in the metadata store, as containerd 1.6 keeps them."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs, leases, namespaces
from pycontainerd.leases import Resource
from pycontainerd.metadata import Metadata
from tests.unit._meta import run

pytestmark = pytest.mark.unit

BLOB = "sha256:" + "b" * 64


@pytest.fixture
def md(tmp_path: Path) -> Iterator[Metadata]:
    m = Metadata.open(tmp_path)
    try:
        with namespaces.namespace("default"):
            yield m
    finally:
        m.close()


def test_create_list_delete(md: Metadata) -> None:
    created = run(md.leases.create("l1", {"k": "v", "empty": ""}))
    assert created.labels == {"k": "v"}
    run(md.leases.create("a/b--c"))  # containerd does not hold lease ids to identifier rules
    assert [lease.id for lease in run(md.leases.list())] == ["a/b--c", "l1"]
    assert run(md.leases.list())[1] == created
    assert [lease.id for lease in run(md.leases.list("labels.k==v"))] == ["l1"]
    assert [lease.id for lease in run(md.leases.list("id==a/b--c"))] == ["a/b--c"]
    before = md.db.dirty
    run(md.leases.delete("l1"))
    assert md.db.dirty == before + 1
    assert [lease.id for lease in run(md.leases.list())] == ["a/b--c"]


def test_errors_match_containerd(md: Metadata) -> None:
    run(md.leases.create("l1"))
    with pytest.raises(errdefs.AlreadyExists, match=r'^lease "l1"$'):
        run(md.leases.create("l1"))
    with pytest.raises(errdefs.InvalidArgument, match="lease id must be provided"):
        run(md.leases.create(""))
    for call in (
        lambda: run(md.leases.delete("nope")),
        lambda: run(md.leases.add_resource("nope", Resource("x", "ingests"))),
        lambda: run(md.leases.delete_resource("nope", Resource("x", "ingests"))),
        lambda: md.leases.list_resources("nope"),
    ):
        with pytest.raises(errdefs.NotFound, match=r'^lease "nope"$'):
            call()


def test_resources_are_listed_content_ingests_snapshots(md: Metadata) -> None:
    run(md.leases.create("l"))
    for r in [
        Resource("k2", "snapshots/overlayfs"),
        Resource("ing", "ingests"),
        Resource("k1", "snapshots/native"),
        Resource(BLOB, "content"),
        Resource(BLOB, "content"),  # adding twice is harmless
    ]:
        run(md.leases.add_resource("l", r))
    assert md.leases.list_resources("l") == [
        Resource(BLOB, "content"),
        Resource("ing", "ingests"),
        Resource("k1", "snapshots/native"),
        Resource("k2", "snapshots/overlayfs"),
    ]
    before = md.db.dirty
    run(md.leases.delete_resource("l", Resource("ing", "ingests")))
    run(md.leases.delete_resource("l", Resource("never-added", "ingests")))
    assert md.db.dirty > before
    assert Resource("ing", "ingests") not in md.leases.list_resources("l")


@pytest.mark.parametrize(
    ("resource", "error", "message"),
    [
        (Resource("sha256:bad", "content"), errdefs.InvalidArgument, "invalid content resource id"),
        (Resource("x", "content/y"), errdefs.InvalidArgument, "invalid resource type content/y"),
        (Resource("k", "snapshots"), errdefs.InvalidArgument, "invalid snapshot resource type"),
        (Resource("k", "snapshots/a/b"), errdefs.InvalidArgument, "invalid snapshot resource"),
        (Resource("k", "images"), errdefs.NotImplemented, "resource type images not supported"),
        (Resource("", "ingests"), errdefs.InvalidArgument, "key required"),
    ],
)
def test_resource_types_are_validated(
    md: Metadata, resource: Resource, error: type[Exception], message: str
) -> None:
    run(md.leases.create("l"))
    with pytest.raises(error, match=re.escape(message)):
        run(md.leases.add_resource("l", resource))


def test_deleting_a_lease_drops_its_resources(md: Metadata) -> None:
    run(md.leases.create("l"))
    run(md.leases.add_resource("l", Resource("ing", "ingests")))
    run(md.leases.delete("l"))
    run(md.leases.create("l"))
    assert md.leases.list_resources("l") == []


def test_leases_are_per_namespace(md: Metadata) -> None:
    run(md.leases.create("l"))
    with namespaces.namespace("other"):
        assert run(md.leases.list()) == []
        run(md.leases.create("l"))
    assert len(run(md.leases.list())) == 1


def test_random_ids_and_expiry_label() -> None:
    ids = {leases.random_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"\d{1,9}-[A-Za-z0-9_-]{4}", i) for i in ids)
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert leases.expire_label(dt.timedelta(hours=24), now) == "2026-01-03T03:04:05Z"
