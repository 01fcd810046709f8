"""Garbage collection rules over a real metadata database and content store."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2

from pycontainerd import leases
from pycontainerd.containers import Container, RuntimeInfo
from pycontainerd.content import Info
from pycontainerd.content.local import LocalStore
from pycontainerd.gc import Node, ResourceType
from pycontainerd.images import Descriptor, Image
from pycontainerd.leases import Resource
from pycontainerd.metadata import Metadata
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.gc import GCStats, Graph, parse_expiry
from pycontainerd.namespaces import namespace

pytestmark = pytest.mark.unit

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF = "containerd.io/gc.ref.content"
SNAP_REF = "containerd.io/gc.ref.snapshot."
PAST = "2001-02-03T04:05:06Z"
FUTURE = "2999-01-01T00:00:00Z"

C = ResourceType.CONTENT
S = ResourceType.SNAPSHOT


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Env:
    def __init__(self, base: Path) -> None:
        self.backend = LocalStore(base / "content")
        self.md = Metadata.open(base / "meta", content_store=self.backend)
        content = self.md.content
        assert content is not None
        self.content: ContentStore = content

    def blob(self, dgst: str) -> Path:
        return self.backend.blob_path(dgst)

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return self.md.db.read(lambda c: c.execute(sql, args).fetchall())

    def digests(self, ns: str = "ns") -> set[str]:
        return {r[0] for r in self.rows("SELECT digest FROM content WHERE namespace = ?", ns)}

    async def put(self, data: bytes, labels: Mapping[str, str] | None = None) -> str:
        w = await self.content.writer(f"ref-{sha(data)}")
        await w.write(data)
        return await w.commit(len(data), sha(data), labels=labels)

    async def image(self, name: str, dgst: str, labels: Mapping[str, str] | None = None) -> None:
        await self.md.images.create(Image(name, Descriptor(MANIFEST, dgst, 1), dict(labels or {})))

    async def gc(self) -> GCStats:
        return await self.md.gc.garbage_collect()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.md.close()


def scenario(fn: Callable[[], Awaitable[None]], ns: str = "ns") -> None:
    async def main() -> None:
        with namespace(ns):
            await fn()

    asyncio.run(main())


def test_content_nothing_holds_is_collected_row_and_blob(env: Env) -> None:
    async def body() -> None:
        dgst = await env.put(b"orphan")
        assert env.blob(dgst).exists()
        stats = await env.gc()
        assert env.digests() == set()
        assert not env.blob(dgst).exists()
        assert stats.removed == (Node(C, "ns", dgst),)
        assert stats.elapsed == stats.meta_d > 0 and stats.content_d is not None

    scenario(body)


def test_an_image_keeps_its_target_until_it_is_deleted(env: Env) -> None:
    async def body() -> None:
        dgst = await env.put(b"manifest")
        await env.image("img", dgst)
        await env.gc()
        assert env.digests() == {dgst} and env.blob(dgst).exists()
        await env.md.images.delete("img")
        await env.gc()
        assert env.digests() == set() and not env.blob(dgst).exists()

    scenario(body)


def test_reference_labels_keep_children_through_every_spelling(env: Env) -> None:
    async def body() -> None:
        kept = {
            "config": await env.put(b"config"),
            "dot": await env.put(b"layer 0"),
            "slash": await env.put(b"layer 1"),
            "bare": await env.put(b"bare"),
        }
        grandchild = await env.put(b"grandchild")
        not_a_ref = await env.put(b"not a reference")
        # A child refers on: the chain is followed to the end.
        child = await env.put(b"child", {f"{REF}.next": grandchild})
        root = await env.put(
            b"index",
            {
                f"{REF}.config": kept["config"],
                f"{REF}.l.0": kept["dot"],
                f"{REF}/layer": kept["slash"],
                REF: kept["bare"],
                f"{REF}.m": child,
                f"{REF}ious": not_a_ref,  # only "." or "/" may follow the prefix
            },
        )
        await env.image("img", root)
        await env.gc()
        assert env.digests() == {root, child, grandchild, *kept.values()}
        assert not env.blob(not_a_ref).exists()

    scenario(body)


def test_a_reference_cycle_between_blobs_is_garbage_once_unrooted(env: Env) -> None:
    async def body() -> None:
        a = sha(b"a")
        b = await env.put(b"b", {f"{REF}.a": a})
        assert await env.put(b"a", {f"{REF}.b": b}) == a
        await env.image("img", a)
        await env.gc()
        assert env.digests() == {a, b}
        await env.md.images.delete("img")
        await env.gc()
        assert env.digests() == set()

    scenario(body)


def test_a_lease_keeps_what_it_holds_until_it_is_deleted(env: Env) -> None:
    async def body() -> None:
        await env.md.leases.create("l1")
        with leases.lease("l1"):
            dgst = await env.put(b"leased")
        child = await env.put(b"child of leased")
        await env.content.update(Info(dgst, 0, labels={f"{REF}.c": child}), ["labels"])
        await env.gc()
        assert env.digests() == {dgst, child}
        await env.md.leases.delete("l1")
        await env.gc()
        assert env.digests() == set()
        assert not env.blob(dgst).exists() and not env.blob(child).exists()

    scenario(body)


def test_an_expired_lease_is_deleted_with_what_only_it_held(env: Env) -> None:
    async def body() -> None:
        await env.md.leases.create("old", {leases.EXPIRE_LABEL: PAST})
        await env.md.leases.create("new", {leases.EXPIRE_LABEL: FUTURE})
        await env.md.leases.create("odd", {leases.EXPIRE_LABEL: "next tuesday"})
        held = {}
        for lease_id in ("old", "new", "odd"):
            with leases.lease(lease_id):
                held[lease_id] = await env.put(lease_id.encode())
        stats = await env.gc()
        assert {lease.id for lease in await env.md.leases.list()} == {"new", "odd"}
        assert env.digests() == {held["new"], held["odd"]}
        assert Node(ResourceType.LEASE, "ns", "old") in stats.removed
        assert env.rows("SELECT lease FROM lease_resources WHERE lease = 'old'") == []

    scenario(body)


def test_a_flat_lease_holds_content_but_not_what_it_refers_to(env: Env) -> None:
    async def body() -> None:
        child = await env.put(b"child")
        await env.md.leases.create("flat", {"containerd.io/gc.flat": "true"})
        with leases.lease("flat"):
            parent = await env.put(b"parent", {f"{REF}.c": child})
        await env.gc()
        assert env.digests() == {parent}

    scenario(body)


def test_gc_root_label_keeps_content_by_itself(env: Env) -> None:
    async def body() -> None:
        child = await env.put(b"child")
        root = await env.put(b"root", {"containerd.io/gc.root": "x", f"{REF}.c": child})
        await env.put(b"other")
        await env.gc()
        assert env.digests() == {root, child}

    scenario(body)


def spec() -> any_pb2.Any:
    return any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec")


def test_containers_and_images_refer_through_labels_and_snapshots(env: Env) -> None:
    async def body() -> None:
        by_container = await env.put(b"by container")
        by_image = await env.put(b"by image")
        target = await env.put(b"target")
        await env.md.containers.create(
            Container(
                "c1",
                labels={f"{REF}.x": by_container, f"{SNAP_REF}overlayfs": "extra"},
                runtime=RuntimeInfo("io.containerd.runc.v2"),
                spec=spec(),
                snapshotter="overlayfs",
                snapshot_key="c1-key",
            )
        )
        await env.image("img", target, {f"{REF}.y": by_image, f"{SNAP_REF}native/a": "s1"})
        await env.gc()
        assert env.digests() == {by_container, by_image, target}
        roots = set(env.md.db.read(lambda c: list(Graph(c, 0).roots())))
        assert {
            Node(S, "ns", "overlayfs/c1-key"),
            Node(S, "ns", "overlayfs/extra"),
            Node(S, "ns", "native/s1"),
        } <= roots
        await env.md.containers.delete("c1")
        await env.gc()
        assert env.digests() == {by_image, target}

    scenario(body)


def test_namespaces_are_collected_apart_and_a_shared_blob_stays(env: Env) -> None:
    data = b"in two namespaces"

    async def body() -> None:
        with namespace("a"):
            dgst = await env.put(data)
            await env.image("img", dgst)
        with namespace("b"):
            await env.put(data)
            # b's label names a digest only a has: no reach across namespaces.
            await env.put(b"b only", {"containerd.io/gc.root": "1", f"{REF}.x": sha(b"a only")})
        with namespace("a"):
            await env.put(b"a only")
        await env.gc()
        assert env.digests("a") == {dgst}
        assert env.digests("b") == {sha(b"b only")}
        assert env.blob(dgst).exists()

    scenario(body)


def _ingest_dirs(env: Env) -> list[str]:
    return [p.name for p in (env.backend.root / "ingest").iterdir()]


def test_an_unleased_ingest_lives_until_it_expires(env: Env) -> None:
    async def body() -> None:
        w = await env.content.writer("slow")
        await w.write(b"half")
        await w.close()
        ((expires, created),) = env.rows("SELECT expires_at, created_at FROM ingests")
        assert expires - created == 24 * 3600 * 10**9
        await env.put(b"trigger")  # unleased: goes, and makes content dirty
        await env.gc()
        assert [s.ref for s in await env.content.list_statuses()] == ["slow"]

        await env.md.db.write(lambda c: c.execute("UPDATE ingests SET expires_at = 1"))
        stats = await env.gc()
        assert Node(ResourceType.INGEST, "ns", "slow") in stats.removed
        assert env.rows("SELECT ref FROM ingests") == []
        assert _ingest_dirs(env) == []

    scenario(body)


def test_a_leased_ingest_has_no_expiry_and_goes_with_its_lease(env: Env) -> None:
    async def body() -> None:
        await env.md.leases.create("l")
        with leases.lease("l"):
            w = await env.content.writer("held")
            await w.write(b"part")
            await w.close()
        assert env.rows("SELECT expires_at FROM ingests") == [(None,)]
        await env.gc()
        assert len(_ingest_dirs(env)) == 1
        await env.md.leases.delete("l")
        await env.gc()
        assert env.rows("SELECT ref FROM ingests") == []
        assert _ingest_dirs(env) == []

    scenario(body)


def test_backend_ingests_no_row_names_are_aborted(env: Env) -> None:
    async def body() -> None:
        stray = await env.backend.writer("crashed-before-its-row")
        await stray.write(b"x")
        await stray.close()
        dgst = await env.put(b"deleted")
        await env.content.delete(dgst)
        await env.gc()
        assert _ingest_dirs(env) == []

    scenario(body)


def test_a_commit_in_flight_is_never_swept(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the backend commit and the row, the blob belongs to no one;
    the collector waits on the content lock instead of sweeping it."""
    data = b"committing"
    original = ContentStore._committed

    async def body() -> None:
        release = asyncio.Event()

        async def slow(self: ContentStore, *args: Any) -> bool:
            await release.wait()
            return await original(self, *args)

        monkeypatch.setattr(ContentStore, "_committed", slow)
        await env.md.leases.create("l")
        with leases.lease("l"):
            w = await env.content.writer("r")
            await w.write(data)
            commit = asyncio.create_task(w.commit(len(data), sha(data)))
            while not env.blob(sha(data)).exists():
                await asyncio.sleep(0.001)
        collection = asyncio.create_task(env.gc())
        await asyncio.sleep(0.05)
        assert not collection.done()
        release.set()
        assert await commit == sha(data)
        await collection
        assert env.digests() == {sha(data)} and env.blob(sha(data)).exists()

    scenario(body)


