"""A layer applied while it downloads (the transfer service's stream sink),
with its placement faked: a bind mount of a temporary directory."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount
from pycontainerd.services import _stream_unpack as su

pytestmark = pytest.mark.unit

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


class _Place:
    def __init__(self, root: Path, diff_id: str) -> None:
        self.root = root
        self.diff_id = diff_id
        self.calls: list[str] = []

    def placement(self) -> su.Placement:
        async def prepare() -> tuple[str, list[Mount]]:
            self.calls.append("prepare")
            return "extract-1 chain", [
                Mount(type="bind", source=str(self.root), options=("rbind",))
            ]

        async def commit(key: str) -> bool:
            self.calls.append(f"commit {key}")
            return True

        async def remove(key: str) -> None:
            self.calls.append(f"remove {key}")

        return su.Placement("chain", self.diff_id, prepare, commit, remove)


async def _feed(sink: su.StreamSink, blob: bytes, piece: int = 7000) -> None:
    for start in range(0, len(blob), piece):
        await sink.write(blob[start : start + piece])


def test_a_placed_layer_is_applied_as_it_arrives_then_committed(tmp_path: Path) -> None:
    blob, diff_id = _layer({"etc/hello": b"hi\n" * 50_000, "bin/x": b"\x7fELF"})
    desc = Descriptor(LAYER, "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
    place = _Place(tmp_path, diff_id)

    async def scenario() -> bool:
        async def decide() -> su.Placement:
            return place.placement()

        sink = su.StreamSink(desc, decide)
        await _feed(sink, blob)
        assert sink.streaming
        await sink.close()
        return await sink.result

    assert asyncio.run(scenario()) is True
    assert (tmp_path / "etc/hello").read_bytes() == b"hi\n" * 50_000
    assert place.calls == ["prepare", "commit extract-1 chain"]


def test_a_layer_with_no_place_lets_its_bytes_pass(tmp_path: Path) -> None:
    blob, _ = _layer({"a": b"a"})
    desc = Descriptor(LAYER, "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))

    async def scenario() -> bool:
        async def decide() -> None:
            return None

        sink = su.StreamSink(desc, decide)
        await _feed(sink, blob)
        await sink.close()
        assert not sink.streaming
        return sink.result.cancelled()

    assert asyncio.run(scenario())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("size_off", "diff_off", "message"),
    [(1, False, "does not match its descriptor"), (0, True, "wrong diff id")],
)
def test_bytes_that_are_not_the_layer_are_refused_and_the_snapshot_removed(
    tmp_path: Path, size_off: int, diff_off: bool, message: str
) -> None:
    """The blob's digest is the fetcher's to check (see the module); the
    sink refuses a byte count that is not the descriptor's, or a diff ID
    that is not the config's."""
    blob, diff_id = _layer({"a": b"a" * 1000})
    desc = Descriptor(LAYER, "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob) + size_off)
    place = _Place(tmp_path, "sha256:" + "0" * 64 if diff_off else diff_id)

    async def scenario() -> None:
        async def decide() -> su.Placement:
            return place.placement()

        sink = su.StreamSink(desc, decide)
        await _feed(sink, blob)
        with pytest.raises(errdefs.FailedPrecondition, match=message):
            await sink.close()
        with pytest.raises(errdefs.FailedPrecondition):
            await sink.result

    asyncio.run(scenario())
    assert place.calls == ["prepare", "remove extract-1 chain"]


def test_an_aborted_download_stops_the_apply_and_removes_the_snapshot(tmp_path: Path) -> None:
    blob, diff_id = _layer({"big": bytes(range(256)) * 20_000})
    desc = Descriptor(LAYER, "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
    place = _Place(tmp_path, diff_id)

    async def scenario() -> None:
        async def decide() -> su.Placement:
            return place.placement()

        sink = su.StreamSink(desc, decide)
        await sink.write(blob[: len(blob) // 2])
        await sink.abort(errdefs.Unavailable("connection lost"))
        with pytest.raises(errdefs.Unavailable):
            await sink.result

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert place.calls == ["prepare", "remove extract-1 chain"]
