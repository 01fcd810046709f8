"""The snapshot metastore: rows, parent chains, errors worded as containerd's."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.snapshots import MAX_KEY_SIZE, Info, Kind, Usage
from pycontainerd.snapshots.storage import MetaStore, Snapshot

pytestmark = pytest.mark.unit


@pytest.fixture
def ms(tmp_path: Path) -> Iterator[MetaStore]:
    store = MetaStore(tmp_path / "metadata.db")
    try:
        yield store
    finally:
        store.close()


def chain(ms: MetaStore, n: int) -> list[str]:
    """Commit a chain c0 <- c1 <- ... and return the committed names."""
    parent = ""
    names = []
    for i in range(n):
        with ms.transaction(writable=True) as tx:
            tx.create(Kind.ACTIVE, f"k{i}", parent)
        with ms.transaction(writable=True) as tx:
            tx.commit(f"k{i}", f"c{i}", Usage(10 * (i + 1), i + 1))
        parent = f"c{i}"
        names.append(parent)
    return names


def test_create_returns_id_and_parent_chain_nearest_first(ms: MetaStore) -> None:
    chain(ms, 3)
    snap = ms.write(lambda tx: tx.create(Kind.ACTIVE, "top", "c2", {"a": "b"}))
    assert snap == Snapshot(id="4", kind=Kind.ACTIVE, parent_ids=("3", "2", "1"))
    assert ms.read(lambda tx: tx.get_snapshot("top")) == snap
    view = ms.write(lambda tx: tx.create(Kind.VIEW, "v", ""))
    assert view == Snapshot(id="5", kind=Kind.VIEW)


def test_get_info_reports_kind_parent_labels_times_and_usage(ms: MetaStore) -> None:
    chain(ms, 2)
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "a", "c1", {"x": "y"}))
    sid, info, usage = ms.read(lambda tx: tx.get_info("a"))
    assert (sid, info.name, info.kind, info.parent, dict(info.labels)) == (
        "3",
        "a",
        Kind.ACTIVE,
        "c1",
        {"x": "y"},
    )
    assert info.created_at == info.updated_at and info.created_at.year >= 2024
    assert usage == Usage()
    assert ms.read(lambda tx: tx.get_info("c1"))[2] == Usage(20, 2)


def test_commit_keeps_id_replaces_labels_and_relinks_children(ms: MetaStore) -> None:
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "k", "", {"old": "1"}))
    sid = ms.write(lambda tx: tx.commit("k", "c", Usage(5, 1), {"new": "2"}))
    assert sid == "1"
    _, info, usage = ms.read(lambda tx: tx.get_info("c"))
    assert (info.kind, dict(info.labels), usage) == (Kind.COMMITTED, {"new": "2"}, Usage(5, 1))
    with pytest.raises(errdefs.NotFound):
        ms.read(lambda tx: tx.get_info("k"))
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "child", "c"))
    assert ms.read(lambda tx: tx.get_info("child"))[1].parent == "c"


def test_create_errors(ms: MetaStore) -> None:
    chain(ms, 1)
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "a", ""))
    ms.write(lambda tx: tx.create(Kind.VIEW, "v", "c0"))
    with pytest.raises(errdefs.AlreadyExists, match=r"^snapshot a$"):
        ms.write(lambda tx: tx.create(Kind.ACTIVE, "a", ""))
    with pytest.raises(errdefs.AlreadyExists):
        ms.write(lambda tx: tx.create(Kind.VIEW, "c0", ""))
    with pytest.raises(errdefs.NotFound, match='missing parent "nope"'):
        ms.write(lambda tx: tx.create(Kind.ACTIVE, "x", "nope"))
    for parent in ("a", "v"):
        with (
            pytest.raises(errdefs.InvalidArgument, match="is not committed snapshot"),
            ms.transaction(writable=True) as tx,
        ):
            tx.create(Kind.ACTIVE, "x", parent)
    with pytest.raises(errdefs.InvalidArgument, match="only snapshots of type Active or View"):
        ms.write(lambda tx: tx.create(Kind.COMMITTED, "x", ""))
    with pytest.raises(errdefs.InvalidArgument, match="must not be empty"):
        ms.write(lambda tx: tx.create(Kind.ACTIVE, "", ""))
    with pytest.raises(errdefs.InvalidArgument, match="longer than"):
        ms.write(lambda tx: tx.create(Kind.ACTIVE, "k" * (MAX_KEY_SIZE + 1), ""))
    with pytest.raises(errdefs.InvalidArgument, match="NUL"):
        ms.write(lambda tx: tx.create(Kind.ACTIVE, "a\x00b", ""))
    with pytest.raises(errdefs.InvalidArgument, match="label key and value"):
        ms.write(lambda tx: tx.create(Kind.ACTIVE, "x", "", {"k": "v" * 5000}))
    # None of the failures left a row behind.
    assert sorted(ms.read(lambda tx: tx.id_map()).values()) == ["a", "c0", "v"]


def test_keys_are_not_paths(ms: MetaStore) -> None:
    snap = ms.write(lambda tx: tx.create(Kind.ACTIVE, "../../etc/passwd", ""))
    assert snap.id == "1"


def test_commit_errors(ms: MetaStore) -> None:
    chain(ms, 1)
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "a", ""))
    ms.write(lambda tx: tx.create(Kind.VIEW, "v", "c0"))
    with pytest.raises(errdefs.AlreadyExists, match="committed snapshot c0"):
        ms.write(lambda tx: tx.commit("a", "c0", Usage()))
    with pytest.raises(errdefs.AlreadyExists):  # the name is checked before the key
        ms.write(lambda tx: tx.commit("nope", "a", Usage()))
    with pytest.raises(errdefs.NotFound, match='active snapshot "nope"'):
        ms.write(lambda tx: tx.commit("nope", "x", Usage()))
    with pytest.raises(errdefs.FailedPrecondition, match='snapshot "v" is not active'):
        ms.write(lambda tx: tx.commit("v", "x", Usage()))
    with pytest.raises(errdefs.FailedPrecondition, match='snapshot "c0" is not active'):
        ms.write(lambda tx: tx.commit("c0", "x", Usage()))
    with pytest.raises(errdefs.InvalidArgument):
        ms.write(lambda tx: tx.commit("a", "", Usage()))


def test_remove_refuses_parents_and_unknown_keys(ms: MetaStore) -> None:
    chain(ms, 2)
    ms.write(lambda tx: tx.create(Kind.VIEW, "v", "c1"))
    with pytest.raises(errdefs.FailedPrecondition, match="cannot remove snapshot with child"):
        ms.write(lambda tx: tx.remove("c1"))
    with pytest.raises(errdefs.NotFound, match="snapshot nope"):
        ms.write(lambda tx: tx.remove("nope"))
    assert ms.write(lambda tx: tx.remove("v")) == ("3", Kind.VIEW)
    assert ms.write(lambda tx: tx.remove("c1")) == ("2", Kind.COMMITTED)
    assert ms.read(lambda tx: tx.id_map()) == {"1": "c0"}


def test_ids_are_never_reused(ms: MetaStore) -> None:
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "a", ""))
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "b", ""))
    ms.write(lambda tx: tx.remove("b"))
    assert ms.write(lambda tx: tx.create(Kind.ACTIVE, "b", "")).id == "3"


def test_get_snapshot_only_for_active_and_views(ms: MetaStore) -> None:
    chain(ms, 1)
    with pytest.raises(errdefs.FailedPrecondition, match="snapshot c0 not active or view"):
        ms.read(lambda tx: tx.get_snapshot("c0"))
    with pytest.raises(errdefs.NotFound, match="snapshot nope does not exist"):
        ms.read(lambda tx: tx.get_snapshot("nope"))
    with pytest.raises(errdefs.NotFound):
        ms.read(lambda tx: tx.get_info("nope"))


def test_update_by_field_paths(ms: MetaStore) -> None:
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "a", "", {"keep": "1", "drop": "2", "chg": "3"}))
    before = ms.read(lambda tx: tx.get_info("a"))[1]
    new = Info(name="a", kind=Kind.VIEW, labels={"chg": "x", "add": "y", "other": "z"})
    got = ms.write(lambda tx: tx.update(new, ["labels.chg", "labels.add", "labels.drop"]))
    assert dict(got.labels) == {"keep": "1", "chg": "x", "add": "y"}
    assert got.kind == Kind.ACTIVE  # only labels change
    assert got.created_at == before.created_at and got.updated_at >= before.updated_at
    assert ms.read(lambda tx: tx.get_info("a"))[1] == got
    got = ms.write(lambda tx: tx.update(Info(name="a", kind=Kind.ACTIVE, labels={"only": "1"})))
    assert dict(got.labels) == {"only": "1"}
    got = ms.write(lambda tx: tx.update(Info(name="a", kind=Kind.ACTIVE), ["labels"]))
    assert dict(got.labels) == {}
    with pytest.raises(errdefs.InvalidArgument, match='cannot update "parent" field'):
        ms.write(lambda tx: tx.update(Info(name="a", kind=Kind.ACTIVE), ["labels.x", "parent"]))
    with pytest.raises(errdefs.NotFound):
        ms.write(lambda tx: tx.update(Info(name="nope", kind=Kind.ACTIVE)))
    with pytest.raises(errdefs.InvalidArgument, match="label key and value"):
        ms.write(lambda tx: tx.update(Info(name="a", kind=Kind.ACTIVE, labels={"k": "v" * 5000})))


def test_walk_with_filters(ms: MetaStore) -> None:
    chain(ms, 2)
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "a", "c1", {"role": "app", "x.y": "dotted"}))
    ms.write(lambda tx: tx.create(Kind.VIEW, "v", "c0", {"role": "debug"}))

    def names(*flt: str) -> list[str]:
        return [info.name for _, info in ms.read(lambda tx: tx.walk(*flt))]

    assert names() == ["a", "c0", "c1", "v"]
    assert names("kind==committed") == ["c0", "c1"]
    assert names("kind==active", "kind==view") == ["a", "v"]
    assert names("parent==c1") == ["a"]
    assert names("name~=^c") == ["c0", "c1"]
    assert names("labels.role") == ["a", "v"]
    assert names("labels.role==app") == ["a"]
    assert names("labels.x.y==dotted") == ["a"]
    assert names('labels."x.y"==dotted') == ["a"]
    assert names("kind==view,labels.role==debug") == ["v"]
    assert names('parent==""') == ["c0"]
    with pytest.raises(errdefs.InvalidArgument):
        names("==bad")


def test_failed_transaction_changes_nothing(ms: MetaStore) -> None:
    ms.write(lambda tx: tx.create(Kind.ACTIVE, "a", ""))

    def half(tx: object) -> None:
        from pycontainerd.snapshots.storage import Transaction

        assert isinstance(tx, Transaction)
        tx.commit("a", "c", Usage(1, 1))
        tx.create(Kind.ACTIVE, "b", "c")
        raise RuntimeError("directory work failed")

    with pytest.raises(RuntimeError):
        ms.write(half)
    assert ms.read(lambda tx: tx.id_map()) == {"1": "a"}
    assert ms.read(lambda tx: tx.get_info("a"))[1].kind == Kind.ACTIVE


def test_read_transaction_refuses_writes(ms: MetaStore) -> None:
    with pytest.raises(errdefs.FailedPrecondition):
        ms.read(lambda tx: tx.create(Kind.ACTIVE, "a", ""))


def test_database_settings_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    store = MetaStore(path)
    store.write(lambda tx: tx.create(Kind.ACTIVE, "a", "", {"k": "v"}))
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    store = MetaStore(path)
    try:
        assert dict(store.read(lambda tx: tx.get_info("a"))[1].labels) == {"k": "v"}
        assert store.write(lambda tx: tx.create(Kind.ACTIVE, "b", "")).id == "2"
    finally:
        store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(errdefs.FailedPrecondition, match="schema version 99"):
        MetaStore(path)
