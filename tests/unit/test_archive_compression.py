"""Compression: detection by magic, fast streaming, containerd's media types."""

from __future__ import annotations

import gzip
import io

import pytest
import zstandard

from pycontainerd import errdefs
from pycontainerd.archive.compression import (
    Compression,
    compressor,
    decompress,
    detect,
    from_media_type,
)

pytestmark = pytest.mark.unit

DATA = bytes(range(256)) * 5000


def test_detect_by_magic() -> None:
    assert detect(gzip.compress(b"x")[:4]) is Compression.GZIP
    assert detect(zstandard.ZstdCompressor().compress(b"x")[:4]) is Compression.ZSTD
    assert detect(b"\x50\x2a\x4d\x18") is Compression.ZSTD  # a skippable frame
    assert detect(b"usta") is Compression.UNCOMPRESSED
    assert detect(b"") is Compression.UNCOMPRESSED


@pytest.mark.parametrize("given", [None, Compression.GZIP])
def test_multi_member_gzip_is_read_to_the_end(given: Compression | None) -> None:
    blob = gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])
    with decompress(io.BytesIO(blob), given) as r:
        assert r.read() == DATA


def test_multi_frame_zstd_is_read_to_the_end() -> None:
    c = zstandard.ZstdCompressor()
    with decompress(io.BytesIO(c.compress(DATA[:10]) + c.compress(DATA[10:]))) as r:
        assert r.read() == DATA


def test_uncompressed_passes_through_after_detection() -> None:
    with decompress(io.BytesIO(DATA)) as r:
        assert r.read(3) == DATA[:3]
        assert r.read() == DATA[3:]


def test_corrupt_gzip_is_invalid_argument() -> None:
    blob = bytearray(gzip.compress(DATA))
    blob[20:60] = bytes(40)
    with decompress(io.BytesIO(bytes(blob))) as r, pytest.raises(errdefs.InvalidArgument):
        r.read()


def test_truncated_gzip_is_invalid_argument() -> None:
    blob = gzip.compress(DATA)
    with (
        decompress(io.BytesIO(blob[: len(blob) // 2])) as r,
        pytest.raises(errdefs.InvalidArgument),
    ):
        r.read()


@pytest.mark.parametrize("kind", list(Compression))
def test_compressor_round_trips_and_leaves_out_open(kind: Compression) -> None:
    out = io.BytesIO()
    w = compressor(out, kind)
    w.write(DATA)
    w.close()
    assert not out.closed
    assert detect(out.getvalue()[:4]) is kind
    with decompress(io.BytesIO(out.getvalue())) as r:
        assert r.read() == DATA


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        ("application/vnd.oci.image.layer.v1.tar", Compression.UNCOMPRESSED),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Compression.GZIP),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Compression.ZSTD),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Compression.GZIP),
        ("application/vnd.docker.image.rootfs.diff.tar", Compression.UNCOMPRESSED),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", Compression.GZIP),
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Compression.GZIP),
        ("application/vnd.docker.image.rootfs.diff.tar.zstd", Compression.ZSTD),
    ],
)
def test_layer_media_types(media_type: str, expected: Compression) -> None:
    assert from_media_type(media_type) is expected


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        "application/vnd.oci.image.layer.v1.tar+bzip2",
        "text/plain",
    ],
)
def test_other_media_types_are_not_implemented(media_type: str) -> None:
    with pytest.raises(errdefs.NotImplemented, match="unsupported diff media type"):
        from_media_type(media_type)


@pytest.mark.parametrize("given", [None, *Compression])
def test_closing_the_reader_leaves_the_source_open(given: Compression | None) -> None:
    blob = {
        Compression.GZIP: gzip.compress(DATA),
        Compression.ZSTD: zstandard.ZstdCompressor().compress(DATA),
    }.get(given or Compression.GZIP, DATA)
    source = io.BytesIO(blob)
    with decompress(source, given) as r:
        assert r.read() == DATA
    assert not source.closed
