"""The applier on a real content store (metadata over a local store) and plain
directories: what lands where, what it returns, and how bad input fails."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
import zstandard

from pycontainerd import content, errdefs
from pycontainerd import mount as mountlib
from pycontainerd.content.local import LocalStore
from pycontainerd.diff import MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD
from pycontainerd.diff.apply import FileSystemApplier
from pycontainerd.images import Descriptor
from pycontainerd.metadata import Database
from pycontainerd.metadata.content import ContentStore
from pycontainerd.mount import Mount
from pycontainerd.namespaces import namespace

pytestmark = pytest.mark.unit

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        with namespace("test"):
            return await aw

    return asyncio.run(wrapped())


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(entries: Sequence[tuple[str, bytes | None]]) -> bytes:
    """A tar: (name, data) is a file, (name/, None) a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name.rstrip("/"))
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


LAYER = make_layer([("etc/", None), ("etc/hello", b"hello\n"), ("bin/", None)])


class Env:
    def __init__(self, base: Path) -> None:
        self.db = Database(base / "meta.db")
        self.backend = LocalStore(base / "content")
        self.store = ContentStore(self.db, self.backend)
        self.applier = FileSystemApplier(self.store)
        self.root = base / "rootfs"
        self.root.mkdir()

    def put(self, data: bytes) -> str:
        async def go() -> str:
            await content.write_blob(self.store, f"ref-{sha(data)}", data, size=len(data))
            return sha(data)

        return run(go())

    def bind(self, *extra: str) -> list[Mount]:
        return [Mount("bind", str(self.root), ("rbind", *extra))]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.db.close()


@pytest.mark.parametrize(
    ("media_type", "encode"),
    [
        (MEDIA_TYPE_LAYER_GZIP, gzip.compress),
        (MEDIA_TYPE_LAYER_ZSTD, lambda b: zstandard.ZstdCompressor().compress(b)),
        (MEDIA_TYPE_LAYER, lambda b: b),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", gzip.compress),
        # Docker's plain type often carries gzip bytes: the bytes decide.
        ("application/vnd.docker.image.rootfs.diff.tar", gzip.compress),
    ],
)
def test_apply_returns_the_uncompressed_descriptor(
    env: Env, media_type: str, encode: Callable[[bytes], bytes]
) -> None:
    blob = encode(LAYER)
    dgst = env.put(blob)
    applied = run(env.applier.apply(Descriptor(media_type, dgst, len(blob)), env.bind("rw")))
    assert applied == Descriptor(MEDIA_TYPE_LAYER, sha(LAYER), len(LAYER))
    assert (env.root / "etc" / "hello").read_bytes() == b"hello\n"
    assert (env.root / "bin").is_dir()


def test_apply_into_a_bind_mount_removes_whiteouts(env: Env) -> None:
    (env.root / "old").write_text("x")
    (env.root / "keep").write_text("y")
    layer = make_layer([(".wh.old", b"")])
    dgst = env.put(layer)
    run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, len(layer)), env.bind()))
    assert sorted(p.name for p in env.root.iterdir()) == ["keep"]


def test_apply_into_an_overlay_upper_writes_overlay_whiteouts(env: Env, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("overlay whiteouts are character devices: needs root")
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "gone").write_text("x")
    layer = make_layer([(".wh.gone", b""), ("new", b"n")])
    dgst = env.put(layer)
    overlay = Mount(
        "overlay", "overlay", (f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}")
    )
    run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, len(layer)), [overlay]))
    st = os.lstat(upper / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert (upper / "new").read_bytes() == b"n"
    assert (lower / "gone").exists()  # lowers are never written


def test_apply_mounts_anything_else_on_a_temp_dir(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[Mount]] = []

    @contextlib.contextmanager
    def fake_temp_mount(mounts: Sequence[Mount], **_: object) -> Iterator[Path]:
        seen.append(list(mounts))
        yield env.root

    monkeypatch.setattr(mountlib, "temp_mount", fake_temp_mount)
    dgst = env.put(LAYER)
    mounts = [*env.bind(), Mount("tmpfs", "tmpfs", (), target="tmp")]
    run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, len(LAYER)), mounts))
    assert seen == [mounts]
    assert (env.root / "etc" / "hello").exists()


def test_apply_unsupported_media_type_is_containerds_error(env: Env) -> None:
    dgst = env.put(LAYER)
    for media_type in ("application/x-foo", MEDIA_TYPE_LAYER + "+encrypted"):
        with pytest.raises(errdefs.Unknown) as info:
            run(env.applier.apply(Descriptor(media_type, dgst, len(LAYER)), env.bind()))
        assert info.value.message == (
            f"failed to get stream processor for {media_type}: no processor for media-type"
        )


def test_apply_missing_blob_is_not_found(env: Env) -> None:
    missing = sha(b"nothing")
    with pytest.raises(errdefs.NotFound, match="failed to get reader from content store"):
        run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, missing, 7), env.bind()))


def test_apply_blob_of_another_namespace_is_not_found(env: Env) -> None:
    dgst = env.put(LAYER)

    async def go() -> None:
        with namespace("other"):
            await env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, len(LAYER)), env.bind())

    with pytest.raises(errdefs.NotFound):
        asyncio.run(go())


def test_apply_rejects_a_size_that_does_not_match_the_blob(env: Env) -> None:
    dgst = env.put(LAYER)
    with pytest.raises(errdefs.InvalidArgument, match="descriptor size 5"):
        run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, 5), env.bind()))
    assert not (env.root / "etc").exists()


