"""The tar reader accepts what Go's reader accepts in layers and refuses the rest."""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc

import pytest

from pycontainerd import errdefs
from pycontainerd.archive import tar
from tests.support import tarbombs

pytestmark = pytest.mark.unit


def _tar(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def _read_all(data: bytes) -> list[tuple[tar.Header, bytes]]:
    reader = tar.TarReader(io.BytesIO(data))
    out = []
    while (hdr := reader.next()) is not None:
        out.append((hdr, reader.read_data()))
    return out


def test_reads_names_modes_owners_and_data() -> None:
    data = _tar(_file("a/b.txt", b"hello", mode=0o4755, uid=7, gid=8, mtime=1234))
    [(hdr, body)] = _read_all(data)
    assert (hdr.name, hdr.mode, hdr.uid, hdr.gid, hdr.mtime_ns, body) == (
        "a/b.txt",
        0o4755,
        7,
        8,
        1234 * 10**9,
        b"hello",
    )


def test_pax_records_override_the_header() -> None:
    long = "d/" + "x" * 200
    info, body = _file(long, b"data", uid=3_000_000, gid=4_000_000)
    info.pax_headers = {"mtime": "1700000000.25", "SCHILY.xattr.user.k": "v\x00w"}
    [(hdr, data)] = _read_all(_tar((info, body)))
    assert hdr.name == long
    assert (hdr.uid, hdr.gid) == (3_000_000, 4_000_000)
    assert hdr.mtime_ns == 1_700_000_000_250_000_000
    assert hdr.xattrs == {"user.k": b"v\x00w"}
    assert data == b"data"


def test_gnu_long_names_and_links() -> None:
    info, _ = _file("l" * 150, type=tarfile.SYMTYPE, linkname="t" * 150)
    [(hdr, _)] = _read_all(_tar((info, b""), fmt=tarfile.GNU_FORMAT))
    assert (hdr.name, hdr.linkname, hdr.typeflag) == ("l" * 150, "t" * 150, tar.TYPE_SYMLINK)


def test_ustar_prefix_field_is_joined() -> None:
    name = "p" * 120 + "/" + "n" * 90
    [(hdr, _)] = _read_all(_tar(_file(name, b"x"), fmt=tarfile.USTAR_FORMAT))
    assert hdr.name == name


def test_base256_numbers() -> None:
    info, body = _file("big", b"", uid=0o7777777 + 10)
    [(hdr, _)] = _read_all(_tar((info, body), fmt=tarfile.GNU_FORMAT))
    assert hdr.uid == 0o7777777 + 10


def test_writer_round_trips_through_tarfile_and_reader() -> None:
    out = io.BytesIO()
    writer = tar.TarWriter(out)
    entries = [
        tar.Header(name="dir/", typeflag=tar.TYPE_DIR, mode=0o755),
        tar.Header(name="dir/" + "f" * 150, size=3, mode=0o600, uid=5, gid=6, mtime_ns=10**9),
        tar.Header(name="é", size=0, xattrs={"security.capability": b"\x01\x02"}),
        tar.Header(name="p" * 120 + "/" + "q" * 50, size=0),
        tar.Header(name="ln", typeflag=tar.TYPE_SYMLINK, linkname="t" * 200),
        tar.Header(name="dev", typeflag=tar.TYPE_CHAR, devmajor=1, devminor=3),
        tar.Header(name="huge-uid", uid=1 << 30),
    ]
    for hdr in entries:
        writer.write_header(hdr)
        if hdr.size:
            writer.write(b"abc")
            writer.pad(3)
    writer.close()
    raw = out.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        names = [m.name for m in tf]
    assert names == [e.name.rstrip("/") for e in entries]
    back = [h for h, _ in _read_all(raw)]
    assert [(h.name, h.linkname, h.uid, h.xattrs) for h in back] == [
        (e.name, e.linkname, e.uid, e.xattrs) for e in entries
    ]
    assert (back[5].devmajor, back[5].devminor) == (1, 3)


def test_stream_ending_on_a_block_boundary_is_the_end() -> None:
    data = _tar(_file("a", b"1"))
    assert len(_read_all(data[:1024])) == 1


@pytest.mark.parametrize("cut", [100, 600, 1030])
def test_truncated_archives_are_rejected(cut: int) -> None:
    data = _tar(_file("a", b"x" * 600))
    with pytest.raises(errdefs.InvalidArgument, match="unexpected end"):
        _read_all(data[:cut])


def test_bad_checksum_is_rejected() -> None:
    data = bytearray(_tar(_file("a", b"1")))
    data[0] ^= 1
    with pytest.raises(errdefs.InvalidArgument, match="checksum"):
        _read_all(bytes(data))


def test_checksums_of_headers_full_of_high_bytes_are_exact() -> None:
    """The byte sum is taken in pieces short enough that no modulus wraps:
    names of 0xff bytes (GNU format keeps them raw) sum to the most a header can."""
    name = b"\xff" * 99
    info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
    info.linkname = info.name
    info.type = tarfile.SYMTYPE
    data = _tar((info, b""), fmt=tarfile.GNU_FORMAT)
    [(hdr, _)] = _read_all(data)
    assert os.fsencode(hdr.name) == name and os.fsencode(hdr.linkname) == name
    for at in (0, 200, 157, 400, 511):  # each piece of the sum, the padding too
        broken = bytearray(data)
        broken[at] ^= 0x40
        with pytest.raises(errdefs.InvalidArgument, match="checksum"):
            _read_all(bytes(broken))


def test_zero_block_then_data_is_rejected() -> None:
    data = bytes(512) + _tar(_file("a", b"1"))
    with pytest.raises(errdefs.InvalidArgument, match="zero block"):
        _read_all(data)


def test_oversized_pax_record_is_rejected() -> None:
    info, body = _file("a")
    info.pax_headers = {"comment": "x" * (tar.MAX_META_RECORD + 1)}
    with pytest.raises(errdefs.InvalidArgument, match="limit"):
        _read_all(_tar((info, body)))


def test_malformed_pax_record_is_rejected() -> None:
    info, body = _file("a")
    info.pax_headers = {"uid": "12x"}
    raw = bytearray(_tar((info, body)))
    with pytest.raises(errdefs.InvalidArgument, match="PAX uid"):
        _read_all(bytes(raw))


def test_sparse_files_are_rejected() -> None:
    info, body = _file("a")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
    with pytest.raises(errdefs.InvalidArgument, match="sparse"):
        _read_all(_tar((info, body)))


def test_unknown_entry_types_are_rejected() -> None:
    info, body = _file("a", type=b"V")
    with pytest.raises(errdefs.InvalidArgument, match="unsupported entry type"):
        _read_all(_tar((info, body), fmt=tarfile.GNU_FORMAT))


def test_malformed_octal_is_rejected() -> None:
    raw = bytearray(_tar(_file("a", b"1"), fmt=tarfile.USTAR_FORMAT))
    raw[108:116] = b"12_4567\x00"
    raw[148:156] = b"        "
    raw[148:156] = b"%06o\x00 " % sum(raw[:512])
    with pytest.raises(errdefs.InvalidArgument, match="uid"):
        _read_all(bytes(raw))


def test_header_only_types_carry_no_data() -> None:
    """Go ignores the size field of a directory; a following header is not data."""
    raw = bytearray(
        _tar(_file("d", type=tarfile.DIRTYPE), _file("f", b"z"), fmt=tarfile.USTAR_FORMAT)
    )
    raw[124:136] = b"%011o\x00" % 512
    raw[148:156] = b"        "
    raw[148:156] = b"%06o\x00 " % sum(raw[:512])
    assert [h.name for h, _ in _read_all(bytes(raw))] == ["d/", "f"]


def test_consumed_counts_every_byte() -> None:
    data = _tar(_file("a", b"x" * 1000)) + bytes(4096)
    reader = tar.TarReader(io.BytesIO(data))
    while reader.next() is not None:
        pass
    reader.drain()
    assert reader.consumed == len(data)


def test_global_pax_headers_are_skipped() -> None:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"x": "y"}
    ) as tf:
        info = tarfile.TarInfo("a")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"1"))
    assert [(h.name, d) for h, d in _read_all(buf.getvalue())] == [("a", b"1")]


