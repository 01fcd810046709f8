"""ttrpc on the wire: the frame header and the Request/Response envelopes.

A frame is a 10-byte header -- data length (u32), stream id (u32), message
type (u8), flags (u8), big-endian -- then the data.  The envelopes are
ttrpc's own protobuf messages, encoded here by hand with protobuf's wire
format (three small messages do not earn a generated module, and this
package imports nothing of pycontainerd)::

    message KeyValue { string key = 1; string value = 2; }
    message Request  { string service = 1; string method = 2; bytes payload = 3;
                       int64 timeout_nano = 4; repeated KeyValue metadata = 5; }
    message Response { google.rpc.Status status = 1; bytes payload = 2; }
    // google.rpc.Status { int32 code = 1; string message = 2;
    //                     repeated google.protobuf.Any details = 3; }

Decoding follows protobuf's rules where a peer could notice: unknown fields
and known fields of an unexpected wire type are skipped, the last value of a
scalar wins, repeated occurrences of a message field merge.  Strings must be
UTF-8.  Metadata is counted while it is decoded, so an oversized list is
refused before it is held.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from google.protobuf import any_pb2

__all__ = [
    "FLAG_NO_DATA",
    "FLAG_REMOTE_CLOSED",
    "FLAG_REMOTE_OPEN",
    "HEADER",
    "HEADER_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_ENTRIES",
    "EnvelopeError",
    "Frame",
    "FrameReader",
    "MessageType",
    "Oversized",
    "Request",
    "Response",
    "WireStatus",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "frame",
]

#: Length, stream id, message type, flags; big-endian.
HEADER = struct.Struct(">IIBB")
HEADER_LENGTH = HEADER.size
#: ttrpc's ``messageLengthMax``: the most data one frame may carry.
MAX_MESSAGE_LENGTH = 4 << 20
#: The most metadata pairs a request may carry, and their total size (keys
#: and values, in bytes).  ttrpc sets no limit of its own; containerd sends
#: one to three pairs (namespace, lease, trace context).
MAX_METADATA_ENTRIES = 128
MAX_METADATA_BYTES = 64 << 10

#: Request: non-unary, the client sends no data.  Data: the last message.
FLAG_REMOTE_CLOSED = 0x1
#: Request: non-unary, the client goes on sending data.
FLAG_REMOTE_OPEN = 0x2
#: Data: the frame carries no message (an empty close).
FLAG_NO_DATA = 0x4


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Oversized:
    """A frame longer than the limit: its data was skipped, never held."""

    stream_id: int
    type: int
    flags: int
    length: int


def frame(stream_id: int, message_type: int, flags: int, data: bytes) -> bytes:
    """One frame's bytes (the caller checks the length limit)."""
    return HEADER.pack(len(data), stream_id, message_type, flags) + data


class FrameReader:
    """Splits a byte stream into frames, without reading oversized ones.

    A frame whose header declares more than ``max_length`` bytes is reported
    as :class:`Oversized` and its data discarded as it arrives, as ttrpc's
    channel does, so the peer learns which stream failed and the connection
    goes on.  At most one frame (``max_length`` + 10 bytes) is buffered.
    """

    __slots__ = ("_buffer", "_discard", "_max_length")

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._buffer = bytearray()
        self._discard = 0
        self._max_length = max_length

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame | Oversized]:
        if self._discard:
            if len(data) <= self._discard:
                self._discard -= len(data)
                return []
            data = data[self._discard :]
            self._discard = 0
        buf = self._buffer
        buf += data
        out: list[Frame | Oversized] = []
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        with memoryview(buf) as view:
            while end - pos >= HEADER_LENGTH:
                length, stream_id, message_type, flags = unpack(view, pos)
                pos += HEADER_LENGTH
                if length > self._max_length:
                    out.append(Oversized(stream_id, message_type, flags, length))
                    skip = min(length, end - pos)
                    pos += skip
                    self._discard = length - skip
                    continue
                if end - pos < length:
                    pos -= HEADER_LENGTH
                    break
                out.append(Frame(stream_id, message_type, flags, bytes(view[pos : pos + length])))
                pos += length
        if pos:
            del buf[:pos]
        return out


# --------------------------------------------------------------------------
# Envelopes


class EnvelopeError(ValueError):
    """An envelope that cannot be decoded, or that breaks a bound.

    ``code`` is the gRPC status code a server answers it with.
    """

    def __init__(self, message: str, code: int = 3) -> None:  # INVALID_ARGUMENT
        super().__init__(message)
        self.code = code


