"""Content in metadata: namespace isolation, sharing, leases, GC hooks, restarts."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pycontainerd import content, errdefs, leases
from pycontainerd.content.local import LocalStore
from pycontainerd.metadata import Database, LeaseManager
from pycontainerd.metadata.content import ContentStore
from pycontainerd.namespaces import namespace

pytestmark = pytest.mark.unit

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Env:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.db = Database(base / "meta" / "meta.db")
        self.backend = LocalStore(base / "content")
        self.store = ContentStore(self.db, self.backend)
        self.leases = LeaseManager(self.db)

    def rows(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        return self.db.read(lambda c: c.execute(sql, args).fetchall())

    def reopen(self) -> Env:
        self.db.close()
        return Env(self.base)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.db.close()


async def put(store: content.Store, ref: str, data: bytes, **kw: object) -> str:
    w = await store.writer(ref)
    await w.write(data)
    return await w.commit(len(data), sha(data), **kw)  # type: ignore[arg-type]


def in_ns(ns: str, fn: Callable[[], Awaitable[T]]) -> T:
    async def wrapped() -> T:
        with namespace(ns):
            return await fn()

    return asyncio.run(wrapped())


def test_a_blob_in_one_namespace_is_invisible_in_another(env: Env) -> None:
    data = b"only in a"

    async def scenario() -> None:
        with namespace("a"):
            await put(env.store, "r", data)
            assert (await env.store.info(sha(data))).size == len(data)
        with namespace("b"):
            with pytest.raises(errdefs.NotFound, match="content digest"):
                await env.store.info(sha(data))
            with pytest.raises(errdefs.NotFound):
                await env.store.reader_at(sha(data))
            with pytest.raises(errdefs.NotFound):
                await env.store.delete(sha(data))
            assert [i async for i in env.store.walk()] == []
        with namespace("a"):
            assert [i.digest async for i in env.store.walk()] == [sha(data)]

    run(scenario())


def test_ingest_refs_are_per_namespace(env: Env) -> None:
    async def scenario() -> None:
        with namespace("a"):
            wa = await env.store.writer("same-ref")
            await wa.write(b"aaa")
        with namespace("b"):
            wb = await env.store.writer("same-ref")  # not locked by a's writer
            await wb.write(b"b")
            assert [s.ref for s in await env.store.list_statuses()] == ["same-ref"]
            assert (await env.store.status("same-ref")).offset == 1
        with namespace("a"):
            assert (await env.store.status("same-ref")).offset == 3
        await wa.close()
        await wb.close()

    run(scenario())
    backend_refs = {r for (r,) in env.rows("SELECT backend_ref FROM ingests")}
    assert len(backend_refs) == 2


def test_writing_creates_the_namespace(env: Env) -> None:
    in_ns("fresh", lambda: put(env.store, "r", b"x"))
    assert env.rows("SELECT name FROM namespaces") == [("fresh",)]


def test_namespace_is_required(env: Env) -> None:
    with pytest.raises(errdefs.FailedPrecondition, match="namespace is required"):
        run(env.store.info(sha(b"x")))


def test_shared_blob_commits_without_bytes_in_another_namespace(env: Env) -> None:
    data = b"shared bytes"

    async def scenario() -> None:
        with namespace("a"):
            await put(env.store, "r", data)
        with namespace("b"):
            w = await env.store.writer("r2", total=len(data), expected=sha(data))
            st = await w.status()
            assert (st.offset, st.total) == (len(data), len(data))
            assert await w.commit(len(data), sha(data)) == sha(data)
            assert (await env.store.info(sha(data))).size == len(data)
            assert await content.read_blob(env.store, sha(data)) == data
            assert await env.store.list_statuses() == []

    run(scenario())


def test_shared_writer_that_gets_bytes_writes_a_real_ingest(env: Env) -> None:
    data = b"0123456789"

    async def scenario() -> None:
        with namespace("a"):
            await put(env.store, "r", data)
        with namespace("b"):
            # A client that restarts from zero: truncate, then the whole blob.
            w = await env.store.writer("r", expected=sha(data))
            await w.truncate(0)
            await w.write(data)
            assert await w.commit(len(data), sha(data)) == sha(data)
            assert (await env.store.info(sha(data))).size == len(data)

    run(scenario())


def test_commit_of_a_blob_the_namespace_has_is_already_exists(env: Env) -> None:
    async def scenario() -> None:
        with namespace("a"):
            await put(env.store, "one", b"dup")
            with pytest.raises(errdefs.AlreadyExists, match="content sha256:"):
                await env.store.writer("two", expected=sha(b"dup"))
            w = await env.store.writer("three")
            await w.write(b"dup")
            with pytest.raises(errdefs.AlreadyExists):
                await w.commit(3, sha(b"dup"))
            assert await env.store.list_statuses() == []

    run(scenario())


def test_labels_live_in_metadata_per_namespace(env: Env) -> None:
    async def scenario() -> None:
        with namespace("a"):
            dgst = await put(env.store, "r", b"lbl", labels={"k": "v"})
            info = await env.store.update(
                content.Info(dgst, 0, labels={"x": "1"}), ["labels.x", "labels.k"]
            )
            assert info.labels == {"x": "1"}
            assert [i.digest async for i in env.store.walk("labels.x==1")] == [dgst]
            assert [i async for i in env.store.walk("labels.k==v")] == []
            with pytest.raises(errdefs.InvalidArgument, match="cannot update"):
                await env.store.update(content.Info(dgst, 0), ["size"])
        with namespace("b"):
            w = await env.store.writer("r", expected=dgst)
            await w.commit()
            assert (await env.store.info(dgst)).labels == {}

    run(scenario())


def test_failed_commit_leaves_no_row_and_an_abortable_ingest(env: Env) -> None:
    async def scenario() -> None:
        with namespace("a"):
            w = await env.store.writer("bad")
            await w.write(b"hello")
            with pytest.raises(errdefs.FailedPrecondition):
                await w.commit(5, sha(b"nope"))
            assert [i async for i in env.store.walk()] == []
            assert [s.ref for s in await env.store.list_statuses()] == ["bad"]
            await env.store.abort("bad")
            assert await env.store.list_statuses() == []
            assert await env.backend.list_statuses() == []
            with pytest.raises(errdefs.NotFound, match='ingest ref "bad"'):
                await env.store.abort("bad")

    run(scenario())


def test_writes_under_a_lease_attach_ingests_and_content(env: Env) -> None:
    async def scenario() -> None:
        with namespace("a"):
            await env.leases.create("l1")
            with leases.lease("l1"):
                w = await env.store.writer("leased")
                assert env.rows("SELECT type, id FROM lease_resources") == [("ingests", "leased")]
                await w.write(b"leased bytes")
                dgst = await w.commit()
                assert env.rows("SELECT type, id FROM lease_resources") == [("content", dgst)]
                await env.store.delete(dgst)
                assert env.rows("SELECT type, id FROM lease_resources") == []
            with leases.lease("missing"), pytest.raises(errdefs.NotFound, match="lease does not"):
                await env.store.writer("x")

    run(scenario())


def test_delete_removes_only_the_row_and_leaves_the_bytes_to_gc(env: Env) -> None:
    data = b"collect me"

    async def scenario() -> None:
        with namespace("a"):
            await put(env.store, "r", data)
        with namespace("b"):
            await put(env.store, "r", data)
        dirty = env.db.dirty
        with namespace("a"):
            await env.store.delete(sha(data))
        assert env.store.dirty and env.db.dirty > dirty
        assert await env.store.garbage() == []  # b still has it
        with namespace("b"):
            await env.store.delete(sha(data))
        assert (await env.backend.info(sha(data))).size == len(data)
        assert await env.store.garbage() == [sha(data)]
        assert await env.store.collect() == [sha(data)]
        with pytest.raises(errdefs.NotFound):
            await env.backend.info(sha(data))

    run(scenario())


def test_gc_keeps_a_blob_a_shared_ingest_expects(env: Env) -> None:
    data = b"expected by an ingest"

    async def scenario() -> None:
        with namespace("a"):
            await put(env.store, "r", data)
        with namespace("b"):
            w = await env.store.writer("pending", expected=sha(data))
        with namespace("a"):
            await env.store.delete(sha(data))
        assert await env.store.collect() == []
        with namespace("b"):
            await w.commit()
            assert (await env.store.info(sha(data))).size == len(data)

    run(scenario())


def test_ingest_survives_a_restart_and_resumes(env: Env) -> None:
    data = b"a" * 1000 + b"b" * 1000

    async def before() -> None:
        with namespace("a"):
            w = await env.store.writer("long", total=len(data))
            await w.write(data[:1000])
            # the daemon dies: no close

    run(before())
    env2 = env.reopen()

    async def after() -> None:
        with namespace("a"):
            st = await env2.store.status("long")
            assert (st.offset, st.total) == (1000, len(data))
            w = await env2.store.writer("long", total=len(data))
            assert (await w.status()).offset == 1000
            await w.write(data[1000:])
            assert await w.commit(len(data), sha(data)) == sha(data)

    try:
        run(after())
    finally:
        env2.db.close()
