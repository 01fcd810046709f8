"""One content-store test suite, run against every face of the store.

The same behaviours are proved for the local store on disk, the namespaced
metadata store over it, our client against our daemon over its socket and
in-process (the daemon embedded in this process, no socket), and — the
reference — our client against Debian's containerd.  A behaviour that holds for the last
face and fails for another is a compatibility bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import content, errdefs
from pycontainerd.client import AsyncClient
from pycontainerd.content.local import LocalStore, MemoryLabelStore
from pycontainerd.metadata import Database
from pycontainerd.metadata.content import ContentStore
from pycontainerd.namespaces import namespace
from tests.support import inprocess

Body = Callable[[Any], Awaitable[None]]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Face:
    name: str
    opener: Callable[[], contextlib.AbstractAsyncContextManager[Any]]

    def run(self, body: Body) -> None:
        async def main() -> None:
            async with self.opener() as store:
                await body(store)

        asyncio.run(main())


@contextlib.asynccontextmanager
async def _local(root: Path) -> AsyncIterator[Any]:
    yield LocalStore(root / "content", labels=MemoryLabelStore())


@contextlib.asynccontextmanager
async def _metadata(root: Path) -> AsyncIterator[Any]:
    db = Database(root / "meta.db")
    try:
        with namespace("suite"):
            yield ContentStore(db, LocalStore(root / "content"))
    finally:
        db.close()


@contextlib.asynccontextmanager
async def _client(address: str) -> AsyncIterator[Any]:
    # A namespace of its own keeps tests apart on a shared daemon; a lease, as
    # a Go client takes one, keeps what a test writes from the garbage
    # collection another test's deletion sets off.
    ns = f"suite-{uuid.uuid4().hex[:12]}"
    async with AsyncClient(address, ns, timeout=60) as client, client.lease():
        yield client.content


@contextlib.asynccontextmanager
async def _inprocess() -> AsyncIterator[Any]:
    # Our daemon in this process, on this event loop, called without its socket.
    async with (
        inprocess.serving() as server,
        AsyncClient(str(server.address), "suite", timeout=60, channel=server.channel()) as client,
        client.lease(),
    ):
        yield client.content


@pytest.fixture(
    params=[
        pytest.param("local", marks=pytest.mark.unit),
        pytest.param("metadata", marks=pytest.mark.unit),
        pytest.param("client", marks=pytest.mark.integration),
        pytest.param("inprocess", marks=pytest.mark.integration),
        pytest.param("containerd", marks=pytest.mark.interop),
    ]
)
def face(request: pytest.FixtureRequest, tmp_path: Path) -> Face:
    name = request.param
    if name == "local":
        return Face(name, lambda: _local(tmp_path))
    if name == "metadata":
        return Face(name, lambda: _metadata(tmp_path))
    if name == "inprocess":
        return Face(name, _inprocess)
    fixture = "shared_daemon" if name == "client" else "containerd"
    address = request.getfixturevalue(fixture).address
    return Face(name, lambda: _client(address))


async def put(store: Any, ref: str, data: bytes, **kw: Any) -> str:
    w = await store.writer(ref, total=len(data), expected=sha(data))
    await w.write(data)
    dgst: str = await w.commit(len(data), sha(data), **kw)
    return dgst


async def digests_of(store: Any, *filters: str) -> list[str]:
    return [i.digest async for i in store.walk(*filters)]


def test_written_blob_reads_back_with_its_info(face: Face) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)

    async def body(store: Any) -> None:
        assert await put(store, "roundtrip", data) == sha(data)
        info = await store.info(sha(data))
        assert (info.digest, info.size) == (sha(data), len(data))
        assert abs(dt.datetime.now(dt.UTC) - info.created_at) < dt.timedelta(minutes=5)
        assert await content.read_blob(store, sha(data)) == data
        assert sha(data) in await digests_of(store)
        assert await store.list_statuses() == []

    face.run(body)


def test_reads_at_an_offset(face: Face) -> None:
    data = bytes(range(256)) * 8192

    async def body(store: Any) -> None:
        await put(store, "ranges", data)
        reader = await store.reader_at(sha(data))
        assert reader.size == len(data)
        assert await reader.read_at(0, 4) == data[:4]
        assert await reader.read_at(1_000_000, 70_000) == data[1_000_000:1_070_000]
        assert await reader.read_at(len(data) - 2, 100) == data[-2:]
        await reader.close()

    face.run(body)


def test_digest_mismatch_fails_commit_and_nothing_is_visible(face: Face) -> None:
    async def body(store: Any) -> None:
        w = await store.writer("mismatch")
        await w.write(b"actual bytes")
        with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
            await w.commit(12, sha(b"other bytes!"))
        await w.close()
        assert await digests_of(store) == []
        with pytest.raises(errdefs.NotFound):
            await store.info(sha(b"actual bytes"))
        assert [s.ref for s in await store.list_statuses()] == ["mismatch"]
        await store.abort("mismatch")
        assert await store.list_statuses() == []

    face.run(body)


def test_size_mismatch_fails_commit(face: Face) -> None:
    async def body(store: Any) -> None:
        w = await store.writer("size")
        await w.write(b"abc")
        with pytest.raises(errdefs.FailedPrecondition):
            await w.commit(4)
        await w.close()
        assert await digests_of(store) == []

    face.run(body)


def test_a_ref_being_written_is_locked(face: Face) -> None:
    async def body(store: Any) -> None:
        w = await store.writer("locked")
        await w.write(b"first")
        with pytest.raises(errdefs.Unavailable, match="locked"):
            await store.writer("locked")
        await w.close()
        await store.abort("locked")

    face.run(body)


def test_a_closed_ingest_resumes_from_its_offset(face: Face) -> None:
    data = b"0123456789" * 1000

    async def body(store: Any) -> None:
        w = await store.writer("resume", total=len(data))
        await w.write(data[:4000])
        await w.close()
        st = await store.status("resume")
        assert (st.ref, st.offset, st.total) == ("resume", 4000, len(data))
        w = await store.writer("resume", total=len(data))
        assert (await w.status()).offset == 4000
        await w.write(data[4000:])
        assert await w.commit(len(data), sha(data)) == sha(data)
        with pytest.raises(errdefs.NotFound):
            await store.status("resume")

    face.run(body)


def test_write_blob_skips_what_an_interrupted_ingest_has(face: Face) -> None:
    data = os.urandom(2 << 20)

    async def body(store: Any) -> None:
        w = await store.writer("helper")
        await w.write(data[:12345])
        await w.close()
        await content.write_blob(store, "helper", data, size=len(data), expected=sha(data))
        assert await content.read_blob(store, sha(data)) == data
        # Already there: success, nothing written.
        await content.write_blob(store, "again", data, size=len(data), expected=sha(data))
        assert await store.list_statuses() == []

    face.run(body)


def test_labels_are_set_on_commit_and_updated_by_path(face: Face) -> None:
    async def body(store: Any) -> None:
        dgst = await put(store, "labels", b"labelled", labels={"a": "1", "b": "2"})
        assert dict((await store.info(dgst)).labels) == {"a": "1", "b": "2"}
        info = await store.update(
            content.Info(dgst, 0, labels={"a": "10", "c": "3"}),
            ["labels.a", "labels.c", "labels.b"],
        )
        assert dict(info.labels) == {"a": "10", "c": "3"}
        assert await digests_of(store, "labels.c==3") == [dgst]
        assert await digests_of(store, "labels.b") == []
        info = await store.update(content.Info(dgst, 0, labels={"only": "x"}), ["labels"])
        assert dict(info.labels) == {"only": "x"}
        with pytest.raises(errdefs.InvalidArgument):
            await store.update(content.Info(dgst, 0), ["size"])
        with pytest.raises(errdefs.InvalidArgument):
            await store.update(content.Info(dgst, 0, labels={"big": "x" * 5000}), ["labels.big"])

    face.run(body)


def test_walk_filters_by_digest(face: Face) -> None:
    async def body(store: Any) -> None:
        one = await put(store, "one", b"one")
        two = await put(store, "two", b"two")
        assert sorted(await digests_of(store)) == sorted([one, two])
        assert await digests_of(store, f"digest=={one}") == [one]
        assert sorted(await digests_of(store, f"digest=={one}", f"digest=={two}")) == sorted(
            [one, two]
        )
        with pytest.raises(errdefs.InvalidArgument):
            await digests_of(store, "digest==")

    face.run(body)


def test_delete_makes_a_blob_not_found(face: Face) -> None:
    async def body(store: Any) -> None:
        dgst = await put(store, "gone", b"soon gone")
        await store.delete(dgst)
        with pytest.raises(errdefs.NotFound):
            await store.info(dgst)
        with pytest.raises(errdefs.NotFound):
            await store.reader_at(dgst)
        with pytest.raises(errdefs.NotFound):
            await store.delete(dgst)

    face.run(body)


def test_existing_blob_is_already_exists(face: Face) -> None:
    async def body(store: Any) -> None:
        dgst = await put(store, "first", b"exists")
        with pytest.raises(errdefs.AlreadyExists):
            await store.writer("second", expected=dgst)
        w = await store.writer("third")
        await w.write(b"exists")
        with pytest.raises(errdefs.AlreadyExists):
            await w.commit(6, dgst)
        await w.close()
        assert await store.list_statuses() == []

    face.run(body)


def test_invalid_digest_is_invalid_argument(face: Face) -> None:
    async def body(store: Any) -> None:
        for bad in ("sha256:../../etc/passwd", "nope", "sha256:" + "0" * 10):
            with pytest.raises(errdefs.InvalidArgument):
                await store.info(bad)

    face.run(body)


def test_list_statuses_filters_on_ref(face: Face) -> None:
    async def body(store: Any) -> None:
        for ref in ("layer-a", "layer-b", "manifest"):
            w = await store.writer(ref)
            await w.write(b"x")
            await w.close()
        refs = sorted(s.ref for s in await store.list_statuses("ref~=^layer-"))
        assert refs == ["layer-a", "layer-b"]
        for ref in ("layer-a", "layer-b", "manifest"):
            await store.abort(ref)
        with pytest.raises(errdefs.NotFound):
            await store.abort("manifest")

    face.run(body)
