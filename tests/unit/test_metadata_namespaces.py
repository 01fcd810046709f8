"""Namespaces in the SQLite metadata store: containerd's semantics, durably."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pycontainerd import errdefs, labels
from pycontainerd.metadata import Database, Namespace, NamespaceStore

pytestmark = pytest.mark.unit

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "meta" / "meta.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = Database(db_path)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def store(db: Database) -> NamespaceStore:
    return NamespaceStore(db)


def test_create_then_get_returns_the_namespace_with_its_labels(store: NamespaceStore) -> None:
    created = run(store.create("ns1", {"a": "b"}))
    assert created == Namespace("ns1", {"a": "b"})
    assert store.get("ns1") == Namespace("ns1", {"a": "b"})


def test_create_without_labels_has_none(store: NamespaceStore) -> None:
    run(store.create("plain"))
    assert store.get("plain").labels == {}


def test_list_returns_every_namespace_by_name(store: NamespaceStore) -> None:
    for name in ("zeta", "alpha", "Bad_NS", "k8s.io"):
        run(store.create(name, {"n": name}))
    assert [ns.name for ns in store.list()] == ["Bad_NS", "alpha", "k8s.io", "zeta"]
    assert {ns.name: dict(ns.labels) for ns in store.list()}["k8s.io"] == {"n": "k8s.io"}


def test_list_of_an_empty_store_is_empty(store: NamespaceStore) -> None:
    assert store.list() == []


def test_creating_an_existing_namespace_fails_already_exists(store: NamespaceStore) -> None:
    run(store.create("ns1", {"a": "b"}))
    with pytest.raises(errdefs.AlreadyExists) as excinfo:
        run(store.create("ns1"))
    assert excinfo.value.message == 'namespace "ns1"'
    assert store.get("ns1").labels == {"a": "b"}  # the first one is untouched


def test_getting_a_missing_namespace_fails_not_found(store: NamespaceStore) -> None:
    with pytest.raises(errdefs.NotFound) as excinfo:
        store.get("nope")
    assert errdefs.wire_message(excinfo.value) == 'namespace "nope": not found'


# --- names ---------------------------------------------------------------------------


BAD_NAMES = ["-bad", "a/b", "", "bad-", "a..b", ".hidden", "a b", "x" * 77, "ns\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_rejected_by_every_operation(store: NamespaceStore, name: str) -> None:
    calls = [
        lambda: run(store.create(name)),
        lambda: store.get(name),
        lambda: run(store.update_labels(name, {"a": "b"}, None)),
        lambda: run(store.delete(name)),
    ]
    for call in calls:
        with pytest.raises(errdefs.InvalidArgument) as excinfo:
            call()
        if name and len(name) < 70:
            assert errdefs.q(name).replace("\n", "\\n") in excinfo.value.message
    assert store.list() == []


@pytest.mark.parametrize("name", ["Bad_NS", "default", "k8s.io", "a-b_c.d", "x" * 76, "0"])
def test_names_valid_under_containerds_rules_are_accepted(store: NamespaceStore, name: str) -> None:
    run(store.create(name))
    assert store.get(name).name == name


# --- updates ---------------------------------------------------------------------------


@pytest.fixture
def ns1(store: NamespaceStore) -> NamespaceStore:
    run(store.create("ns1", {"a": "b", "keep": "me"}))
    return store


def test_update_of_one_label_path_sets_it_and_keeps_the_rest(ns1: NamespaceStore) -> None:
    updated = run(ns1.update_labels("ns1", {"c": "d"}, ["labels.c"]))
    assert updated.labels == {"a": "b", "c": "d", "keep": "me"}
    assert ns1.get("ns1") == updated


def test_update_of_a_label_path_missing_from_the_request_removes_it(ns1: NamespaceStore) -> None:
    assert run(ns1.update_labels("ns1", {}, ["labels.a"])).labels == {"keep": "me"}
    assert ns1.get("ns1").labels == {"keep": "me"}


def test_update_of_a_label_path_to_an_empty_value_removes_it(ns1: NamespaceStore) -> None:
    assert run(ns1.update_labels("ns1", {"a": ""}, ["labels.a"])).labels == {"keep": "me"}


def test_update_of_several_paths_applies_them_all(ns1: NamespaceStore) -> None:
    new = {"a": "changed", "x": "1"}
    got = run(ns1.update_labels("ns1", new, ["labels.a", "labels.x", "labels.keep"]))
    assert got.labels == {"a": "changed", "x": "1"}


@pytest.mark.parametrize("paths", [None, [], ["labels"]])
def test_update_without_label_paths_replaces_all_labels(
    ns1: NamespaceStore, paths: list[str] | None
) -> None:
    assert run(ns1.update_labels("ns1", {"only": "this"}, paths)).labels == {"only": "this"}
    assert ns1.get("ns1").labels == {"only": "this"}


@pytest.mark.parametrize("path", ["name", "labelsx", "created_at", ""])
def test_update_of_a_field_other_than_labels_is_invalid(ns1: NamespaceStore, path: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as excinfo:
        run(ns1.update_labels("ns1", {"a": "z"}, ["labels.a", path]))
    assert errdefs.q(path) in excinfo.value.message
    assert ns1.get("ns1").labels == {"a": "b", "keep": "me"}


def test_update_of_a_missing_namespace_creates_it_as_containerd(store: NamespaceStore) -> None:
    assert run(store.update_labels("ghost", {"a": "b"}, ["labels.a"])).labels == {"a": "b"}
    assert store.get("ghost").labels == {"a": "b"}
    # Setting a label to nothing still creates it (containerd sets it, then deletes the key).
    run(store.update_labels("ghost2", {}, ["labels.x"]))
    assert store.get("ghost2").labels == {}
    # Replacing all labels with none creates nothing.
    run(store.update_labels("ghost3", {}, None))
    with pytest.raises(errdefs.NotFound):
        store.get("ghost3")


# --- label limits -------------------------------------------------------------------------


def test_create_rejects_labels_over_the_size_limit(store: NamespaceStore) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="greater than maximum size"):
        run(store.create("big", {"k": "v" * labels.MAX_SIZE}))
    with pytest.raises(errdefs.NotFound):
        store.get("big")


def test_create_accepts_labels_at_exactly_the_size_limit(store: NamespaceStore) -> None:
    run(store.create("edge", {"k": "v" * (labels.MAX_SIZE - 1)}))
    assert len(store.get("edge").labels["k"]) == labels.MAX_SIZE - 1


@pytest.mark.parametrize("paths", [None, ["labels.big"]])
def test_update_rejects_labels_over_the_size_limit_and_changes_nothing(
    ns1: NamespaceStore, paths: list[str] | None
) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="key: big"):
        run(ns1.update_labels("ns1", {"big": "x" * 5000}, paths))
    assert ns1.get("ns1").labels == {"a": "b", "keep": "me"}


# --- delete ------------------------------------------------------------------------------


def test_delete_removes_the_namespace(ns1: NamespaceStore) -> None:
    run(ns1.delete("ns1"))
    with pytest.raises(errdefs.NotFound):
        ns1.get("ns1")
    assert ns1.list() == []
    run(ns1.create("ns1"))  # and the name is free again
    assert ns1.get("ns1").labels == {}


def test_deleting_a_missing_namespace_fails_not_found(store: NamespaceStore) -> None:
    with pytest.raises(errdefs.NotFound, match='namespace "ghost"'):
        run(store.delete("ghost"))


def test_namespace_that_still_holds_objects_cannot_be_deleted(
    db: Database, ns1: NamespaceStore
) -> None:
    # An image row stands in for the images store (a later issue writes it).
    def add_image(conn: sqlite3.Connection) -> None:
        now = time.time_ns()
        conn.execute(
            "INSERT INTO images(namespace, name, media_type, digest, size, created_at, "
            "updated_at) VALUES ('ns1', 'docker.io/library/busybox:latest', 'x', "
            "'sha256:00', 1, ?, ?)",
            (now, now),
        )

    run(db.write(add_image))
    with pytest.raises(errdefs.FailedPrecondition) as excinfo:
        run(ns1.delete("ns1"))
    assert excinfo.value.message == 'namespace "ns1" must be empty, but it still has images'
    assert ns1.get("ns1").name == "ns1"


def test_a_non_empty_namespace_names_what_it_holds_in_containerds_order(
    db: Database, ns1: NamespaceStore
) -> None:
    """images, blobs, containers, then snapshots per snapshotter by name (containerd 1.6)."""

    def add_all(conn: sqlite3.Connection) -> None:
        now = time.time_ns()
        for sn, key in (("overlayfs", "a"), ("native", "b"), ("overlayfs", "c")):
            conn.execute(
                "INSERT INTO snapshots(namespace, snapshotter, key, backend_key, created_at, "
                "updated_at) VALUES ('ns1', ?, ?, ?, ?, ?)",
                (sn, key, f"ns1/1/{key}", now, now),
            )
        conn.execute(
            "INSERT INTO containers(namespace, id, created_at, updated_at) "
            "VALUES ('ns1', 'c', ?, ?)",
            (now, now),
        )
        conn.execute(
            "INSERT INTO content(namespace, digest, size, created_at, updated_at) "
            "VALUES ('ns1', 'sha256:00', 1, ?, ?)",
            (now, now),
        )

    run(db.write(add_all))
    with pytest.raises(errdefs.FailedPrecondition) as excinfo:
        run(ns1.delete("ns1"))
    assert excinfo.value.message == (
        'namespace "ns1" must be empty, but it still has blobs, containers, '
        'snapshots on "native" snapshotter, snapshots on "overlayfs" snapshotter'
    )


# --- durability ----------------------------------------------------------------------------


def test_namespaces_survive_reopening_the_database(db_path: Path) -> None:
    db = Database(db_path)
    store = NamespaceStore(db)
    run(store.create("ns1", {"a": "b"}))
    run(store.create("ns2"))
    run(store.update_labels("ns1", {"c": "d"}, ["labels.c"]))
    run(store.create("gone"))
    run(store.delete("gone"))
    db.close()

    db = Database(db_path)
    try:
        store = NamespaceStore(db)
        assert store.list() == [Namespace("ns1", {"a": "b", "c": "d"}), Namespace("ns2", {})]
    finally:
        db.close()


def test_a_failed_write_leaves_no_partial_change_after_reopening(db_path: Path) -> None:
    db = Database(db_path)
    store = NamespaceStore(db)
    run(store.create("ns1", {"a": "b"}))
    with pytest.raises(errdefs.InvalidArgument):
        run(store.update_labels("ns1", {"c": "d", "big": "x" * 5000}, None))
    db.close()

    db = Database(db_path)
    try:
        assert NamespaceStore(db).get("ns1").labels == {"a": "b"}
    finally:
        db.close()
