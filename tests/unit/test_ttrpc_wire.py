"""ttrpc's frames and envelopes, byte for byte.

The envelopes are encoded by hand; protobuf's own encoder, given the same
message definitions (ttrpc's request.proto, google.rpc.Status), is the
reference they are checked against, both ways.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.rpc import status_pb2

from pycontainerd.ttrpc import _wire as wire
from pycontainerd.ttrpc._wire import (
    EnvelopeError,
    Frame,
    FrameReader,
    Oversized,
    Request,
    Response,
    WireStatus,
)

pytestmark = pytest.mark.unit


def _reference_messages() -> dict[str, Any]:
    """ttrpc's request.proto, compiled by protobuf itself."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(status_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="ttrpc/request.proto",
        package="ttrpc",
        syntax="proto3",
        dependency=["google/rpc/status.proto"],
    )
    string, bytes_, int64, message = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    )
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

    def add(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        msg = proto.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name

    add(
        "Request",
        [
            ("service", 1, string, optional, ""),
            ("method", 2, string, optional, ""),
            ("payload", 3, bytes_, optional, ""),
            ("timeout_nano", 4, int64, optional, ""),
            ("metadata", 5, message, repeated, ".ttrpc.KeyValue"),
        ],
    )
    add(
        "Response",
        [
            ("status", 1, message, optional, ".google.rpc.Status"),
            ("payload", 2, bytes_, optional, ""),
        ],
    )
    add("KeyValue", [("key", 1, string, optional, ""), ("value", 2, string, optional, "")])
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"ttrpc.{name}"))
        for name in ("Request", "Response", "KeyValue")
    }


REF = _reference_messages()


# --- frames ----------------------------------------------------------------------------


def test_frame_header_is_length_stream_type_flags_big_endian() -> None:
    data = wire.frame(0x01020304, 3, 0x05, b"abc")
    assert data == b"\x00\x00\x00\x03\x01\x02\x03\x04\x03\x05abc"
    assert wire.HEADER_LENGTH == 10
    assert wire.MAX_MESSAGE_LENGTH == 4 * 1024 * 1024


def test_frames_are_reassembled_across_arbitrary_splits() -> None:
    stream = wire.frame(1, 1, 0, b"hello") + wire.frame(3, 3, 1, b"") + wire.frame(5, 2, 0, b"x")
    for size in (1, 2, 3, 7, 10, 11, len(stream)):
        reader = FrameReader()
        frames = []
        for i in range(0, len(stream), size):
            frames += reader.feed(stream[i : i + size])
        assert frames == [Frame(1, 1, 0, b"hello"), Frame(3, 3, 1, b""), Frame(5, 2, 0, b"x")]
        assert reader.buffered == 0


def test_an_oversized_frame_is_reported_from_its_header_and_never_held() -> None:
    reader = FrameReader()
    length = (4 << 30) - 1  # a peer claiming 4 GiB
    events = reader.feed(wire.HEADER.pack(length, 7, 1, 0))
    # Refused as soon as the header is in: nothing of the data has arrived.
    assert events == [Oversized(7, 1, 0, length)]
    chunk = b"\0" * (1 << 20)
    for _ in range(8):
        assert reader.feed(chunk) == []
        assert reader.buffered == 0
    # The rest is skipped without being read into memory, then framing resumes.
    reader2 = FrameReader(max_length=16)
    events = reader2.feed(wire.HEADER.pack(20, 9, 1, 0) + b"x" * 15)
    assert events == [Oversized(9, 1, 0, 20)] and reader2.buffered == 0
    assert reader2.feed(b"y" * 5 + wire.frame(11, 1, 0, b"ok")) == [Frame(11, 1, 0, b"ok")]


def test_a_frame_of_exactly_the_limit_is_accepted() -> None:
    reader = FrameReader(max_length=8)
    assert reader.feed(wire.frame(1, 1, 0, b"12345678")) == [Frame(1, 1, 0, b"12345678")]


def test_oversized_frame_and_the_next_frame_in_one_read() -> None:
    reader = FrameReader(max_length=4)
    data = wire.HEADER.pack(6, 1, 1, 0) + b"abcdef" + wire.frame(3, 1, 0, b"ok")
    assert reader.feed(data) == [Oversized(1, 1, 0, 6), Frame(3, 1, 0, b"ok")]


# --- envelopes ---------------------------------------------------------------------------


def _ref_request(request: Request) -> Any:
    msg = REF["Request"](
        service=request.service,
        method=request.method,
        payload=request.payload or b"",
        timeout_nano=request.timeout_nano,
    )
    for key, value in request.metadata:
        msg.metadata.add(key=key, value=value)
    return msg


