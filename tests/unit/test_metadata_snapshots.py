"""Namespaced snapshots in the metadata store, over an in-memory snapshotter."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from pycontainerd import errdefs, leases, namespaces
from pycontainerd.gc import Node, ResourceType
from pycontainerd.leases import Resource
from pycontainerd.metadata import Metadata
from pycontainerd.metadata.gc import Graph
from pycontainerd.mount import Mount
from pycontainerd.snapshots import Info, Kind, Snapshotter, Usage
from tests.unit._meta import run

pytestmark = pytest.mark.unit


class FakeSnapshotter:
    """A core snapshotter in a dict: enough of containerd's rules to test the wrapper."""

    def __init__(self) -> None:
        self.snaps: dict[str, Info] = {}
        self.calls: list[tuple[str, ...]] = []
        self.cleaned = 0
        self.fail_next: errdefs.ContainerdError | None = None

    def _check_fail(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    async def stat(self, key: str) -> Info:
        if key not in self.snaps:
            raise errdefs.NotFound(f"snapshot {key}")
        return self.snaps[key]

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        raise AssertionError("the wrapper keeps labels itself")

    async def usage(self, key: str) -> Usage:
        await self.stat(key)
        return Usage(4096, 1)

    async def mounts(self, key: str) -> list[Mount]:
        await self.stat(key)
        return [Mount("bind", f"/fake/{key}", ("rbind", "rw"))]

    async def _create(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> list[Mount]:
        self._check_fail()
        self.calls.append((kind.name, key, parent, *sorted(labels or {})))
        if key in self.snaps:
            raise errdefs.AlreadyExists(f"snapshot {key}")
        if parent and self.snaps[parent].kind != Kind.COMMITTED:
            raise errdefs.FailedPrecondition("parent is not committed")
        self.snaps[key] = Info(key, kind, parent, dict(labels or {}))
        return await self.mounts(key)

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(Kind.ACTIVE, key, parent, labels)

    async def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(Kind.VIEW, key, parent, labels)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        self._check_fail()
        self.calls.append(("COMMIT", name, key))
        info = await self.stat(key)
        if info.kind != Kind.ACTIVE:
            raise errdefs.FailedPrecondition(f"snapshot {key!r} is not active")
        del self.snaps[key]
        self.snaps[name] = dataclasses.replace(info, name=name, kind=Kind.COMMITTED)

    async def remove(self, key: str) -> None:
        self.calls.append(("REMOVE", key))
        if any(i.parent == key for i in self.snaps.values()):
            raise errdefs.FailedPrecondition("has children")
        del self.snaps[key]

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        for info in list(self.snaps.values()):
            yield info

    async def cleanup(self) -> None:
        self.cleaned += 1

    async def close(self) -> None:
        pass


@pytest.fixture
def fake() -> FakeSnapshotter:
    return FakeSnapshotter()


@pytest.fixture
def md(tmp_path: Path, fake: FakeSnapshotter) -> Iterator[Metadata]:
    m = Metadata.open(tmp_path, snapshotters={"fake": fake})
    try:
        with namespaces.namespace("default"):
            yield m
    finally:
        m.close()


def test_fake_keeps_the_protocol(fake: FakeSnapshotter, md: Metadata) -> None:
    assert isinstance(fake, Snapshotter)
    assert isinstance(md.snapshotters["fake"], Snapshotter)


def test_keys_are_namespaced_with_backend_keys(md: Metadata, fake: FakeSnapshotter) -> None:
    sn = md.snapshotters["fake"]
    mounts = run(sn.prepare("a", labels={"x": "1", "containerd.io/snapshot/y": "2"}))
    assert mounts == [Mount("bind", "/fake/default/1/a", ("rbind", "rw"))]
    # Only containerd's inherited labels reach the backend.
    assert fake.calls == [("ACTIVE", "default/1/a", "", "containerd.io/snapshot/y")]
    with namespaces.namespace("other"):
        run(sn.prepare("a"))
        assert [i.name for i in _walk(sn)] == ["a"]
        assert run(sn.stat("a")).labels == {}
    assert "other/1/a" in fake.snaps
    info = run(sn.stat("a"))
    assert (info.name, info.kind, info.labels["x"]) == ("a", Kind.ACTIVE, "1")
    assert run(sn.usage("a")) == Usage(4096, 1)
    assert run(sn.mounts("a"))[0].source == "/fake/default/1/a"


def _walk(sn: Snapshotter, *filters: str) -> list[Info]:
    async def collect() -> list[Info]:
        return [i async for i in sn.walk(*filters)]

    return run(collect())


def test_commit_rekeys_and_parents_resolve_by_namespace_key(
    md: Metadata, fake: FakeSnapshotter
) -> None:
    sn = md.snapshotters["fake"]
    run(sn.prepare("work"))
    run(sn.commit("base", "work", {"containerd.io/gc.root": "now"}))
    assert ("COMMIT", "default/2/base", "default/1/work") in fake.calls
    with pytest.raises(errdefs.NotFound, match=r"^snapshot work does not exist$"):
        run(sn.stat("work"))
    base = run(sn.stat("base"))
    assert (base.kind, base.labels) == (Kind.COMMITTED, {"containerd.io/gc.root": "now"})
    run(sn.prepare("child", "base"))
    run(sn.view("v", "base"))
    assert fake.calls[-2][:3] == ("ACTIVE", "default/3/child", "default/2/base")
    assert [(i.name, i.parent, i.kind) for i in _walk(sn)] == [
        ("base", "", Kind.COMMITTED),
        ("child", "base", Kind.ACTIVE),
        ("v", "base", Kind.VIEW),
    ]
    assert [i.name for i in _walk(sn, "kind==view")] == ["v"]
    assert [i.name for i in _walk(sn, "parent==base,kind==active")] == ["child"]


def test_errors_match_containerd(md: Metadata, fake: FakeSnapshotter) -> None:
    sn = md.snapshotters["fake"]
    with pytest.raises(errdefs.NotFound, match=r"^parent snapshot nope does not exist$"):
        run(sn.prepare("x", "nope"))
    with pytest.raises(errdefs.NotFound, match=r"^snapshot nope does not exist$"):
        run(sn.commit("c", "nope"))
    with pytest.raises(errdefs.InvalidArgument, match="must not be empty"):
        run(sn.prepare(""))
    with pytest.raises(errdefs.InvalidArgument, match="longer than"):
        run(sn.prepare("k" * 5000))
    with pytest.raises(errdefs.InvalidArgument, match=r"^info.Labels: label key and value"):
        run(sn.prepare("big", labels={"k": "v" * 5000}))
    run(sn.prepare("a"))
    with pytest.raises(errdefs.AlreadyExists, match=r'^snapshot "a"$'):
        run(sn.prepare("a"))
    run(sn.commit("c", "a"))
    run(sn.prepare("b", "c"))
    with pytest.raises(errdefs.FailedPrecondition, match=r"^cannot remove snapshot with child$"):
        run(sn.remove("c"))
    with pytest.raises(errdefs.NotFound, match=r"^snapshot zz does not exist$"):
        run(sn.remove("zz"))
    with pytest.raises(errdefs.InvalidArgument, match='cannot update "parent" field'):
        run(sn.update(Info("b", Kind.ACTIVE), ["parent"]))
    with (
        namespaces.namespace(None),
        pytest.raises(errdefs.FailedPrecondition, match="namespace is required"),
    ):
        run(sn.stat("b"))


def test_backend_failure_leaves_no_row(md: Metadata, fake: FakeSnapshotter) -> None:
    sn = md.snapshotters["fake"]
    fake.fail_next = errdefs.Unavailable("backend down")
    with pytest.raises(errdefs.Unavailable):
        run(sn.prepare("a"))
    assert _walk(sn) == []
    run(sn.prepare("a"))  # the key is free again
    fake.fail_next = errdefs.FailedPrecondition("no")
    with pytest.raises(errdefs.FailedPrecondition):
        run(sn.commit("c", "a"))
    assert [i.name for i in _walk(sn)] == ["a"]


def test_update_labels_with_field_paths(md: Metadata) -> None:
    sn = md.snapshotters["fake"]
    run(sn.prepare("a", labels={"keep": "1", "drop": "2"}))
    before = run(sn.stat("a"))
    time.sleep(0.001)
    info = run(
        sn.update(Info("a", Kind.UNKNOWN, labels={"new": "3"}), ["labels.new", "labels.drop"])
    )
    assert info.labels == {"keep": "1", "new": "3"}
    assert info.updated_at > before.updated_at and info.created_at == before.created_at
    info = run(sn.update(Info("a", Kind.UNKNOWN, labels={"only": "x"})))
    assert info.labels == {"only": "x"}


def test_lease_holds_created_snapshots(md: Metadata) -> None:
    sn = md.snapshotters["fake"]
    run(md.leases.create("l1"))
    with leases.lease("l1"):
        run(sn.prepare("a"))
        assert md.leases.list_resources("l1") == [Resource("a", "snapshots/fake")]
        run(sn.commit("c", "a"))
        assert md.leases.list_resources("l1") == [Resource("c", "snapshots/fake")]
        run(sn.remove("c"))
        assert md.leases.list_resources("l1") == []
    with (
        leases.lease("missing"),
        pytest.raises(errdefs.NotFound, match="lease does not exist"),
    ):
        run(sn.prepare("b"))
    assert _walk(sn) == []


def test_remove_is_collected_later_children_first(md: Metadata, fake: FakeSnapshotter) -> None:
    sn = md.snapshotters["fake"]
    root = {"containerd.io/gc.root": "x"}
    run(sn.prepare("a", labels=root))
    run(sn.commit("c", "a", root))
    run(sn.prepare("b", "c", root))
    run(sn.remove("b"))
    run(sn.remove("c"))
    assert set(fake.snaps) == {"default/2/c", "default/3/b"}  # not yet
    run(md.gc.garbage_collect())
    assert fake.snaps == {}
    assert [c for c in fake.calls if c[0] == "REMOVE"] == [
        ("REMOVE", "default/3/b"),
        ("REMOVE", "default/2/c"),
    ]
    assert fake.cleaned == 1


def test_gc_keeps_roots_leases_and_parents(md: Metadata, fake: FakeSnapshotter) -> None:
    sn = md.snapshotters["fake"]
    run(sn.prepare("base-work"))
    run(sn.commit("base", "base-work"))
    run(sn.prepare("rooted", "base", {"containerd.io/gc.root": "x"}))
    run(sn.prepare("loose"))
    run(md.leases.create("l1"))
    with leases.lease("l1"):
        run(sn.prepare("leased"))
    stats = run(md.gc.garbage_collect())
    assert {n.key for n in stats.removed} == {"fake/loose"}
    assert [i.name for i in _walk(sn)] == ["base", "leased", "rooted"]
    assert "default/4/loose" not in fake.snaps
    run(md.leases.delete("l1"))
    run(md.gc.garbage_collect())
    assert [i.name for i in _walk(sn)] == ["base", "rooted"]


def test_collectible_graph_follows_parents_and_labels(md: Metadata) -> None:
    sn = md.snapshotters["fake"]
    run(sn.prepare("w"))
    run(sn.commit("p", "w", {"containerd.io/gc.ref.content.l0": "sha256:" + "a" * 64}))
    run(sn.prepare("kid", "p"))
    node = Node(ResourceType.SNAPSHOT, "default", "fake/kid")

    def refs(n: Node) -> list[Node]:
        return md.db.read(lambda c: list(Graph(c, 0, md.gc._collectibles).references(n)))

    assert refs(node) == [Node(ResourceType.SNAPSHOT, "default", "fake/p")]
    parent = Node(ResourceType.SNAPSHOT, "default", "fake/p")
    assert refs(parent) == [Node(ResourceType.CONTENT, "default", "sha256:" + "a" * 64)]
    assert refs(parent._replace(flat=True)) == []
    flat_kid = node._replace(flat=True)
    assert refs(flat_kid) == [Node(ResourceType.SNAPSHOT, "default", "fake/p", True)]


def test_namespace_with_snapshots_cannot_be_deleted(md: Metadata) -> None:
    run(md.snapshotters["fake"].prepare("a", labels={"containerd.io/gc.root": "x"}))
    with pytest.raises(errdefs.FailedPrecondition, match="still has snapshots"):
        run(md.namespaces.delete("default"))
