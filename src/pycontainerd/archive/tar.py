"""A small, strict tar reader and writer for OCI layers.

Python's :mod:`tarfile` costs tens of microseconds per member and has its own
ideas about names and links; a layer apply only needs the headers, read once,
in order, from a stream.  This reader understands what Go's ``archive/tar``
(and so containerd) accepts in layers: ustar, the ustar ``prefix`` field, star,
GNU long names (``L``/``K``), PAX local headers (``path``, ``linkpath``,
``size``, ``uid``, ``gid``, ``mtime``, ``atime``, ``SCHILY.xattr.*``) and
base-256 numbers.  Everything else that could be misread is refused with
:class:`~pycontainerd.errdefs.InvalidArgument`: bad checksums, malformed
numbers and PAX records, oversized metadata records, sparse files, truncation.

What one entry may cost is bounded, whatever the stream holds: only the latest
extended header of each kind (PAX ``x``, GNU ``L``, GNU ``K``) is kept for the
next entry, as Go's reader keeps it, so a run of extended headers replaces
rather than accumulates; each record is at most :data:`MAX_META_RECORD` bytes
and a PAX header at most :data:`MAX_PAX_RECORDS` records, so the metadata
held for one entry never exceeds about 3 MiB.  Global headers (``g``) are
read, bounded the same way, and dropped (containerd ignores them).  Numbers
in PAX records are int64, as in Go; anything longer is refused before it is
converted, so no input reaches Python's integer-string limit.

The writer produces what containerd's change writer produces: ustar headers,
with a PAX header in front when a field does not fit (long or non-ASCII names,
large ids or sizes, xattrs).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from pycontainerd import errdefs

__all__ = [
    "BLOCK",
    "TYPE_BLOCK",
    "TYPE_CHAR",
    "TYPE_DIR",
    "TYPE_FIFO",
    "TYPE_LINK",
    "TYPE_REG",
    "TYPE_SYMLINK",
    "Header",
    "TarReader",
    "TarWriter",
]

BLOCK = 512
#: Cap on PAX and GNU long-name records, as Go's reader caps them.
MAX_META_RECORD = 1 << 20
#: Cap on the records of one PAX header; a file's xattrs fit many times over.
MAX_PAX_RECORDS = 4096
_INT64_MAX = (1 << 63) - 1
_CHUNK = 1 << 20

TYPE_REG = "0"
TYPE_LINK = "1"
TYPE_SYMLINK = "2"
TYPE_CHAR = "3"
TYPE_BLOCK = "4"
TYPE_DIR = "5"
TYPE_FIFO = "6"
_TYPE_REGA = "\x00"
_TYPE_PAX = "x"
_TYPE_PAX_GLOBAL = "g"
_TYPE_GNU_LONGNAME = "L"
_TYPE_GNU_LONGLINK = "K"
_TYPE_GNU_SPARSE = "S"
# Entries whose header size says nothing about data that follows (Go agrees).
_HEADER_ONLY = frozenset("123456")
_SUPPORTED = frozenset((TYPE_REG, *_HEADER_ONLY))
_DEVICE_TYPES = frozenset((TYPE_CHAR, TYPE_BLOCK))

_MAGIC_USTAR = b"ustar\x00"
_MAGIC_GNU = b"ustar "
_TRAILER_STAR = b"tar\x00"
_ZERO_BLOCK = bytes(BLOCK)
_NUMBERS: dict[bytes, int] = {}
_NUMBERS_MAX = 1 << 16
_XATTR_PREFIX = "SCHILY.xattr."


@dataclass(slots=True)
class Header:
    """One tar entry after PAX/GNU records are merged in; ``size`` is its data length."""

    name: str
    typeflag: str = TYPE_REG
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    atime_ns: int | None = None
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


def _bad(msg: str) -> errdefs.InvalidArgument:
    return errdefs.InvalidArgument(f"invalid tar archive: {msg}")


def _cstr(field_bytes: bytes) -> bytes:
    end = field_bytes.find(b"\x00")
    return field_bytes if end < 0 else field_bytes[:end]


def _numeric(field_bytes: bytes, what: str) -> int:
    """Parse an octal or base-256 header number the way Go's reader does."""
    # Layers repeat the same modes, owners and times thousands of times.
    cached = _NUMBERS.get(field_bytes)
    if cached is not None:
        return cached
    value = _parse_numeric(field_bytes, what)
    if len(_NUMBERS) < _NUMBERS_MAX:
        _NUMBERS[field_bytes] = value
    return value