_RESOURCE_EXHAUSTED = 8
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Request:
    service: str
    method: str
    #: ``None`` when the field is absent (a stream opened without a message).
    payload: bytes | None = None
    #: How long the caller waits, in nanoseconds; 0 for no deadline.
    timeout_nano: int = 0
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class WireStatus:
    """``google.rpc.Status``: a code as gRPC's, a message, details."""

    code: int = 0
    message: str = ""
    details: tuple[any_pb2.Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    #: ``None`` when the peer sent none: ttrpc's Go server sends none for OK.
    status: WireStatus | None
    payload: bytes = b""


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _BYTE[value]
    value &= _MASK64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_BYTE = [bytes((i,)) for i in range(0x80)]


def _field(number: int, data: bytes) -> bytes:
    # Every field here has a one-byte tag (numbers below 16).
    return _BYTE[number << 3 | _BYTES] + _varint(len(data)) + data


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    if pos < len(buf) and buf[pos] < 0x80:
        return buf[pos], pos + 1
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise EnvelopeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise EnvelopeError("varint longer than 10 bytes")


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """``(number, wire type, value)`` of each field, unknown ones included."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    end = len(buf)
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise EnvelopeError(f"invalid field number {number}")
        value: int | bytes
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire_type == _BYTES:
            length, pos = _read_varint(buf, pos)
            if length > end - pos:
                raise EnvelopeError(f"field {number}: length {length} past the end")
            value = buf[pos : pos + length]
            pos += length
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            if size > end - pos:
                raise EnvelopeError(f"field {number}: truncated fixed{size * 8}")
            value = buf[pos : pos + size]
            pos += size
        else:
            raise EnvelopeError(f"field {number}: unsupported wire type {wire_type}")
        out.append((number, wire_type, value))
    return out


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise EnvelopeError(f"{what}: invalid UTF-8") from None


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def encode_request(request: Request) -> bytes:
    parts = []
    if request.service:
        parts.append(_field(1, request.service.encode()))
    if request.method:
        parts.append(_field(2, request.method.encode()))
    if request.payload is not None:
        # Sent even when empty: a Go server then sees a message (not nil) and
        # hands it to a client-streaming handler as its first one.
        parts.append(_field(3, request.payload))
    if request.timeout_nano:
        parts.append(_varint(4 << 3 | _VARINT) + _varint(request.timeout_nano))
    for key, value in request.metadata:
        parts.append(_field(5, _field(1, key.encode()) + _field(2, value.encode())))
    return b"".join(parts)


def _key_value(data: bytes) -> tuple[str, str]:
    key = value = b""
    for number, wire_type, item in _fields(data):
        if wire_type != _BYTES:
            continue
        assert isinstance(item, bytes)
        if number == 1:
            key = item
        elif number == 2:
            value = item
    return _text(key, "metadata key"), _text(value, "metadata value")


def decode_request(
    data: bytes,
    *,
    max_entries: int = MAX_METADATA_ENTRIES,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
) -> Request:
    """The Request in ``data``; :class:`EnvelopeError` if it is not one, or
    if its metadata breaks the bounds (RESOURCE_EXHAUSTED)."""
    service = method = b""
    payload: bytes | None = None
    timeout = 0
    metadata: list[tuple[str, str]] = []
    metadata_bytes = 0
    for number, wire_type, value in _fields(data):
        if number == 4 and wire_type == _VARINT:
            assert isinstance(value, int)
            timeout = _signed(value, 64)
            continue
        if wire_type != _BYTES:
            continue
        assert isinstance(value, bytes)
        if number == 1:
            service = value
        elif number == 2:
            method = value
        elif number == 3:
            payload = value
        elif number == 5:
            metadata_bytes += len(value)
            if len(metadata) >= max_entries:
                raise EnvelopeError(
                    f"request metadata: more than {max_entries} entries", _RESOURCE_EXHAUSTED
                )
            if metadata_bytes > max_metadata_bytes:
                raise EnvelopeError(
                    f"request metadata: more than {max_metadata_bytes} bytes",
                    _RESOURCE_EXHAUSTED,
                )
            metadata.append(_key_value(value))
    return Request(
        service=_text(service, "service"),
        method=_text(method, "method"),
        payload=payload,
        timeout_nano=timeout,
        metadata=tuple(metadata),
    )


def _encode_status(status: WireStatus) -> bytes:
    parts = []
    if status.code:
        parts.append(_varint(1 << 3 | _VARINT) + _varint(status.code))
    if status.message:
        parts.append(_field(2, status.message.encode()))
    for detail in status.details:
        parts.append(_field(3, detail.SerializeToString()))
    return b"".join(parts)


def _decode_status(data: bytes) -> WireStatus:
    code = 0
    message = b""
    details = []
    for number, wire_type, value in _fields(data):
        if number == 1 and wire_type == _VARINT:
            assert isinstance(value, int)
            code = _signed(value, 32)
        elif number == 2 and wire_type == _BYTES:
            assert isinstance(value, bytes)
            message = value
        elif number == 3 and wire_type == _BYTES:
            assert isinstance(value, bytes)
            try:
                details.append(any_pb2.Any.FromString(value))
            except Exception as exc:
                raise EnvelopeError(f"status details: {exc}") from None
    return WireStatus(code, _text(message, "status message"), tuple(details))


def encode_response(response: Response) -> bytes:
    parts = []
    if response.status is not None:
        # Always present, even when empty (OK): the first ttrpc clients
        # failed a response that had no status; later ones take either.
        parts.append(_field(1, _encode_status(response.status)))
    if response.payload:
        parts.append(_field(2, response.payload))
    return b"".join(parts)


def decode_response(data: bytes) -> Response:
    status_parts: list[bytes] = []
    payload = b""
    for number, wire_type, value in _fields(data):
        if wire_type != _BYTES:
            continue
        assert isinstance(value, bytes)
        if number == 1:
            status_parts.append(value)  # occurrences of a message field merge
        elif number == 2:
            payload = value
    status = _decode_status(b"".join(status_parts)) if status_parts else None
    return Response(status=status, payload=payload)
