"""The server's HPACK decoder: RFC 7541's own examples, agreement with an
independent encoder (the ``hpack`` package), and refusal of bad blocks."""

from __future__ import annotations

import random

import hpack
import pytest

from pycontainerd.edge._hpack import (
    STATIC_TABLE,
    Decoder,
    HpackError,
    huffman_decode,
    integer,
    literal,
)

pytestmark = pytest.mark.unit


def test_the_static_table_is_rfc_7541s() -> None:
    theirs = hpack.table.HeaderTable.STATIC_TABLE
    assert [(n.decode(), v.decode()) for n, v in theirs] == list(STATIC_TABLE)


def test_rfc_7541_c4_requests_with_huffman_coding_and_the_dynamic_table() -> None:
    decoder = Decoder()
    first = bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff")
    second = bytes.fromhex("828684be5886a8eb10649cbf")
    third = bytes.fromhex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf")
    base = [(":method", "GET"), (":scheme", "http"), (":path", "/")]
    assert decoder.decode(first) == (
        [*base, (":authority", "www.example.com")],
        True,
    )
    assert decoder.decode(second) == (
        [*base, (":authority", "www.example.com"), ("cache-control", "no-cache")],
        True,
    )
    assert decoder.decode(third) == (
        [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ],
        True,
    )


def test_blocks_from_an_independent_encoder_decode_to_what_it_encoded() -> None:
    rnd = random.Random(7)
    encoder, decoder = hpack.Encoder(), Decoder()
    names = ["x-a", "x-b", "containerd-namespace", "user-agent", ":path", "grpc-timeout"]
    for _ in range(300):
        fields = [
            (
                rnd.choice(names),
                "".join(chr(rnd.randrange(32, 127)) for _ in range(rnd.randrange(0, 300))),
            )
            for _ in range(rnd.randrange(1, 8))
        ]
        block = encoder.encode(fields, huffman=rnd.random() < 0.5)
        assert decoder.decode(block) == (fields, True)


def test_huffman_decoding_agrees_with_the_hpack_package_for_every_octet() -> None:
    coder = hpack.huffman.HuffmanEncoder(
        hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
    )
    everything = bytes(range(256))
    assert huffman_decode(coder.encode(everything)) == everything
    assert huffman_decode(coder.encode(b"")) == b""


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0
        b"\xbe",  # index 62: the dynamic table is empty
        b"\xff\xff\xff\xff\xff\xff\xff\x7f",  # an integer over 5 octets
        b"\xff\x80",  # an integer cut short
        b"\x00\x05ab",  # a name cut short
        b"\x00\x01a\x7f",  # a value length cut short
        b"\x3f\xe2\x1f",  # a table size update to 4,097
        b"\x82\x20",  # a table size update after a field
        b"\x00\x81\xff\x00",  # Huffman: EOS padding longer than 7 bits
        b"\x00\x84\xff\xff\xff\xff\x00",  # Huffman: EOS inside the string
        b"\x00\x81\x00\x00",  # Huffman: padding that is not ones
    ],
)
def test_a_bad_block_is_refused(block: bytes) -> None:
    with pytest.raises(HpackError):
        Decoder().decode(block)


def test_a_list_over_the_limit_is_decoded_but_not_kept() -> None:
    decoder = Decoder(4096)
    block = b"\x40\x01a\x05hello" + b"\x00\x01b" + integer(5000, 7) + b"x" * 5000
    assert decoder.decode(block) == ([], False)
    # The entry the oversized block added is in the table all the same.
    assert decoder.decode(b"\xbe") == ([("a", "hello")], True)


def test_table_size_updates_evict_and_entries_larger_than_the_table_empty_it() -> None:
    decoder = Decoder()
    decoder.decode(b"\x40\x01a\x01b")
    assert decoder.decode(b"\xbe")[0] == [("a", "b")]
    decoder.decode(b"\x20")  # size 0: everything evicted
    with pytest.raises(HpackError):
        decoder.decode(b"\xbe")
    decoder.decode(b"\x3f\x11")  # size 48: room for one small entry
    decoder.decode(b"\x40\x01c" + integer(100, 7) + b"d" * 100)
    with pytest.raises(HpackError):
        decoder.decode(b"\xbe")


def test_response_literals_are_what_an_independent_decoder_reads() -> None:
    block = b"\x88" + literal(b"grpc-status", b"0") + literal(b"grpc-message", b"x" * 300)
    assert hpack.Decoder().decode(block) == [
        (":status", "200"),
        ("grpc-status", "0"),
        ("grpc-message", "x" * 300),
    ]


def test_a_remembered_block_is_forgotten_when_the_table_changes() -> None:
    decoder = Decoder()
    decoder.decode(b"\x40\x01a\x01b")  # a: b at index 62
    assert decoder.decode(b"\xbe")[0] == [("a", "b")]
    assert decoder.decode(b"\xbe")[0] == [("a", "b")]  # remembered
    decoder.decode(b"\x40\x01c\x01d")  # c: d at 62, a: b at 63
    assert decoder.decode(b"\xbe")[0] == [("c", "d")]
    assert decoder.decode(b"\xbf")[0] == [("a", "b")]