def _parse_numeric(field_bytes: bytes, what: str) -> int:
    if field_bytes and field_bytes[0] & 0x80:
        # Base-256: big-endian two's complement with the marker bit cleared.
        value = int.from_bytes(bytes([field_bytes[0] & 0x7F]) + field_bytes[1:], "big")
        if field_bytes[0] & 0x40:
            value -= 1 << (8 * len(field_bytes) - 1)
        return value
    digits = field_bytes.strip(b" \x00")
    if not digits:
        return 0
    # isdigit() refuses the signs, underscores and prefixes int() would allow.
    if not digits.isdigit() or b"8" in digits or b"9" in digits:
        raise _bad(f"malformed {what} field {field_bytes!r}")
    return int(digits, 8)


def _shown(value: bytes) -> str:
    """A record value for an error message, cut short: values can be 1 MiB."""
    return repr(value[:32] + b"..." if len(value) > 32 else value)


def _int64(digits: bytes, key: str, value: bytes) -> int:
    # The length check comes first: int() of a huge digit string is slow, and
    # past 4300 digits it raises ValueError, which would escape as Unknown.
    if not digits.isdigit() or len(digits) > 19 or int(digits) > _INT64_MAX:
        raise _bad(f"malformed PAX {key} {_shown(value)}")
    return int(digits)


def _pax_time_ns(value: bytes, key: str) -> int:
    negative = value.startswith(b"-")
    whole, _, frac = (value[1:] if negative else value).partition(b".")
    seconds = _int64(whole, key, value)
    if frac and not frac.isdigit():
        raise _bad(f"malformed PAX {key} {_shown(value)}")
    ns = seconds * 1_000_000_000 + int((frac[:9] + b"000000000")[:9])
    return -ns if negative else ns


def _pax_int(value: bytes, key: str) -> int:
    return _int64(value, key, value)


