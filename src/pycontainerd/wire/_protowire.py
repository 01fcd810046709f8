"""Just enough of the protobuf wire format to frame bytes that are already encoded.

For the few hot paths that assemble a message from parts which are already
serialized (a stored ``Any``, a child message), so that nothing is decoded
only to be encoded again.  A message is the concatenation of its fields, in
any order; each helper here returns one field: its key (made once, with
:func:`key`), then its value.  Only the two wire types such messages need
are here: varint and length-delimited.  Defaults are the caller's business:
proto3 leaves out empty strings and zeros, and :func:`string` does too.
"""

from __future__ import annotations

__all__ = ["LEN", "VARINT", "delimited", "key", "string", "timestamp", "varint"]

VARINT = 0
LEN = 2

_SMALL = [bytes((i,)) for i in range(0x80)]
_UINT64 = 0xFFFF_FFFF_FFFF_FFFF


def varint(value: int) -> bytes:
    """``value`` (non-negative) as a base-128 varint."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        raise ValueError(f"negative varint {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(number: int, wire_type: int = LEN) -> bytes:
    """The key that starts field ``number`` of ``wire_type``."""
    return varint(number << 3 | wire_type)


def delimited(field_key: bytes, data: bytes) -> bytes:
    """A length-delimited field: a string, bytes or an encoded message."""
    n = len(data)
    return field_key + (_SMALL[n] if n < 0x80 else varint(n)) + data


def string(field_key: bytes, value: str) -> bytes:
    """A proto3 string field; nothing at all for the empty string (the default)."""
    return delimited(field_key, value.encode()) if value else b""


_SECONDS = key(1, VARINT)
_NANOS = key(2, VARINT)


def timestamp(field_key: bytes, ns: int) -> bytes:
    """A ``google.protobuf.Timestamp`` field (always present) for ``ns`` since the epoch.

    Truncated to microseconds, the resolution records carry everywhere else
    (``metadata._codec.to_datetime``), so a listing says what ``Get`` says.
    """
    seconds, micros = divmod(ns // 1000, 1_000_000)
    body = b""
    if seconds:
        # int64: a negative value goes as its 64-bit two's complement.
        body = _SECONDS + varint(seconds & _UINT64)
    if micros:
        body += _NANOS + varint(micros * 1000)
    return delimited(field_key, body)