def test_apply_rejects_a_blob_damaged_on_disk(env: Env) -> None:
    dgst = env.put(LAYER)
    path = env.backend.blob_path(dgst)
    os.chmod(path, 0o644)
    damaged = bytearray(LAYER)
    damaged[-1] = 1  # in the tar's zero padding: the layer still applies
    path.write_bytes(bytes(damaged))
    with pytest.raises(errdefs.FailedPrecondition, match="does not match its descriptor"):
        run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, len(LAYER)), env.bind()))


def test_apply_refuses_a_read_only_bind_mount(env: Env) -> None:
    dgst = env.put(LAYER)
    with pytest.raises(errdefs.InvalidArgument, match="read-only bind mount"):
        run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, len(LAYER)), env.bind("ro")))
    assert list(env.root.iterdir()) == []


def test_apply_needs_mounts(env: Env) -> None:
    dgst = env.put(LAYER)
    with pytest.raises(errdefs.InvalidArgument, match="no mounts"):
        run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, len(LAYER)), []))


def test_apply_corrupt_gzip_is_a_typed_error(env: Env) -> None:
    blob = gzip.compress(LAYER)
    blob = blob[:20] + bytes(b ^ 0xFF for b in blob[20:40]) + blob[40:]
    dgst = env.put(blob)
    with pytest.raises(errdefs.ContainerdError):
        run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER_GZIP, dgst, len(blob)), env.bind()))


def test_apply_reads_through_the_provider_without_a_local_file(env: Env) -> None:
    """A store with no blob files (a proxy) is read with read_at from the worker."""
    reads: list[int] = []

    class RemoteReader:
        def __init__(self, inner: content.ReaderAt) -> None:
            self._inner = inner
            self.size = inner.size

        async def read_at(self, offset: int, size: int) -> bytes:
            reads.append(offset)
            return await self._inner.read_at(offset, size)

        async def close(self) -> None:
            await self._inner.close()

    class Proxy:
        def __init__(self, inner: ContentStore) -> None:
            self._inner = inner

        async def reader_at(self, digest: str) -> content.ReaderAt:
            return RemoteReader(await self._inner.reader_at(digest))

    blob = gzip.compress(LAYER)
    dgst = env.put(blob)
    applier = FileSystemApplier(Proxy(env.store))
    applied = run(applier.apply(Descriptor(MEDIA_TYPE_LAYER_GZIP, dgst, len(blob)), env.bind()))
    assert applied.digest == sha(LAYER)
    assert (env.root / "etc" / "hello").exists()
    assert reads and reads[0] == 0


def test_the_namespaced_store_hands_out_the_local_blob_file(env: Env) -> None:
    """The applier's fast path: metadata passes the local store's reader through,
    and that reader opens the blob it holds as a file of its own."""
    dgst = env.put(LAYER)

    async def go() -> tuple[bytes, bytes]:
        reader = await env.store.reader_at(dgst)
        try:
            assert isinstance(reader, content.FileReaderAt)
            first, second = reader.open_file(), reader.open_file()
            with first, second:
                head = first.read(10)
                return head + first.read(), second.read()
        finally:
            await reader.close()

    whole, again = run(go())
    assert whole == again == LAYER


def test_apply_refuses_relative_paths(env: Env) -> None:
    dgst = env.put(LAYER)
    desc = Descriptor(MEDIA_TYPE_LAYER, dgst, len(LAYER))
    with pytest.raises(errdefs.InvalidArgument, match="not an absolute path"):
        run(env.applier.apply(desc, [Mount("bind", "rootfs", ("rbind",))]))
    overlay = Mount("overlay", "overlay", ("upperdir=up", "lowerdir=/a:/b", "workdir=/w"))
    with pytest.raises(errdefs.InvalidArgument, match="not an absolute path"):
        run(env.applier.apply(desc, [overlay]))


def test_apply_onto_a_missing_upper_dir_is_not_found(env: Env, tmp_path: Path) -> None:
    dgst = env.put(LAYER)
    upper = tmp_path / "absent"
    overlay = Mount("overlay", "overlay", (f"upperdir={upper}", f"lowerdir={tmp_path}"))
    with pytest.raises(errdefs.NotFound, match="absent"):
        run(env.applier.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, len(LAYER)), [overlay]))


def test_a_cancelled_apply_stops_its_worker_before_returning(env: Env) -> None:
    blob = gzip.compress(LAYER)
    dgst = env.put(blob)
    reads: list[int] = []

    class SlowReader:
        def __init__(self, inner: content.ReaderAt) -> None:
            self._inner = inner
            self.size = inner.size

        async def read_at(self, offset: int, size: int) -> bytes:
            reads.append(offset)
            await asyncio.sleep(0.05)
            return await self._inner.read_at(offset, min(size, 16))

        async def close(self) -> None:
            await self._inner.close()

    class Proxy:
        async def reader_at(self, digest: str) -> content.ReaderAt:
            return SlowReader(await env.store.reader_at(digest))

    async def go() -> None:
        task = asyncio.ensure_future(
            FileSystemApplier(Proxy()).apply(
                Descriptor(MEDIA_TYPE_LAYER_GZIP, dgst, len(blob)), env.bind()
            )
        )
        while not reads:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen = len(reads)
        await asyncio.sleep(0.2)
        assert len(reads) == seen  # the worker is gone: nothing reads any more

    with namespace("test"):
        asyncio.run(go())