class FakeSnapshots:
    """A snapshot store's collectible: rows in memory, parents as references."""

    type = ResourceType.SNAPSHOT

    def __init__(self, parents: Mapping[str, str], roots: Iterable[str] = ()) -> None:
        self.parents = dict(parents)  # "<snapshotter>/<key>" -> parent key or ""
        self.root_keys = set(roots)

    def all(self, conn: sqlite3.Connection) -> list[Node]:
        return [Node(S, "ns", k) for k in self.parents]

    def roots(self, conn: sqlite3.Connection, now: int) -> list[Node]:
        return [Node(S, "ns", k) for k in self.root_keys]

    def references(self, conn: sqlite3.Connection, node: Node) -> list[Node]:
        parent = self.parents.get(node.key, "")
        if not parent:
            return []
        snapshotter = node.key.split("/", 1)[0]
        return [Node(S, node.namespace, f"{snapshotter}/{parent}", node.flat)]

    def remove(self, conn: sqlite3.Connection, node: Node) -> None:
        del self.parents[node.key]


def test_snapshots_join_through_a_collectible_and_cleanup_callbacks(env: Env) -> None:
    snaps = FakeSnapshots(
        {
            "fake/base": "",
            "fake/mid": "base",
            "fake/c1": "mid",
            "fake/orphan": "base",
            "fake/leased": "",
            "fake/labelled": "",
            "fake/root": "",
            "other/x": "",
        },
        roots=["fake/root"],
    )
    cleaned: list[str] = []

    async def cleanup(name: str) -> None:
        cleaned.append(name)

    env.md.gc.register_collectible(snaps)
    env.md.gc.register_snapshotter("fake", lambda: cleanup("fake"))
    env.md.gc.register_snapshotter("other", lambda: cleanup("other"))
    env.md.gc.register_snapshotter("idle", lambda: cleanup("idle"))

    async def body() -> None:
        await env.md.containers.create(
            Container(
                "c1",
                runtime=RuntimeInfo("io.containerd.runc.v2"),
                spec=spec(),
                snapshotter="fake",
                snapshot_key="c1",
            )
        )
        await env.md.leases.create("l")
        await env.md.leases.add_resource("l", Resource("leased", "snapshots/fake"))
        await env.image("img", await env.put(b"m", {f"{SNAP_REF}fake": "labelled"}))
        stats = await env.gc()
        assert set(snaps.parents) == {
            "fake/base",
            "fake/mid",
            "fake/c1",
            "fake/leased",
            "fake/labelled",
            "fake/root",
        }
        assert {n.key for n in stats.removed} == {"fake/orphan", "other/x"}
        assert sorted(cleaned) == ["fake", "other"] == sorted(stats.snapshot_d)

        cleaned.clear()
        env.md.gc.mark_snapshotter_dirty("idle")
        await env.gc()
        assert cleaned == ["idle"]

    scenario(body)


