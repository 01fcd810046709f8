"""Fuzz the tar reader and the layer applier.

The reader gets random bytes, mutated archives and archives built header by
header from random fields (numbers in octal, base-256 and garbage; PAX
records with any key and any value; GNU long names; every type flag; good,
signed and bad checksums).  Whatever it reads, it either yields headers that
keep its promises or refuses the stream with ``InvalidArgument``; nothing
else may escape it, and the memory it holds is bounded by its limits, not
by the length of the stream.

The applier gets layers drawn from a small alphabet of names chosen to
collide (``..``, whiteouts, opaque markers, names of a sentinel directory
beside the root, absolute and climbing paths), with links pointing anywhere
in or out of the root.  Whatever it does, it refuses with a typed error or
succeeds, and the sentinel directory beside the root (and everything else
around the root) is exactly as it was.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import strategies as st

from pycontainerd import errdefs
from pycontainerd.archive import Whiteouts, apply_layer, tar, write_tree
from tests.fuzz import _harness

try:
    from pycontainerd import _openat
except ImportError:  # where it lived before it served more than archive/
    from pycontainerd.archive import _openat  # type: ignore[attr-defined,no-redef]

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

ROOT = os.geteuid() == 0
MiB = 1 << 20

# -- raw headers ------------------------------------------------------------------------


def _base256(width: int) -> Callable[[int], bytes]:
    def encode(value: int) -> bytes:
        raw = bytearray((value % (1 << (8 * width))).to_bytes(width, "big"))
        raw[0] |= 0x80
        return bytes(raw)

    return encode


def numeric(width: int, *, sane: bool = False) -> st.SearchStrategy[bytes]:
    """A tar number field as writers write it, and (unless ``sane``) as they should not."""
    octal_max = 8 ** (width - 1) - 1
    wellformed = st.integers(0, octal_max).map(lambda v: b"%0*o\x00" % (width - 1, v))
    if sane:
        return wellformed
    return st.one_of(
        wellformed,
        st.integers(0, 8**width - 1).map(lambda v: (b"%o" % v)[-width:].rjust(width, b" ")),
        st.integers(-(1 << (8 * width - 1)), (1 << (8 * width - 1)) - 1).map(_base256(width)),
        st.binary(min_size=width, max_size=width),
        st.sampled_from([bytes(width), b" " * width, b"0" * width, b"7" * width]),
    )


NAME_BYTES = st.one_of(
    st.sampled_from([b"a", b"a/b", b"./a", b"../a", b"/etc/x", b"d/", b".wh.a", b"", b"a\x00b"]),
    st.binary(max_size=120),
)
TYPEFLAGS = st.sampled_from(list(b"0123456\x00xgLKSVMNDA7"))
MAGICS = st.sampled_from([b"ustar\x0000", b"ustar  \x00", bytes(8), b"ustar\x00xx"]) | st.binary(
    min_size=8, max_size=8
)

PAX_KEY_NAMES = [
    "path",
    "linkpath",
    "size",
    "uid",
    "gid",
    "mtime",
    "atime",
    "ctime",
    "uname",
    "comment",
    "SCHILY.xattr.user.a",
    "SCHILY.xattr.security.capability",
    "SCHILY.xattr.",
    "GNU.sparse.size",
    "GNU.sparse.major",
    "LIBARCHIVE.xattr.user.a",
]
PAX_KEYS = st.one_of(
    st.sampled_from(PAX_KEY_NAMES), st.sampled_from(PAX_KEY_NAMES), st.text(max_size=20)
)
PAX_VALUES = st.one_of(
    st.integers(0, 1 << 70).map(lambda v: str(v).encode()),
    st.sampled_from([b"-1", b"1.5", b"-1.5", b"1.", b".5", b"", b"+1", b"0x10", b"1_0", b"\xff"]),
    # Longer than Python's int() takes from a string by default.
    st.integers(4000, 6000).map(lambda n: b"1" * n),
    st.integers(4000, 6000).map(lambda n: b"1" * n + b".5"),
    st.binary(max_size=40),
)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


GOOD_PAX_RECORD = st.builds(
    pax_record, PAX_KEYS.map(lambda k: k.encode("utf-8", "surrogateescape")), PAX_VALUES
)
BAD_PAX_RECORD = st.one_of(
    # Records whose length field lies, or that are not records at all.
    st.builds(
        lambda n, key, value: b"%d %s=%s\n" % (n, key, value),
        st.integers(-2, 60),
        st.binary(max_size=8),
        st.binary(max_size=8),
    ),
    st.binary(max_size=30),
)
PAX_RECORD = st.integers(0, 9).flatmap(lambda n: GOOD_PAX_RECORD if n else BAD_PAX_RECORD)


@st.composite
def header_block(draw: st.DrawFn, flag: int | None = None, size: int | None = None) -> bytes:
    """One 512-byte header.  Most are sane (octal numbers, ustar magic, right
    checksum), so that what follows them is read too; the rest are not."""
    sane = draw(st.integers(0, 3)) > 0
    buf = bytearray(tar.BLOCK)
    name = draw(NAME_BYTES)[:100]
    buf[0 : len(name)] = name
    buf[100:108] = draw(numeric(8, sane=sane))
    buf[108:116] = draw(numeric(8, sane=sane))
    buf[116:124] = draw(numeric(8, sane=sane))
    if size is None and sane:
        size = 0  # no data follows a lone header
    buf[124:136] = b"%011o\x00" % size if size is not None else draw(numeric(12))
    buf[136:148] = draw(numeric(12, sane=sane))
    if flag is None:
        flag = draw(st.sampled_from(list(b"0123456\x00")) if sane else TYPEFLAGS)
    buf[156] = flag
    link = draw(NAME_BYTES)[:100]
    buf[157 : 157 + len(link)] = link
    buf[257:265] = b"ustar\x0000" if sane else draw(MAGICS)
    buf[329:337] = draw(numeric(8, sane=sane))
    buf[337:345] = draw(numeric(8, sane=sane))
    if draw(st.booleans()):
        prefix = draw(NAME_BYTES)[:155]
        buf[345 : 345 + len(prefix)] = prefix
    if draw(st.integers(0, 9)) == 0:
        buf[508:512] = b"tar\x00"
    checksum = "unsigned"
    if not sane:
        checksum = draw(st.sampled_from(["unsigned"] * 4 + ["signed", "garbage", "off-by-one"]))
    buf[148:156] = b" " * 8
    if checksum == "unsigned":
        buf[148:156] = b"%06o\x00 " % sum(buf)
    elif checksum == "signed":
        signed = sum(b - 256 if b > 127 else b for b in buf)
        buf[148:156] = b"%06o\x00 " % (signed % 8**6)
    elif checksum == "off-by-one":
        buf[148:156] = b"%06o\x00 " % ((sum(buf) + 1) % 8**6)
    else:
        buf[148:156] = draw(st.binary(min_size=8, max_size=8))
    return bytes(buf)


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % tar.BLOCK)


@st.composite
def tar_entry(draw: st.DrawFn) -> bytes:
    flag = draw(st.sampled_from(list(b"0123456\x00")) | TYPEFLAGS)
    data = draw(st.binary(max_size=1100))
    block = draw(header_block(flag, len(data)))
    # The size of a link, device, FIFO or directory says nothing of data
    # (no data follows), as in Go's reader.
    return block if flag in b"123456" else block + _pad(data)


@st.composite
def tar_member(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["entry"] * 3 + ["pax"] * 3 + ["pax-global", "gnu-long", "raw"]))
    if kind == "pax" or kind == "pax-global":
        records = b"".join(draw(st.lists(PAX_RECORD, max_size=6)))
        flag = ord("x") if kind == "pax" else ord("g")
        meta = draw(header_block(flag, len(records))) + _pad(records)
        if kind == "pax" and draw(st.integers(0, 3)):  # with the entry it describes
            meta += draw(tar_entry())
        return meta
    if kind == "gnu-long":
        name = draw(st.binary(max_size=300))
        return draw(header_block(ord(draw(st.sampled_from("LK"))), len(name))) + _pad(name)
    if kind == "raw":
        return draw(header_block())
    return draw(tar_entry())


ENDINGS = st.sampled_from([bytes(1024), bytes(512), b"", bytes(1024) + b"\x01", bytes(512) + b"x"])


@st.composite
def tar_stream(draw: st.DrawFn) -> bytes:
    data = b"".join(draw(st.lists(tar_member(), max_size=6))) + draw(ENDINGS)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 3]))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if data and draw(st.integers(0, 7)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


# -- the reader -------------------------------------------------------------------------


def read_everything(stream: io.RawIOBase | io.BytesIO, *, read_small: bool = True) -> int:
    """Read every header and its data as the applier does; the entry count.

    Raises only what the reader may raise (``InvalidArgument``), after
    checking each header it yields against the reader's promises.
    """
    reader = tar.TarReader(stream)  # type: ignore[arg-type]
    entries = 0
    last = 0
    while (hdr := reader.next()) is not None:
        entries += 1
        assert isinstance(hdr.name, str) and isinstance(hdr.linkname, str)
        assert "\x00" not in hdr.name and "\x00" not in hdr.linkname, hdr
        assert hdr.typeflag in ("0", "1", "2", "3", "4", "5", "6"), hdr
        assert 0 <= hdr.uid <= 0xFFFFFFFE and 0 <= hdr.gid <= 0xFFFFFFFE, hdr
        assert hdr.size >= 0 and hdr.devmajor >= 0 and hdr.devminor >= 0, hdr
        assert reader.consumed >= last
        last = reader.consumed
        if read_small and hdr.typeflag == "0" and hdr.size <= 4096:
            assert len(reader.read_data()) == hdr.size
    reader.drain()
    return entries


def check_reader(data: bytes) -> None:
    tracemalloc.start()
    try:
        with contextlib.suppress(errdefs.InvalidArgument):
            read_everything(io.BytesIO(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The reader buffers at most a chunk or one metadata record past what it
    # was given; the input itself is read (and copied) at most a few times.
    assert peak < 8 * MiB + 4 * len(data), f"peak {peak} bytes for {len(data)} bytes of input"


def valid_layer() -> st.SearchStrategy[bytes]:
    return layers().map(lambda layer: layer.tar(Path("/nonexistent/root"), Path("/nonexistent")))


def test_tar_reader_random_and_mutated_bytes() -> None:
    def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
        raw = bytearray(data)
        for at, value in flips:
            if raw:
                raw[at % len(raw)] = value
        return bytes(raw[:cut] if cut is not None else raw)

    inputs = st.one_of(
        st.binary(max_size=4096),
        st.builds(
            mutate,
            valid_layer(),
            st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
            st.none() | st.integers(0, 1 << 16),
        ),
    )
    _harness.run("tar-reader-bytes", inputs, check_reader, short=150)


def test_tar_reader_crafted_headers() -> None:
    _harness.run("tar-reader-headers", tar_stream(), check_reader, short=250)


# -- memory over long streams -----------------------------------------------------------


class Repeating(io.RawIOBase):
    """A stream of ``count`` units, each a list of byte pieces ``make(i)``
    returns, then ``tail``.

    The big pieces are shared (made once, before measuring), the rest are a
    few hundred bytes: a stream of any length costs the generator almost
    nothing, so what the reader holds is what gets measured.
    """

    def __init__(self, make: Callable[[int], list[bytes]], count: int, tail: bytes) -> None:
        self._make, self._count, self._tail = make, count, tail
        self._i = 0
        self._pieces: list[bytes] = []
        self._view = memoryview(b"")
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._view:
            if self._pieces:
                self._view = memoryview(self._pieces.pop())
                continue
            if self._i < self._count:
                self._pieces = self._make(self._i)[::-1]
            elif self._i == self._count:
                self._pieces = [self._tail]
            else:
                return 0
            self._i += 1
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        self.produced += n
        return n


def _entry(name: bytes, typeflag: bytes, size: int) -> bytes:
    hdr = tar.Header(name=os.fsdecode(name), typeflag=typeflag.decode(), size=size)
    out = io.BytesIO()
    writer = tar.TarWriter(out)
    writer.write_header(hdr)
    writer.close()
    return out.getvalue()[: -2 * tar.BLOCK]  # the header alone, without the end marker


def _meta(flag: bytes, data: bytes) -> bytes:
    return _meta_header(flag, len(data)) + _pad(data)


def _meta_header(flag: bytes, size: int) -> bytes:
    block = bytearray(_entry(b"meta", b"0", size)[-tar.BLOCK :])
    block[156] = flag[0]
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def _record_pieces(key: bytes, value: bytes) -> list[bytes]:
    """``pax_record(key, value)`` as pieces, ``value`` itself shared, not copied."""
    body = len(key) + len(value) + 3  # " ", "=", "\n"
    length = body + 1
    while len(str(length)) + body != length:
        length = len(str(length)) + body
    return [b"%d %s=" % (length, key), value, b"\n"]


@dataclass(frozen=True)
class LongStream:
    """A unit of tar members repeated ``count`` times; keys and names carry
    the repetition number, so nothing repeats exactly."""

    kinds: tuple[str, ...]
    record: int  # bytes of each PAX value, long name or file data
    count: int

    def payloads(self) -> dict[str, bytes]:
        """The big pieces every unit shares: make them before measuring."""
        return {
            "value": b"v" * self.record,
            "data": b"d" * self.record,
            "zeros": bytes(tar.BLOCK),
        }

    def unit(self, i: int, shared: dict[str, bytes]) -> list[bytes]:
        out: list[bytes] = []

        def meta(flag: bytes, pieces: list[bytes]) -> None:
            size = sum(len(p) for p in pieces)
            out.extend([_meta_header(flag, size), *pieces, shared["zeros"][: -size % tar.BLOCK]])

        for j, kind in enumerate(self.kinds):
            tag = b"%d.%d" % (i, j)
            if kind == "pax-distinct":  # a new key every time
                meta(b"x", _record_pieces(b"SCHILY.xattr.user." + tag, shared["value"]))
            elif kind == "pax-same":
                meta(b"x", _record_pieces(b"comment", shared["value"]))
            elif kind == "pax-global":
                meta(b"g", _record_pieces(b"comment" + tag, shared["value"]))
            elif kind == "gnu-long":
                meta(b"L", [shared["value"], tag])
            elif kind == "file":
                data = shared["data"]
                out.extend([_entry(b"f" + tag, b"0", len(data)), data])
                out.append(shared["zeros"][: -len(data) % tar.BLOCK])
            elif kind == "dir":
                out.append(_entry(b"d" + tag + b"/", b"5", 0))
        return out


LONG_STREAMS = st.builds(
    LongStream,
    st.lists(
        st.sampled_from(["pax-distinct", "pax-same", "pax-global", "gnu-long", "file", "dir"]),
        min_size=1,
        max_size=4,
    ).map(tuple),
    st.sampled_from([1000, 64 << 10, 512 << 10, MiB - 1000]),
    st.sampled_from([1, 2, 24, *([64] if _harness.LONG else [])]) | st.integers(1, 24),
)

#: What the reader may hold, whatever the stream's length: a 1 MiB read
#: chunk and one capped (1 MiB) metadata record, each copied a few times on
#: the way from the stream to a parsed header.
READER_BOUND = 8 * MiB


def check_reader_memory(spec: LongStream) -> None:
    shared = spec.payloads()
    stream = Repeating(lambda i: spec.unit(i, shared), spec.count, bytes(1024))
    tracemalloc.start()
    try:
        with contextlib.suppress(errdefs.InvalidArgument):
            read_everything(stream, read_small=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < READER_BOUND, f"reader peak {peak} bytes over a {stream.produced}-byte {spec}"


def test_tar_reader_memory_is_bounded_whatever_the_stream_length() -> None:
    _harness.run("tar-reader-memory", LONG_STREAMS, check_reader_memory, short=16)


# -- the applier ------------------------------------------------------------------------

#: Path components chosen to collide with each other, with whiteouts and
#: with the way out of the root.  ``@OUT`` becomes the sentinel directory's
#: absolute path, ``@UP`` a climb out of the root to it.
PARTS = [
    "a",
    "b",
    "c",
    "l",
    "d",
    ".",
    "..",
    "",
    ".wh.a",
    ".wh.b",
    ".wh.l",
    ".wh.d",
    ".wh..wh..opq",
    ".wh.",
    ".wh..",
    ".wh...",
    ".wh.outside",
    "outside",
    "secret",
    "sub",
    "@OUT",
    "@UP",
]
KINDS = ["0", "0", "0", "5", "5", "2", "2", "1", "1", "6", "3", "4"]
XATTR_KEYS = [
    "user.a",
    "user.b",
    "trusted.overlay.opaque",
    "trusted.x",
    "security.capability",
    "system.posix_acl_access",
]


@dataclass(frozen=True)
class Member:
    kind: str
    name: tuple[str, ...]
    absolute: bool
    trailing_slash: bool
    link: tuple[str, ...]
    link_absolute: bool
    mode: int
    owner: tuple[int, int]
    mtime_ns: int
    size: int
    device: tuple[int, int]
    xattrs: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Layers:
    layers: tuple[tuple[Member, ...], ...]
    deep: int  # depth of a d/d/.../d/f chain in the root before the layers (0: none)
    whiteouts: Whiteouts
    walk: bool  # resolve with our component walk instead of openat2

    @staticmethod
    def _path(parts: tuple[str, ...], absolute: bool, root: Path, out: Path) -> str:
        def expand(part: str) -> str:
            if part == "@OUT":
                return str(out)
            if part == "@UP":
                return "../" * (len(root.parts) + 2) + str(out).lstrip("/")
            return part

        path = "/".join(expand(p) for p in parts)
        return "/" + path if absolute else path

    def headers(self, index: int, root: Path, out: Path) -> Iterator[tuple[tar.Header, bytes]]:
        for m in self.layers[index]:
            name = self._path(m.name, m.absolute, root, out) + ("/" if m.trailing_slash else "")
            data = b"x" * m.size if m.kind == "0" else b""
            yield (
                tar.Header(
                    name=name,
                    typeflag=m.kind,
                    mode=m.mode,
                    uid=m.owner[0],
                    gid=m.owner[1],
                    size=len(data),
                    mtime_ns=m.mtime_ns,
                    linkname=self._path(m.link, m.link_absolute, root, out)
                    if m.kind in "12"
                    else "",
                    devmajor=m.device[0],
                    devminor=m.device[1],
                    xattrs=dict(m.xattrs),
                ),
                data,
            )

    def tar(self, root: Path, out: Path, index: int = 0) -> bytes:
        buf = io.BytesIO()
        writer = tar.TarWriter(buf)
        for hdr, data in self.headers(index, root, out):
            writer.write_header(hdr)
            writer.write(data)
            writer.pad(len(data))
        writer.close()
        return buf.getvalue()


def _owners() -> st.SearchStrategy[tuple[int, int]]:
    own = (os.getuid(), os.getgid())
    if not ROOT:
        return st.just(own)
    ids = st.sampled_from([0, 1, 1000, 65534, 0xFFFFFFFE, 1 << 21])
    return st.just(own) | st.tuples(ids, ids)


MEMBERS = st.builds(
    Member,
    kind=st.sampled_from(KINDS),
    name=st.lists(st.sampled_from(PARTS), min_size=1, max_size=4).map(tuple),
    absolute=st.booleans(),
    trailing_slash=st.integers(0, 5).map(lambda n: n == 0),
    link=st.lists(st.sampled_from(PARTS), min_size=0, max_size=4).map(tuple),
    link_absolute=st.booleans(),
    mode=st.sampled_from([0o644, 0o755, 0o600, 0o000, 0o4755, 0o7777, 0o1777])
    | st.integers(0, 0o7777),
    owner=_owners(),
    mtime_ns=st.sampled_from([0, 1_600_000_000 * 10**9, -(10**9), 1 << 62, 8**11 * 10**9])
    | st.integers(-(1 << 63), 1 << 63),
    size=st.sampled_from([0, 1, 511, 512, 513, 4096]) | st.integers(0, 2000),
    device=st.sampled_from([(0, 0), (1, 3), (1, 5), (7, 0)])
    | st.tuples(st.integers(0, 4095), st.integers(0, 1 << 20)),
    xattrs=st.lists(st.tuples(st.sampled_from(XATTR_KEYS), st.binary(max_size=24)), max_size=2).map(
        tuple
    ),
)


def layers() -> st.SearchStrategy[Layers]:
    return st.builds(
        Layers,
        layers=st.lists(st.lists(MEMBERS, max_size=10).map(tuple), min_size=1, max_size=3).map(
            tuple
        ),
        # Deeper than Python's recursion limit, and than PATH_MAX.
        deep=st.sampled_from([0] * 12 + [40, 1100, 3000]),
        whiteouts=st.sampled_from(list(Whiteouts)) if ROOT else st.just(Whiteouts.REMOVE),
        walk=st.booleans() if _openat.AVAILABLE else st.just(True),
    )


def snapshot(base: Path, skip: Path) -> dict[str, tuple[object, ...]]:
    """Everything observable about ``base``'s tree, ``skip``'s subtree left out."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d != skip]
        for p in [here, *(here / n for n in dirnames + filenames)]:
            st_ = p.lstat()
            body: object = None
            if stat.S_ISLNK(st_.st_mode):
                body = os.readlink(p)
            elif stat.S_ISREG(st_.st_mode):
                body = p.read_bytes()
            xattrs = {
                k: os.getxattr(p, k, follow_symlinks=False)
                for k in os.listxattr(p, follow_symlinks=False)
            }
            out[str(p)] = (
                st_.st_mode,
                st_.st_uid,
                st_.st_gid,
                st_.st_ino,
                st_.st_nlink,
                st_.st_mtime_ns,
                st_.st_size,
                body,
                xattrs,
            )
    return out


