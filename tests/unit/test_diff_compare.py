"""The walking comparer on a real content store, with mounting faked: what
blob it writes, with which labels, under which ref, and what a failure leaves."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
import zstandard

from pycontainerd import content, errdefs, leases
from pycontainerd import mount as mountlib
from pycontainerd.content.local import LocalStore
from pycontainerd.diff import (
    LABEL_UNCOMPRESSED,
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_ZSTD,
)
from pycontainerd.diff.walking import WalkingDiffer
from pycontainerd.metadata import Database, LeaseManager
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


class Env:
    def __init__(self, base: Path) -> None:
        self.db = Database(base / "meta.db")
        self.store = ContentStore(self.db, LocalStore(base / "content"))
        self.differ = WalkingDiffer(self.store)
        self.lower = base / "lower"
        self.upper = base / "upper"
        self.lower.mkdir()
        self.upper.mkdir()
        self.mounted: list[list[Mount]] = []

    def bind(self, path: Path) -> list[Mount]:
        return [Mount("bind", str(path), ("rbind", "rw"))]

    def read(self, dgst: str) -> bytes:
        return run(content.read_blob(self.store, dgst))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    e = Env(tmp_path)

    @contextlib.contextmanager
    def fake_temp_mount(mounts: Sequence[Mount], *, readonly: bool = False) -> Iterator[Path]:
        assert readonly, "a comparer must never mount a side writable"
        e.mounted.append(list(mounts))
        yield Path(mounts[0].source)

    monkeypatch.setattr(mountlib, "temp_mount", fake_temp_mount)
    try:
        yield e
    finally:
        e.db.close()


def names(tar: bytes) -> list[str]:
    return tarfile.open(fileobj=io.BytesIO(tar)).getnames()


def changed(env: Env) -> None:
    for side in (env.lower, env.upper):
        (side / "same").write_text("s")
        os.utime(side / "same", ns=(1_000_000_000, 1_000_000_000))
    (env.lower / "removed").write_text("r")
    (env.upper / "added").write_text("a")


def test_compare_writes_a_gzip_layer_by_default(env: Env) -> None:
    changed(env)
    desc = run(env.differ.compare(env.bind(env.lower), env.bind(env.upper), labels={"k": "v"}))
    assert desc.media_type == MEDIA_TYPE_LAYER_GZIP
    blob = env.read(desc.digest)
    assert desc.size == len(blob)
    tar = gzip.decompress(blob)
    assert sorted(names(tar)) == [".wh.removed", "added"]
    info = run(env.store.info(desc.digest))
    assert dict(info.labels) == {"k": "v", LABEL_UNCOMPRESSED: "sha256:" + _sha(tar)}
    assert env.mounted == [env.bind(env.lower), env.bind(env.upper)]


def test_compare_writes_plain_and_zstd_layers(env: Env) -> None:
    changed(env)
    plain = run(
        env.differ.compare(env.bind(env.lower), env.bind(env.upper), media_type=MEDIA_TYPE_LAYER)
    )
    tar = env.read(plain.digest)
    assert plain.media_type == MEDIA_TYPE_LAYER
    assert sorted(names(tar)) == [".wh.removed", "added"]
    # An uncompressed layer is its own diff ID: no label is added.
    assert LABEL_UNCOMPRESSED not in run(env.store.info(plain.digest)).labels
    zst = run(
        env.differ.compare(
            env.bind(env.lower), env.bind(env.upper), media_type=MEDIA_TYPE_LAYER_ZSTD
        )
    )
    assert zst.media_type == MEDIA_TYPE_LAYER_ZSTD
    assert zstandard.ZstdDecompressor().decompressobj().decompress(env.read(zst.digest)) == tar
    assert run(env.store.info(zst.digest)).labels[LABEL_UNCOMPRESSED] == plain.digest


def test_compare_rejects_other_media_types(env: Env) -> None:
    with pytest.raises(errdefs.NotImplemented, match="unsupported diff media type: text/plain"):
        run(env.differ.compare([], [], media_type="text/plain"))
    assert env.mounted == []


def test_compare_uses_the_given_ref_and_restarts_it(env: Env) -> None:
    async def go() -> str:
        w = await env.store.writer("my-ref")
        await w.write(b"stale bytes from an earlier attempt")
        await w.close()
        desc = await env.differ.compare(
            env.bind(env.lower), env.bind(env.upper), media_type=MEDIA_TYPE_LAYER, ref="my-ref"
        )
        with pytest.raises(errdefs.NotFound):
            await env.store.status("my-ref")  # committed: the ingest is gone
        return desc.digest

    (env.upper / "f").write_text("x")
    assert names(env.read(run(go()))) == ["f"]


def test_compare_attaches_the_blob_to_the_current_lease(env: Env, tmp_path: Path) -> None:
    manager = LeaseManager(env.db)

    async def go() -> tuple[str, list[leases.Resource]]:
        lease = await manager.create("l1")
        with leases.lease(lease.id):
            desc = await env.differ.compare(env.bind(env.lower), env.bind(env.upper))
        return desc.digest, manager.list_resources(lease.id)

    dgst, resources = run(go())
    assert leases.Resource(id=dgst, type="content") in resources


def test_compare_failure_aborts_its_random_ingest(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(lower: object, upper: object, out: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("pycontainerd.diff.walking.write_diff", broken)
    with pytest.raises(errdefs.Unknown, match="failed to write diff"):
        run(env.differ.compare(env.bind(env.lower), env.bind(env.upper)))
    assert run(env.store.list_statuses()) == []


def test_compare_of_equal_trees_is_the_empty_layer(env: Env) -> None:
    changed(env)
    desc = run(
        env.differ.compare(env.bind(env.upper), env.bind(env.upper), media_type=MEDIA_TYPE_LAYER)
    )
    # Two zero blocks, as containerd writes for no changes.
    assert env.read(desc.digest) == bytes(1024)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