def test_a_flat_lease_holds_a_snapshot_chain_without_its_labels(env: Env) -> None:
    snaps = FakeSnapshots({"fake/base": "", "fake/top": "base", "fake/other": ""})
    env.md.gc.register_collectible(snaps)

    async def body() -> None:
        await env.md.leases.create("flat", {"containerd.io/gc.flat": "1"})
        await env.md.leases.add_resource("flat", Resource("top", "snapshots/fake"))
        await env.gc()
        assert set(snaps.parents) == {"fake/base", "fake/top"}

    scenario(body)


def test_collection_resets_dirty_and_is_not_a_mutation(env: Env) -> None:
    seen: list[bool] = []
    env.md.gc.register_mutation_callback(seen.append)

    async def body() -> None:
        dgst = await env.put(b"x")  # two writes: the ingest, the commit
        assert seen == [False, False]
        await env.content.delete(dgst)
        assert env.md.db.dirty > 0
        # Every mutation after a deletion reports dirty until a collection.
        await env.md.leases.create("after-delete")
        assert seen == [False, False, True, True]
        await env.gc()
        assert env.md.db.dirty == 0 and not env.content.dirty
        assert len(seen) == 4
        await env.md.leases.create("clean")
        assert seen[-1] is False

    scenario(body)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("1970-01-01T01:00:00+01:00", 0),
        ("2024-05-01T12:00:00.123456789Z", 1714564800_123456789),
        ("2024-05-01T12:00:00", None),  # no zone: Go's RFC 3339 refuses it
        ("2024-05-01 12:00:00Z", None),
        ("2024-13-01T12:00:00Z", None),
        ("soon", None),
    ],
)
def test_parse_expiry_reads_rfc3339_as_go_does(text: str, expected: int | None) -> None:
    assert parse_expiry(text) == expected


def test_ingests_from_schema_2_get_the_unleased_expiry(tmp_path: Path) -> None:
    from pycontainerd.metadata.db import MIGRATIONS, Database

    path = tmp_path / "meta.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version=2")
    conn.execute("INSERT INTO namespaces VALUES ('ns', '{}', 0, 0)")
    conn.execute("INSERT INTO ingests VALUES ('ns', 'r', 'ns/1/r', '', 1000)")
    conn.close()
    db = Database(path)
    try:
        assert db.read(lambda c: c.execute("SELECT expires_at FROM ingests").fetchall()) == [
            (1000 + 24 * 3600 * 10**9,)
        ]
    finally:
        db.close()
