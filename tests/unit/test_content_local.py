"""The local content store on disk: verification, locks, resume, atomic commits."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from pycontainerd import content, errdefs
from pycontainerd.content.local import LocalStore, MemoryLabelStore

pytestmark = pytest.mark.unit

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "io.containerd.content.v1.content"


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore(root, labels=MemoryLabelStore())


async def write(store: LocalStore, ref: str, *parts: bytes, **commit: object) -> str:
    w = await store.writer(ref)
    for p in parts:
        await w.write(p)
    return await w.commit(**commit)  # type: ignore[arg-type]


def test_commit_lands_the_blob_under_its_digest_read_only(store: LocalStore, root: Path) -> None:
    data = b"hello world"
    dgst = run(write(store, "r", b"hello ", b"world", size=len(data), expected=sha(data)))
    assert dgst == sha(data)
    path = root / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data
    assert os.stat(path).st_mode & 0o222 == 0
    assert not list((root / "ingest").iterdir())


def test_commit_rejects_digest_mismatch_and_nothing_becomes_visible(
    store: LocalStore, root: Path
) -> None:
    async def scenario() -> None:
        w = await store.writer("bad")
        await w.write(b"hello")
        with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
            await w.commit(5, sha(b"other"))
        assert [i async for i in store.walk()] == []
        assert blob_files(root) == []
        # The ingest stays, as in containerd: resumable or abortable.
        assert (await store.status("bad")).offset == 5
        await store.abort("bad")
        with pytest.raises(errdefs.NotFound):
            await store.status("bad")

    run(scenario())


def test_commit_rejects_size_mismatch(store: LocalStore, root: Path) -> None:
    async def scenario() -> None:
        w = await store.writer("short")
        await w.write(b"abc")
        with pytest.raises(
            errdefs.FailedPrecondition, match="unexpected commit size 3, expected 4"
        ):
            await w.commit(4)
        assert blob_files(root) == []

    run(scenario())


def test_second_writer_on_a_held_ref_is_unavailable(store: LocalStore) -> None:
    async def scenario() -> None:
        w = await store.writer("held")
        with pytest.raises(errdefs.Unavailable, match=r"ref held locked for"):
            await store.writer("held")
        await w.close()
        w2 = await store.writer("held")  # released by close
        await w2.close()

    run(scenario())


def test_writers_past_the_open_ingest_cap_are_resource_exhausted(root: Path) -> None:
    store = LocalStore(root, max_open_ingests=3)

    async def scenario() -> None:
        open_writers = [await store.writer(f"r{n}") for n in range(3)]
        with pytest.raises(errdefs.ResourceExhausted, match="3 ingests are open"):
            await store.writer("one-more")
        await open_writers.pop().close()
        open_writers.append(await store.writer("one-more"))  # a slot came free
        for w in open_writers:
            await w.close()

    run(scenario())


def test_lock_is_released_when_commit_fails(store: LocalStore) -> None:
    async def scenario() -> None:
        w = await store.writer("r")
        await w.write(b"x")
        with pytest.raises(errdefs.FailedPrecondition):
            await w.commit(2)
        w2 = await store.writer("r")
        assert (await w2.status()).offset == 1
        await w2.close()

    run(scenario())


def test_closed_ingest_resumes_from_its_offset(store: LocalStore) -> None:
    async def scenario() -> None:
        w = await store.writer("resume", total=10)
        await w.write(b"01234")
        await w.close()
        st = await store.status("resume")
        assert (st.ref, st.offset, st.total) == ("resume", 5, 10)
        w = await store.writer("resume", total=10)
        assert (await w.status()).offset == 5
        await w.write(b"56789")
        assert await w.commit(10, sha(b"0123456789")) == sha(b"0123456789")

    run(scenario())


def test_ingest_resumes_after_restart_by_rehashing_its_data(root: Path) -> None:
    data = os.urandom(3 << 20)

    async def first() -> None:
        w = await LocalStore(root).writer("restart", total=len(data))
        await w.write(data[: 2 << 20])
        # No close: the daemon dies here; the bytes are in the file.

    async def second() -> None:
        store = LocalStore(root)
        assert (await store.status("restart")).offset == 2 << 20
        w = await store.writer("restart", total=len(data))
        assert w.digest == sha(data[: 2 << 20])
        await w.write(data[2 << 20 :])
        assert await w.commit(len(data), sha(data)) == sha(data)
        assert await content.read_blob(store, sha(data)) == data

    run(first())
    run(second())


def test_committing_an_existing_blob_is_already_exists_and_drops_the_ingest(
    store: LocalStore, root: Path
) -> None:
    async def scenario() -> None:
        await write(store, "one", b"same")
        with pytest.raises(errdefs.AlreadyExists):
            await write(store, "two", b"same")
        assert await store.list_statuses() == []
        with pytest.raises(errdefs.AlreadyExists):
            await store.writer("three", expected=sha(b"same"))

    run(scenario())


def test_truncate_restarts_the_ingest(store: LocalStore) -> None:
    async def scenario() -> None:
        w = await store.writer("t")
        await w.write(b"garbage")
        await w.truncate(0)
        await w.write(b"good")
        assert await w.commit(4, sha(b"good")) == sha(b"good")

    run(scenario())


def test_reads_at_offsets_and_in_chunks(store: LocalStore) -> None:
    data = bytes(range(256)) * 10000

    async def scenario() -> None:
        dgst = await write(store, "r", data)
        reader = await store.reader_at(dgst)
        assert reader.size == len(data)
        assert await reader.read_at(1000, 10) == data[1000:1010]
        assert await reader.read_at(len(data) - 3, 10) == data[-3:]
        assert await reader.read_at(len(data), 10) == b""
        await reader.close()
        chunks = [c async for c in content.read_chunks(store, dgst, offset=5, size=100_000)]
        assert b"".join(chunks) == data[5:100_005]
        assert max(len(c) for c in chunks) <= content.READ_CHUNK

    run(scenario())


def test_a_small_blob_is_read_whole_as_it_opens_and_served_from_memory(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest-sized blob costs one trip to a thread (the open), not two;
    a large one is read where it lies, a piece at a time."""
    from pycontainerd.content import local

    small = b"m" * local.SMALL_BLOB
    large = b"L" * (local.SMALL_BLOB + 1)

    async def scenario() -> None:
        small_dgst = await write(store, "s", small)
        large_dgst = await write(store, "l", large)
        preads: list[int] = []
        real = os.pread
        monkeypatch.setattr(
            local.os, "pread", lambda fd, n, off: preads.append(n) or real(fd, n, off)
        )
        reader = await store.reader_at(small_dgst)
        assert preads == [len(small)]
        assert await reader.read_at(10, 5) == small[10:15]
        assert await reader.read_at(0, len(small) + 10) == small
        assert preads == [len(small)]
        await reader.close()
        with pytest.raises(errdefs.FailedPrecondition):
            await reader.read_at(0, 1)
        preads.clear()
        reader = await store.reader_at(large_dgst)
        assert preads == []
        assert await reader.read_at(3, 4) == large[3:7]
        assert preads == [4]
        await reader.close()

    run(scenario())


