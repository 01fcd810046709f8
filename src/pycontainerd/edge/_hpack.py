"""HPACK (RFC 7541) for the HTTP/2 server: a decoder for request header
blocks, and the few encodings a gRPC response needs.

The decoder keeps the dynamic table the peer's encoder fills; its size is
the RFC's default (4,096 octets), the most we accept from a table size
update, since the server never advertises another.  Decoding is one pass
over the block; a field refers to the static table, the dynamic table or
carries literal octets, Huffman-coded or not.  Names and values are decoded
as UTF-8 (an invalid sequence becomes U+FFFD: gRPC metadata is ASCII, and a
header is never a reason to fail the connection).

Responses never touch the peer's dynamic table: ``:status 200`` is a static
index and every other field a literal without indexing, so the blocks of a
response are constant bytes or made by :func:`literal` alone.

Bounds: an integer takes at most 5 octets after its prefix (values below
2**28), a string's length is checked against what is left of the block
before it is read, and the decoded list stops growing past
``max_list_size`` (RFC 7541's accounting: name, value and 32 octets a
field) while the block is still decoded to keep the table in step.  The decoder
remembers the fields of up to 64 blocks of at most 1 KiB that left the
table as it was (a client repeats its blocks call after call), until the
table changes.
"""

from __future__ import annotations

from collections import deque

__all__ = ["STATIC_TABLE", "Decoder", "HpackError", "huffman_decode", "integer", "literal"]


class HpackError(Exception):
    """The block cannot be decoded: a COMPRESSION_ERROR for the connection."""


#: RFC 7541 Appendix A; index 1 is ``STATIC_TABLE[0]``.
STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)
_STATIC = len(STATIC_TABLE)

#: The table size the RFC starts with and the most an update may set.
DEFAULT_TABLE_SIZE = 4096
#: What RFC 7541 §4.1 adds to a field's name and value when it counts sizes.
ENTRY_OVERHEAD = 32
#: Octets an integer may take after its prefix: enough for any value below 2**28.
_MAX_INTEGER_OCTETS = 5
#: Blocks the decoder remembers (see ``Decoder._cache``), and the largest.
_CACHED_BLOCKS = 64
_CACHED_BLOCK = 1024


# --------------------------------------------------------------------------
# Huffman (RFC 7541 Appendix B)

# The code is canonical: the lengths of the 257 codes (symbols 0-255 and
# EOS), in symbol order, define it.
_CODE_LENGTHS = bytes.fromhex(
    "0d171c1c1c1c1c1c1c181e1c1c1e1c1c1c1c1c1c1c1c1e1c1c1c1c1c1c1c1c1c060a0a0c0d06080b"
    "0a0a080b080606060505050606060606060607080f060c0a0d060707070707070707070707070707"
    "07070707070707070807080d130d0e060f0506050605060606050707060606050607060505060707"
    "0707070f0b0e0d1c1416141416161617161717171717181718181617181717171715161716171718"
    "16151416161717151716161815161717151516151716171714161616171616171a1a141316171619"
    "1a1a1a1b1b1a181913151a1b1b1a1b1815151a1a1c1b1b1b14181415161515171616191918181a17"
    "1a1b1a1a1b1b1b1b1b1c1b1b1b1b1b1a1e"
)
_EOS = 256

# A decoding automaton that reads four bits at a time, built on first use
# (a few milliseconds): state s and nibble n lead to _FSM[s << 4 | n] =
# (next state, symbol emitted or -1, EOS seen).  _ACCEPT[s] says whether
# input may end in state s: at the root, or inside the all-ones prefix of
# EOS no longer than 7 bits (the padding RFC 7541 §5.2 allows).
_FSM: list[tuple[int, int, bool]] = []
_ACCEPT: list[bool] = []