def _parse_pax(data: bytes) -> dict[str, bytes]:
    """Split ``"%d %s=%s\\n"`` records; the length counts the whole record."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 21)
        if space < 0 or not data[pos:space].isdigit():
            raise _bad("malformed PAX record length")
        length = int(data[pos:space])
        end = pos + length
        if length <= space - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise _bad("malformed PAX record")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise _bad("malformed PAX record")
        records[key.decode("utf-8", "surrogateescape")] = value
        if len(records) > MAX_PAX_RECORDS:
            raise _bad(f"PAX header has more than {MAX_PAX_RECORDS} records")
        pos = end
    return records


class TarReader:
    """Iterate the headers of a tar stream; read or skip each entry's data before the next.

    ``consumed`` counts the uncompressed bytes taken from the stream.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self._remaining = 0  # data bytes of the current entry not yet read
        self._padding = 0
        self.consumed = 0

    # -- buffered input -------------------------------------------------------

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available; False on a clean end of stream with none left."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos :]] if have else []
        while have < need:
            chunk = self._stream.read(max(_CHUNK, need - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        # The usual refill is one chunk after a used-up buffer: that chunk is
        # the buffer (a join would copy it again).
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos = 0
        if have >= need:
            return True
        if have == 0:
            return False
        raise _bad("unexpected end of stream")

    def _take(self, n: int) -> bytes:
        if not self._fill(n):
            raise _bad("unexpected end of stream")
        start = self._pos
        self._pos += n
        self.consumed += n
        return self._buf[start : start + n]

    def _skip(self, n: int) -> None:
        while n > 0:
            have = len(self._buf) - self._pos
            if have == 0 and not self._fill(1):
                raise _bad("unexpected end of stream")
            step = min(n, len(self._buf) - self._pos)
            self._pos += step
            self.consumed += step
            n -= step

    # -- entry data -----------------------------------------------------------

    def copy_to_fd(self, fd: int) -> int:
        """Write the current entry's data to ``fd``; return the byte count."""
        total = 0
        while self._remaining:
            if len(self._buf) == self._pos and not self._fill(1):
                raise _bad("unexpected end of stream in file data")
            end = min(len(self._buf), self._pos + self._remaining)
            view = memoryview(self._buf)[self._pos : end]
            while view:
                written = os.write(fd, view)
                view = view[written:]
            step = end - self._pos
            self._pos = end
            self.consumed += step
            self._remaining -= step
            total += step
        return total

    def read_data(self) -> bytes:
        """The current entry's data in memory (for small entries)."""
        data = self._take(self._remaining)
        self._remaining = 0
        return data

    def _finish_entry(self) -> None:
        if self._remaining:
            self._skip(self._remaining)
            self._remaining = 0
        if self._padding:
            self._skip(self._padding)
            self._padding = 0

    def drain(self) -> None:
        """Read to the end of the stream (the zero-padding after the end marker)."""
        self._finish_entry()
        self.consumed += len(self._buf) - self._pos
        self._buf, self._pos = b"", 0
        while chunk := self._stream.read(_CHUNK):
            self.consumed += len(chunk)

    def _meta_record(self, size: int, what: str) -> bytes:
        if size > MAX_META_RECORD:
            raise _bad(f"{what} record of {size} bytes exceeds the {MAX_META_RECORD} byte limit")
        data = self._take(size)
        self._skip(-size % BLOCK)
        return data

    # -- headers --------------------------------------------------------------

    def __iter__(self) -> Iterator[Header]:
        while (hdr := self.next()) is not None:
            yield hdr

    def next(self) -> Header | None:
        """The next entry's header, or None at the end of the archive."""
        self._finish_entry()
        pax: dict[str, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            if not self._fill(BLOCK):
                if pax or long_name is not None or long_link is not None:
                    raise _bad("unexpected end of stream after an extended header")
                return None  # Go accepts a stream that simply ends on a block boundary
            block = self._take(BLOCK)
            if block == _ZERO_BLOCK:
                if not self._fill(BLOCK):
                    return None
                if self._take(BLOCK) != _ZERO_BLOCK:
                    raise _bad("a zero block followed by a non-zero block")
                return None
            self._check_sum(block)
            flag = chr(block[156])
            size = _numeric(block[124:136], "size")
            if size < 0:
                raise _bad("negative size")
            if flag == _TYPE_PAX:
                # The latest replaces any before it (Go does the same): merged,
                # a run of headers with distinct keys would grow without end.
                pax = _parse_pax(self._meta_record(size, "PAX"))
                continue
            if flag == _TYPE_PAX_GLOBAL:
                self._meta_record(size, "PAX global")  # containerd ignores them too
                continue
            if flag == _TYPE_GNU_LONGNAME:
                long_name = _cstr(self._meta_record(size, "GNU long name"))
                continue
            if flag == _TYPE_GNU_LONGLINK:
                long_link = _cstr(self._meta_record(size, "GNU long link"))
                continue
            return self._entry(block, flag, size, pax, long_name, long_link)

    @staticmethod
    def _check_sum(block: bytes) -> None:
        stored = _numeric(block[148:156], "checksum")
        # The unsigned byte sum, the checksum field counted as spaces.  Adler-32's
        # low half is 1 + the byte sum mod 65,521: exact for up to 257 bytes of
        # 0xff, so over pieces that short; a third of sum()'s time.
        view = memoryview(block)
        unsigned = (
            (zlib.adler32(view[:148]) & 0xFFFF)
            + (zlib.adler32(view[156:400]) & 0xFFFF)
            + (zlib.adler32(view[400:]) & 0xFFFF)
            - 3
            + 8 * 0x20
        )
        if stored == unsigned:
            return
        signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 8 * 0x20
        if stored != signed:
            raise _bad("header checksum mismatch")

    def _entry(
        self,
        block: bytes,
        flag: str,
        size: int,
        pax: Mapping[str, bytes],
        long_name: bytes | None,
        long_link: bytes | None,
    ) -> Header:
        magic = block[257:263]
        name = _cstr(block[0:100])
        if magic == _MAGIC_USTAR:
            star = block[508:512] == _TRAILER_STAR
            prefix = _cstr(block[345:476] if star else block[345:500])
            if prefix:
                name = prefix + b"/" + name
        atime_ns: int | None = None
        if magic == _MAGIC_GNU and block[345] != 0:
            atime_ns = _numeric(block[345:357], "atime") * 1_000_000_000
        linkname = _cstr(block[157:257])
        hdr = Header(
            name=os.fsdecode(name),
            typeflag=flag,
            mode=_numeric(block[100:108], "mode"),
            uid=_numeric(block[108:116], "uid"),
            gid=_numeric(block[116:124], "gid"),
            size=size,
            mtime_ns=_numeric(block[136:148], "mtime") * 1_000_000_000,
            atime_ns=atime_ns,
            linkname=os.fsdecode(linkname),
        )
        if flag in _DEVICE_TYPES and magic[:5] == b"ustar":
            hdr.devmajor = _numeric(block[329:337], "devmajor")
            hdr.devminor = _numeric(block[337:345], "devminor")
        if pax:
            self._merge_pax(hdr, pax)
        # As in Go's reader, GNU long names win over PAX records.
        if long_name is not None:
            hdr.name = os.fsdecode(long_name)
        if long_link is not None:
            hdr.linkname = os.fsdecode(long_link)
        if hdr.typeflag == _TYPE_REGA:
            hdr.typeflag = TYPE_DIR if hdr.name.endswith("/") else TYPE_REG
        if hdr.typeflag == _TYPE_GNU_SPARSE or (
            pax and any(k.startswith("GNU.sparse.") for k in pax)
        ):
            raise _bad(f"sparse file {hdr.name!r} is not supported")
        if hdr.typeflag not in _SUPPORTED:
            raise _bad(f"unsupported entry type {hdr.typeflag!r} for {hdr.name!r}")
        if "\x00" in hdr.name or "\x00" in hdr.linkname:
            raise _bad(f"NUL byte in the name of {hdr.name!r}")
        if hdr.uid < 0 or hdr.gid < 0 or hdr.uid > 0xFFFFFFFE or hdr.gid > 0xFFFFFFFE:
            raise _bad(f"owner {hdr.uid}:{hdr.gid} of {hdr.name!r} is out of range")
        if hdr.devmajor < 0 or hdr.devminor < 0:
            raise _bad(f"negative device number for {hdr.name!r}")
        data = 0 if hdr.typeflag in _HEADER_ONLY else hdr.size
        if data < 0:
            raise _bad(f"negative size for {hdr.name!r}")
        self._remaining = data
        self._padding = -data % BLOCK
        return hdr

    @staticmethod
    def _merge_pax(hdr: Header, pax: Mapping[str, bytes]) -> None:
        for key, value in pax.items():
            if key == "path":
                if value:
                    hdr.name = os.fsdecode(value)
            elif key == "linkpath":
                if value:
                    hdr.linkname = os.fsdecode(value)
            elif key == "size":
                hdr.size = _pax_int(value, key)
            elif key == "uid":
                hdr.uid = _pax_int(value, key)
            elif key == "gid":
                hdr.gid = _pax_int(value, key)
            elif key == "mtime":
                hdr.mtime_ns = _pax_time_ns(value, key)
            elif key == "atime":
                hdr.atime_ns = _pax_time_ns(value, key)
            elif key.startswith(_XATTR_PREFIX):
                hdr.xattrs[key[len(_XATTR_PREFIX) :]] = value


# -- writing -----------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def _fits_octal(value: int, width: int) -> bool:
    return 0 <= value < 1 << (3 * (width - 1))


def _number(value: int, width: int) -> bytes:
    """Octal when it fits, else base-256 (only device numbers need that here)."""
    if _fits_octal(value, width):
        return _octal(value, width)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """Split a long name into ustar prefix (<=155) and name (<=100) at a slash."""
    if len(name) <= 100:
        return b"", name
    if len(name) > 256:
        return None
    idx = name.rfind(b"/", 0, 156)
    while idx > 0:
        if len(name) - idx - 1 <= 100 and idx <= 155 and idx < len(name) - 1:
            return name[:idx], name[idx + 1 :]
        idx = name.rfind(b"/", 0, idx)
    return None


class TarWriter:
    """Write tar entries to ``out``; call :meth:`close` to write the end marker."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        # Headers are small; gather them so a compressor sees few, large writes.
        self._pending = bytearray()

    def _block(self, hdr: Header, name: bytes, prefix: bytes, linkname: bytes, size: int) -> bytes:
        mtime = max(hdr.mtime_ns // 1_000_000_000, 0)
        buf = bytearray(BLOCK)
        buf[0 : len(name)] = name
        buf[100:108] = _octal(hdr.mode & 0o7777, 8)
        buf[108:116] = _octal(hdr.uid, 8) if _fits_octal(hdr.uid, 8) else _octal(0, 8)
        buf[116:124] = _octal(hdr.gid, 8) if _fits_octal(hdr.gid, 8) else _octal(0, 8)
        buf[124:136] = _octal(size, 12) if _fits_octal(size, 12) else _octal(0, 12)
        buf[136:148] = _octal(mtime, 12) if _fits_octal(mtime, 12) else _octal(0, 12)
        buf[148:156] = b"        "
        buf[156] = ord(hdr.typeflag)
        buf[157 : 157 + len(linkname)] = linkname
        buf[257:263] = _MAGIC_USTAR
        buf[263:265] = b"00"
        if hdr.typeflag != _TYPE_PAX:  # Go leaves them empty in PAX headers
            buf[329:337] = _number(hdr.devmajor, 8)
            buf[337:345] = _number(hdr.devminor, 8)
        buf[345 : 345 + len(prefix)] = prefix
        buf[148:156] = b"%06o\x00 " % sum(buf)
        return bytes(buf)

    def write_header(self, hdr: Header) -> None:
        """Write one header (preceded by a PAX header when needed); data follows via write."""
        raw_name = os.fsencode(hdr.name)
        raw_link = os.fsencode(hdr.linkname)
        pax: list[bytes] = []
        split = _split_ustar(raw_name) if raw_name.isascii() else None
        if split is None:
            pax.append(_pax_record("path", raw_name))
            prefix, name = b"", raw_name[:100]
        else:
            prefix, name = split
        if len(raw_link) > 100 or not raw_link.isascii():
            pax.append(_pax_record("linkpath", raw_link))
            raw_link = raw_link[:100]
        size = 0 if hdr.typeflag in _HEADER_ONLY else hdr.size
        for key, value, width in (("uid", hdr.uid, 8), ("gid", hdr.gid, 8), ("size", size, 12)):
            if not _fits_octal(value, width):
                pax.append(_pax_record(key, str(value).encode()))
        mtime = hdr.mtime_ns // 1_000_000_000
        if not _fits_octal(mtime, 12):
            pax.append(_pax_record("mtime", str(mtime).encode()))
        for key in sorted(hdr.xattrs):
            pax.append(_pax_record(_XATTR_PREFIX + key, hdr.xattrs[key]))
        if pax:
            data = b"".join(pax)
            # Named as Go names it: DIR/PaxHeaders.0/BASE.
            parent, _, base = raw_name.rstrip(b"/").rpartition(b"/")
            pax_name = ((parent + b"/" if parent else b"") + b"PaxHeaders.0/" + base)[:100]
            pax_hdr = Header(name="", typeflag=_TYPE_PAX, mode=0, size=len(data))
            self._pending += self._block(pax_hdr, pax_name, b"", b"", len(data))
            self._pending += data
            self._pending += bytes(-len(data) % BLOCK)
        self._pending += self._block(hdr, name, prefix, raw_link, size)
        if len(self._pending) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._out.write(bytes(self._pending))
            self._pending.clear()

    def write(self, data: bytes | memoryview) -> None:
        """Entry data, after its header."""
        if len(data) < 1 << 16:
            self._pending += data
            if len(self._pending) >= _CHUNK:
                self._flush()
            return
        self._flush()
        self._out.write(data)

    def pad(self, size: int) -> None:
        """Pad entry data of ``size`` bytes to the block boundary."""
        if size % BLOCK:
            self._pending += bytes(-size % BLOCK)

    def close(self) -> None:
        self._pending += bytes(2 * BLOCK)
        self._flush()