def remove_tree(path: Path) -> None:
    """Remove a tree however deep, through directories a layer made unreadable.

    (Python 3.11's rmtree and os.walk recurse per level; coreutils do not,
    and never follow the symlinks they meet.)
    """
    if not ROOT:
        subprocess.run(["chmod", "-R", "u+rwx", str(path)], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True, check=True)


@contextlib.contextmanager
def sandbox() -> Iterator[tuple[Path, Path, Path]]:
    """(base, root, outside): an empty root and a sentinel directory beside it."""
    base = Path(tempfile.mkdtemp(prefix="fuzz-apply-"))
    try:
        outside = base / "outside"
        (outside / "sub").mkdir(parents=True)
        (outside / "secret").write_bytes(b"secret")
        os.chmod(outside / "secret", 0o600)
        (outside / "sub/x").write_bytes(b"x")
        os.symlink("secret", outside / "link")
        os.mkfifo(outside / "fifo")
        root = base / "root"
        root.mkdir()
        yield base, root, outside
    finally:
        remove_tree(base)


@contextlib.contextmanager
def resolver(walk: bool) -> Iterator[None]:
    saved = _openat.AVAILABLE
    _openat.AVAILABLE = saved and not walk
    try:
        yield
    finally:
        _openat.AVAILABLE = saved


