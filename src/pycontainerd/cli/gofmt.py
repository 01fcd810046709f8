"""Values rendered the way ctr, a Go program, renders them.

pyctr's output is meant to be interchangeable with ctr's, so the few places
where Go's standard library decides the bytes are reproduced here:

- :func:`time_string` is ``time.Time.String()`` (the timestamp column of
  ``ctr events``), :func:`rfc3339nano` is how ``encoding/json`` writes a time;
- :func:`marshal_event` is ``encoding/json.Marshal`` of containerd's
  gogo-generated event structs: proto field names, declaration order, empty
  fields omitted (``omitempty``), map keys sorted, 64-bit integers as
  numbers, bytes as base64, ``Any`` as ``{"type_url":…,"value":…}``, a
  timestamp as an RFC 3339 string (always present: containerd declares its
  event timestamps non-nullable), and ``<``, ``>``, ``&`` escaped;
- :func:`parse_duration` reads ``time.ParseDuration`` values (ctr's
  ``--timeout 10s``), and also bare seconds;
- :func:`code_name` is ``codes.Code.String()`` of grpc-go.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from pycontainerd.times import EPOCH

__all__ = [
    "code_name",
    "marshal_event",
    "parse_duration",
    "rfc3339nano",
    "time_string",
]


def _split_ns(when: dt.datetime, nanos: int | None) -> tuple[dt.datetime, int]:
    utc = when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)
    ns = utc.microsecond * 1000 if nanos is None else nanos
    return utc.replace(microsecond=0), ns


def _fraction(ns: int) -> str:
    """Go's ``.999999999``: trailing zeros dropped, and the dot with them."""
    digits = f"{ns:09d}".rstrip("0")
    return f".{digits}" if digits else ""


def _date_time(utc: dt.datetime, sep: str) -> str:
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}{sep}"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )


def time_string(when: dt.datetime, nanos: int | None = None) -> str:
    """``2026-11-23 09:28:33.593035 +0000 UTC``, in UTC as ctr prints event times.

    ``nanos`` overrides the sub-second part when the source had nanoseconds.
    """
    utc, ns = _split_ns(when, nanos)
    return f"{_date_time(utc, ' ')}{_fraction(ns)} +0000 UTC"


def rfc3339nano(when: dt.datetime, nanos: int | None = None) -> str:
    """``2026-11-23T09:28:33.593035123Z`` (Go's ``time.RFC3339Nano`` in UTC)."""
    utc, ns = _split_ns(when, nanos)
    return f"{_date_time(utc, 'T')}{_fraction(ns)}Z"


_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, for an absent timestamp


def _timestamp_json(seconds: int, nanos: int) -> str:
    try:
        when = EPOCH + dt.timedelta(seconds=seconds)
    except OverflowError:
        return _quote(_ZERO_TIME)
    return _quote(rfc3339nano(when, nanos))


def _quote(s: str) -> str:
    """A JSON string as Go 1.19's encoding/json writes it (HTML-safe)."""
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif cp < 0x20 or ch in "<>&\u2028\u2029":
            out.append(f"\\u{cp:04x}")
        elif 0xD800 <= cp <= 0xDFFF:
            out.append("\ufffd")  # Go replaces invalid UTF-8 with U+FFFD
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return "null"  # encoding/json refuses these; never seen in events
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def _scalar(field: Any, value: object) -> str:
    # ``field`` is a FieldDescriptor (the upb and pure-Python classes differ).
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert isinstance(value, Message)
        return marshal_event(value)
    if field.type == FieldDescriptor.TYPE_STRING:
        return _quote(str(value))
    if field.type == FieldDescriptor.TYPE_BYTES:
        assert isinstance(value, bytes)
        return _quote(base64.b64encode(value).decode("ascii"))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        assert isinstance(value, float)
        return _float(value)
    assert isinstance(value, int)
    return str(value)  # integers and enums: Go writes numbers, 64-bit too


def marshal_event(message: Message) -> str:
    """``json.Marshal`` of the Go struct containerd generates for ``message``."""
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        return _timestamp_json(getattr(message, "seconds", 0), getattr(message, "nanos", 0))
    parts: list[str] = []
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        msg_type = field.message_type
        if field.is_repeated and msg_type is not None and msg_type.GetOptions().map_entry:
            if not value:
                continue
            # Go sorts map keys as strings (integer keys by their decimal form).
            val_f = msg_type.fields_by_name["value"]
            items = sorted((str(k), v) for k, v in value.items())
            rendered = "{" + ",".join(f"{_quote(k)}:{_scalar(val_f, v)}" for k, v in items) + "}"
        elif field.is_repeated:
            if not value:
                continue
            rendered = "[" + ",".join(_scalar(field, v) for v in value) + "]"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if not message.HasField(field.name):
                if msg_type is None or msg_type.full_name != "google.protobuf.Timestamp":
                    continue
                rendered = _quote(_ZERO_TIME)
            else:
                rendered = _scalar(field, value)
        else:
            present = message.HasField(field.name) if field.has_presence else bool(value)
            if not present:
                continue
            rendered = _scalar(field, value)
        parts.append(f"{_quote(field.name)}:{rendered}")
    return "{" + ",".join(parts) + "}"


_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    # Go accepts both micro signs (U+00B5 and U+03BC).
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``1m30s``, ``500ms``) or a bare number (``2.5``)."""
    s = text.strip()
    try:
        seconds = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"invalid duration {text!r}")
        return seconds
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


_CODE_NAMES = (
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
)


def code_name(code: int) -> str:
    """A gRPC status code as grpc-go prints it (``NotFound``, ``Code(99)``)."""
    return _CODE_NAMES[code] if 0 <= code < len(_CODE_NAMES) else f"Code({code})"