@pytest.mark.parametrize(
    "request_",
    [
        Request("containerd.task.v2.Task", "Create", b"\x0a\x01x"),
        Request("s", "m", b"p", timeout_nano=5_000_000_000),
        Request("s", "m", b"p", timeout_nano=-1),
        Request("s", "m", b"", metadata=(("containerd-namespace-ttrpc", "default"), ("k", "v"))),
        Request("sérvice", "méthod", b"\x00" * 300, metadata=(("k", "v1"), ("k", "v2"))),
    ],
)
def test_requests_encode_as_protobuf_encodes_them(request_: Request) -> None:
    ours = wire.encode_request(request_)
    reference = _ref_request(request_)
    assert REF["Request"].FromString(ours) == reference
    decoded = wire.decode_request(reference.SerializeToString())
    assert decoded == Request(
        request_.service,
        request_.method,
        request_.payload or None,  # protobuf leaves an empty bytes field out
        request_.timeout_nano,
        request_.metadata,
    )


def test_a_present_empty_payload_is_kept_apart_from_no_payload() -> None:
    # A Go server hands a client-streaming handler the request's payload as
    # its first message only when the field is present.
    assert wire.decode_request(wire.encode_request(Request("s", "m", b""))).payload == b""
    assert wire.decode_request(wire.encode_request(Request("s", "m", None))).payload is None


def test_responses_encode_as_protobuf_encodes_them() -> None:
    detail = any_pb2.Any(type_url="type.googleapis.com/x.Y", value=b"\x08\x01")
    for response in (
        Response(WireStatus(), b"payload"),
        Response(WireStatus(5, "container x: not found"), b""),
        Response(WireStatus(-3, "negative code", (detail,)), b"p"),
    ):
        ours = wire.encode_response(response)
        ref = REF["Response"].FromString(ours)
        assert ref.HasField("status")
        assert (ref.status.code, ref.status.message) == (
            response.status.code,
            response.status.message,
        )
        assert [d.SerializeToString() for d in ref.status.details] == [
            d.SerializeToString() for d in response.status.details
        ]
        assert ref.payload == response.payload
        assert wire.decode_response(ref.SerializeToString()) == response


def test_an_ok_status_is_on_the_wire_even_though_it_is_empty() -> None:
    # ttrpc's Go client fails a response that has no status field at all.
    assert wire.encode_response(Response(WireStatus(), b"")) == b"\x0a\x00"
    assert wire.decode_response(b"").status is None


def test_unknown_fields_and_unexpected_wire_types_are_skipped() -> None:
    ref = REF["Request"](service="s", method="m", payload=b"p")
    data = ref.SerializeToString()
    extra = (
        b"\x30\x96\x01"  # field 6, varint
        b"\x3d\x01\x02\x03\x04"  # field 7, fixed32
        b"\x41"
        + b"\0" * 8  # field 8, fixed64
        + b"\x08\x05"  # field 1 (service) as a varint: not a string, skipped
    )
    assert wire.decode_request(data + extra) == Request("s", "m", b"p")


def test_the_last_scalar_wins_and_status_occurrences_merge() -> None:
    data = wire.encode_request(Request("first", "m")) + wire.encode_request(Request("second", ""))
    assert wire.decode_request(data).service == "second"
    response = (
        b"\x0a\x02\x08\x05"  # status {code: 5}
        b"\x0a\x03\x12\x01x"  # status {message: "x"}
    )
    assert wire.decode_response(response).status == WireStatus(5, "x")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a\x05abc", "past the end"),
        (b"\x0a", "truncated varint"),
        (b"\x20" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x0b", "wire type 3"),
        (b"\x00\x00", "field number 0"),
        (b"\x0a\x02\xc3\x28", "invalid UTF-8"),
        (b"\x3d\x01", "truncated fixed32"),
    ],
)
def test_malformed_requests_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason) as info:
        wire.decode_request(data)
    assert info.value.code == 3  # INVALID_ARGUMENT


def test_metadata_is_bounded_while_it_is_decoded() -> None:
    many = Request("s", "m", metadata=tuple((f"k{i}", "v") for i in range(129)))
    with pytest.raises(EnvelopeError, match="more than 128 entries") as info:
        wire.decode_request(wire.encode_request(many))
    assert info.value.code == 8  # RESOURCE_EXHAUSTED
    big = Request("s", "m", metadata=(("k", "v" * (64 << 10)),))
    with pytest.raises(EnvelopeError, match="more than 65536 bytes"):
        wire.decode_request(wire.encode_request(big))
    fits = Request("s", "m", metadata=tuple((f"k{i}", "v") for i in range(128)))
    assert len(wire.decode_request(wire.encode_request(fits)).metadata) == 128