def make_chain(root: Path, depth: int) -> None:
    """``d/d/.../d/f``, ``depth`` directories deep, made one level at a time."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def check_diff(root: Path) -> None:
    """The differ writes the applied tree as a layer our reader takes back."""
    out = io.BytesIO()
    try:
        write_tree(root, out)
    except errdefs.ContainerdError:
        return
    out.seek(0)
    for hdr in tar.TarReader(out):  # type: ignore[arg-type]
        parts = hdr.name.rstrip("/").split("/")
        assert not hdr.name.startswith("/") and ".." not in parts, hdr


def check_apply(spec: Layers) -> None:
    with sandbox() as (base, root, outside), resolver(spec.walk), _harness.production_stack():
        if spec.deep:
            make_chain(root, spec.deep)
        before = snapshot(base, root)
        for index in range(len(spec.layers)):
            data = spec.tar(root, outside, index)
            # Our writer and reader agree on every header they exchange.
            written = [hdr for hdr, _ in spec.headers(index, root, outside)]
            reader = tar.TarReader(io.BytesIO(data))  # type: ignore[arg-type]
            for hdr in written:
                got = reader.next()
                assert got is not None
                assert (got.name, got.typeflag, got.linkname, got.uid, got.gid, got.size) == (
                    hdr.name,
                    hdr.typeflag,
                    hdr.linkname,
                    hdr.uid,
                    hdr.gid,
                    hdr.size,
                ), (got, hdr)
                assert got.mode == hdr.mode & 0o7777 and got.xattrs == hdr.xattrs, (got, hdr)
                assert got.mtime_ns == hdr.mtime_ns // 10**9 * 10**9, (got, hdr)
            assert reader.next() is None
            # A typed refusal is a fine outcome; what matters is outside.
            with contextlib.suppress(errdefs.ContainerdError):
                apply_layer(root, io.BytesIO(data), whiteouts=spec.whiteouts)
            assert snapshot(base, root) == before, f"layer {index} changed things outside the root"
        assert root.is_dir() and not root.is_symlink()
        check_diff(root)


def test_tar_apply_never_touches_anything_outside_the_root() -> None:
    _harness.run("tar-apply", layers(), check_apply, short=120)


# -- applier memory ---------------------------------------------------------------------


def check_apply_memory(spec: tuple[int, int]) -> None:
    files, size = spec
    files = min(files, max(1, (64 * MiB) // max(size, 1)))  # bounded disk use
    payload, zeros = b"p" * size, bytes(tar.BLOCK)

    def unit(i: int) -> list[bytes]:
        return [_entry(b"dir%d/f%d" % (i % 7, i), b"0", size), payload, zeros[: -size % tar.BLOCK]]

    with sandbox() as (_, root, _):
        stream = Repeating(unit, files, bytes(1024))
        tracemalloc.start()
        try:
            apply_layer(root, stream)  # type: ignore[arg-type]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # Workers take small files in batches (1 MiB, at most 8 queued, one
    # running per worker); bigger ones stream from the reader.
    assert peak < 48 * MiB, f"applier peak {peak} bytes for {files} files of {size} bytes"


def test_tar_apply_memory_is_bounded_whatever_the_layer_size() -> None:
    specs = st.tuples(
        st.integers(1, 120 if _harness.LONG else 40),
        st.sampled_from([0, 100, 64 << 10, MiB, MiB + 1, 3 * MiB]),
    )
    _harness.run("tar-apply-memory", specs, check_apply_memory, short=5)