def _build() -> None:
    order = sorted(range(257), key=lambda s: (_CODE_LENGTHS[s], s))
    # A binary trie: node -> [child for bit 0, child for bit 1]; a child is
    # ("n", node) or ("s", symbol).
    children: list[list[tuple[str, int] | None]] = [[None, None]]
    depth = [0]
    ones = [True]
    code, previous = 0, _CODE_LENGTHS[order[0]]
    for i, symbol in enumerate(order):
        length = _CODE_LENGTHS[symbol]
        if i:
            code = (code + 1) << (length - previous)
        previous = length
        node = 0
        for bit_index in range(length - 1, -1, -1):
            bit = (code >> bit_index) & 1
            if bit_index == 0:
                children[node][bit] = ("s", symbol)
                break
            child = children[node][bit]
            if child is None:
                children.append([None, None])
                depth.append(depth[node] + 1)
                ones.append(ones[node] and bit == 1)
                child = ("n", len(children) - 1)
                children[node][bit] = child
            node = child[1]
    fsm: list[tuple[int, int, bool]] = []
    for state in range(len(children)):
        for nibble in range(16):
            node, emitted, eos = state, -1, False
            for bit_index in (3, 2, 1, 0):
                child = children[node][(nibble >> bit_index) & 1]
                assert child is not None  # the code is complete
                if child[0] == "n":
                    node = child[1]
                else:
                    eos = eos or child[1] == _EOS
                    emitted = child[1]  # at most one: no code is shorter than 5 bits
                    node = 0
            fsm.append((node, emitted, eos))
    _ACCEPT.extend(node == 0 or (ones[node] and depth[node] <= 7) for node in range(len(children)))
    _FSM.extend(fsm)


def huffman_decode(data: bytes) -> bytes:
    """The octets ``data`` Huffman-codes; :class:`HpackError` if it is not a
    valid code (EOS inside, or padding that is not a short run of ones)."""
    if not _FSM:
        _build()
    fsm = _FSM
    out = bytearray()
    state = 0
    for byte in data:
        state, symbol, eos = fsm[state << 4 | byte >> 4]
        if eos:
            raise HpackError("EOS in a Huffman-coded string")
        if symbol >= 0:
            out.append(symbol)
        state, symbol, eos = fsm[state << 4 | byte & 15]
        if eos:
            raise HpackError("EOS in a Huffman-coded string")
        if symbol >= 0:
            out.append(symbol)
    if not _ACCEPT[state]:
        raise HpackError("invalid Huffman padding")
    return bytes(out)


# --------------------------------------------------------------------------
# Encoding


def integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """``value`` in an N-bit prefix (RFC 7541 §5.1); ``first`` holds the
    bits above the prefix in the first octet."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value & 127 | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A field as a literal without indexing, with a literal name (no Huffman)."""
    return b"\x00" + integer(len(name), 7) + name + integer(len(value), 7) + value


# --------------------------------------------------------------------------
# Decoding


def _text(octets: bytes) -> str:
    return octets.decode("utf-8", "replace")