def test_old_style_regular_type_with_slash_is_a_directory() -> None:
    raw = bytearray(_tar(_file("d/", b""), _file("f", b"z"), fmt=tarfile.USTAR_FORMAT))
    for at in (0, 512):
        raw[at + 156] = 0
        raw[at + 148 : at + 156] = b"        "
        raw[at + 148 : at + 156] = b"%06o\x00 " % sum(raw[at : at + 512])
    hdrs = [h for h, _ in _read_all(bytes(raw))]
    assert [(h.name, h.typeflag) for h in hdrs] == [("d/", tar.TYPE_DIR), ("f", tar.TYPE_REG)]


def test_consecutive_pax_headers_replace_each_other_and_memory_stays_bounded() -> None:
    # 150 headers of 1 MiB with distinct keys: merged, they held 150 MiB.
    reader = tar.TarReader(tarbombs.ChunkStream(tarbombs.pax_bomb(150, 1 << 20)))
    tracemalloc.start()
    try:
        hdr = reader.next()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hdr is not None and list(hdr.xattrs) == ["user.k149"]
    # The bound counts the generator's own 1 MiB chunks as well as the reader.
    assert peak < 16 << 20, f"reader held {peak >> 20} MiB for one entry"


def test_pax_header_with_too_many_records_is_refused() -> None:
    records = {f"SCHILY.xattr.user.k{n}": "v" for n in range(tar.MAX_PAX_RECORDS + 1)}
    data = tarbombs.extended_header(records) + _tar(_file("f", b"1"))
    with pytest.raises(errdefs.InvalidArgument, match="more than 4096 records"):
        _read_all(data)


@pytest.mark.parametrize("key", ["size", "uid", "gid", "mtime", "atime"])
@pytest.mark.parametrize("digits", [20, 5000])
def test_pax_numbers_beyond_int64_are_invalid_argument(key: str, digits: int) -> None:
    # 5000 digits once raised ValueError (Python's integer-string limit),
    # which reached the client as Unknown.
    data = tarbombs.extended_header({key: "9" * digits}) + _tar(_file("f", b"1"))
    with pytest.raises(errdefs.InvalidArgument, match=f"malformed PAX {key}"):
        _read_all(data)


def test_pax_times_keep_nanoseconds_and_sign() -> None:
    data = tarbombs.extended_header({"mtime": "-1.5", "atime": "12.0000000019"})
    ((hdr, _),) = _read_all(data + _tar(_file("f", b"1")))
    assert (hdr.mtime_ns, hdr.atime_ns) == (-1_500_000_000, 12_000_000_001)