@pytest.mark.parametrize(
    "bad",
    ["sha256:../../../etc/passwd", "sha256:" + "A" * 64, "md5:abc", "sha256", "../x", "sha256:"],
)
def test_invalid_digests_are_rejected_before_touching_paths(store: LocalStore, bad: str) -> None:
    async def scenario() -> None:
        for op in (store.info, store.reader_at, store.delete):
            with pytest.raises(errdefs.InvalidArgument):
                await op(bad)
        with pytest.raises(errdefs.InvalidArgument):
            await store.writer("r", expected=bad)

    run(scenario())


def test_ingest_directory_is_a_hash_of_the_ref_never_the_ref(store: LocalStore, root: Path) -> None:
    ref = "../../escape/attempt"

    async def scenario() -> None:
        w = await store.writer(ref)
        await w.write(b"x")
        await w.close()

    run(scenario())
    (entry,) = list((root / "ingest").iterdir())
    assert entry.name == hashlib.sha256(ref.encode()).hexdigest()
    assert (entry / "ref").read_text() == ref
    assert not (root.parent / "escape").exists()


def test_list_statuses_filters_on_ref(store: LocalStore) -> None:
    async def scenario() -> None:
        for ref in ("layer-1", "layer-2", "config"):
            w = await store.writer(ref)
            await w.write(b"x")
            await w.close()
        assert sorted(s.ref for s in await store.list_statuses()) == [
            "config",
            "layer-1",
            "layer-2",
        ]
        assert sorted(s.ref for s in await store.list_statuses("ref~=^layer")) == [
            "layer-1",
            "layer-2",
        ]
        assert [s.ref for s in await store.list_statuses("ref==config")] == ["config"]
        with pytest.raises(errdefs.InvalidArgument):
            await store.list_statuses("ref==")

    run(scenario())


def test_abort_of_an_unknown_ref_is_not_found(store: LocalStore) -> None:
    with pytest.raises(errdefs.NotFound, match='ingest ref "nope"'):
        run(store.abort("nope"))


def test_no_partial_blob_is_visible_while_writing(store: LocalStore, root: Path) -> None:
    async def scenario() -> None:
        w = await store.writer("big")
        for _ in range(4):
            await w.write(os.urandom(1 << 20))
            assert blob_files(root) == []
            assert [i async for i in store.walk()] == []
        await w.commit()
        assert len(blob_files(root)) == 1

    run(scenario())


def test_update_needs_a_label_store(root: Path) -> None:
    async def scenario() -> None:
        store = LocalStore(root)
        dgst = await write(store, "r", b"x")
        with pytest.raises(errdefs.FailedPrecondition, match="immutable"):
            await store.update(content.Info(dgst, 1, labels={"a": "b"}))

    run(scenario())


def test_close_waits_for_a_write_whose_caller_was_cancelled(store: LocalStore) -> None:
    async def scenario() -> None:
        w = await store.writer("cancel")
        task = asyncio.create_task(w.write(b"y" * (8 << 20)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await w.close()
        st = await store.status("cancel")
        assert st.offset in (0, 8 << 20)  # never a torn state behind the writer's back
        w2 = await store.writer("cancel")
        assert w2.digest == sha(b"y" * st.offset)
        await w2.close()

    run(scenario())