class Decoder:
    """Decodes a connection's request header blocks, in order."""

    __slots__ = ("_cache", "_changed", "_dynamic", "_max", "_size", "max_list_size")

    def __init__(self, max_list_size: int = 65536) -> None:
        #: The largest header list kept (RFC 7541's accounting).
        self.max_list_size = max_list_size
        #: Blocks seen since the table last changed, and their fields: a
        #: client repeats the same block for the same call (its fields all
        #: indexed, or literals it does not index), and decoding one is then
        #: a dictionary lookup.  Cleared whenever the table changes.
        self._cache: dict[bytes, list[tuple[str, str]]] = {}
        self._changed = False
        #: Newest first: index 62 is ``_dynamic[0]``.  Each entry holds the
        #: field and its size as RFC 7541 counts it.
        self._dynamic: deque[tuple[tuple[str, str], int]] = deque()
        self._size = 0
        self._max = DEFAULT_TABLE_SIZE

    def _evict(self, room: int) -> None:
        dynamic = self._dynamic
        while dynamic and self._size + room > self._max:
            self._size -= dynamic.pop()[1]

    def _field(self, index: int) -> tuple[str, str]:
        if index <= 0:
            raise HpackError("index 0")
        if index <= _STATIC:
            return STATIC_TABLE[index - 1]
        index -= _STATIC + 1
        if index >= len(self._dynamic):
            raise HpackError(f"index {index + _STATIC + 1} is not in the table")
        return self._dynamic[index][0]

    def decode(self, block: bytes) -> tuple[list[tuple[str, str]], bool]:
        """The fields of ``block`` and whether their list stayed within
        :attr:`max_list_size`; past it, fields are decoded (the table must stay
        in step with the peer's) but no longer kept.  The list may be
        shared with other calls: it must not be changed."""
        cache = self._cache
        fields = cache.get(block)
        if fields is not None:
            return fields, True
        self._changed = False
        fields, within = self._decode(block, self.max_list_size)
        if self._changed:
            cache.clear()
        elif within and len(block) <= _CACHED_BLOCK:
            if len(cache) >= _CACHED_BLOCKS:
                cache.clear()
            cache[block] = fields
        return fields, within

    def _decode(self, block: bytes, max_list_size: int) -> tuple[list[tuple[str, str]], bool]:
        fields: list[tuple[str, str]] = []
        listed = 0
        within = True
        end = len(block)
        pos = 0
        field_seen = False
        while pos < end:
            byte = block[pos]
            if byte & 0x80:  # indexed field
                index = byte & 0x7F
                pos += 1
                if index == 0x7F:
                    index, pos = self._integer(block, pos, 0x7F)
                field = self._field(index)
            elif byte & 0x20 and not byte & 0x40:  # dynamic table size update
                if field_seen:
                    raise HpackError("table size update after a field")
                size = byte & 0x1F
                pos += 1
                if size == 0x1F:
                    size, pos = self._integer(block, pos, 0x1F)
                if size > DEFAULT_TABLE_SIZE:
                    raise HpackError(f"table size {size} over {DEFAULT_TABLE_SIZE}")
                self._max = size
                self._evict(0)
                self._changed = True
                continue
            else:  # a literal: with incremental indexing, without, never indexed
                indexing = bool(byte & 0x40)
                mask = 0x3F if indexing else 0x0F
                index = byte & mask
                pos += 1
                if index == mask:
                    index, pos = self._integer(block, pos, mask)
                if index:
                    name = self._field(index)[0]
                else:
                    raw, pos = self._string(block, pos)
                    name = _text(raw)
                raw, pos = self._string(block, pos)
                field = (name, _text(raw))
                if indexing:
                    self._changed = True
                    size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
                    if size > self._max:
                        self._dynamic.clear()
                        self._size = 0
                    else:
                        self._evict(size)
                        self._dynamic.appendleft((field, size))
                        self._size += size
            field_seen = True
            if within:
                listed += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
                if listed > max_list_size:
                    within = False
                    fields.clear()
                else:
                    fields.append(field)
        return fields, within

    @staticmethod
    def _integer(block: bytes, pos: int, value: int) -> tuple[int, int]:
        """The rest of an integer whose prefix was full (``value``), from ``pos``."""
        shift = 0
        end = min(len(block), pos + _MAX_INTEGER_OCTETS)
        while pos < end:
            byte = block[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7
        raise HpackError("integer truncated or too long")

    def _string(self, block: bytes, pos: int) -> tuple[bytes, int]:
        if pos >= len(block):
            raise HpackError("string truncated")
        byte = block[pos]
        length = byte & 0x7F
        pos += 1
        if length == 0x7F:
            length, pos = self._integer(block, pos, 0x7F)
        end = pos + length
        if end > len(block):
            raise HpackError("string truncated")
        raw = block[pos:end]
        return (huffman_decode(raw) if byte & 0x80 else raw), end
