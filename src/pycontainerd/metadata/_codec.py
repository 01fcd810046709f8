"""How values are spelled in the database's columns (see ``db.py``)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping

from google.protobuf import any_pb2

from pycontainerd.containers import EPOCH

__all__ = [
    "dump_any",
    "dump_any_map",
    "dump_map",
    "load_any",
    "load_any_map",
    "load_map",
    "to_datetime",
]

_EMPTY_MAP = "{}"


def to_datetime(ns: int) -> dt.datetime:
    """Integer nanoseconds since the epoch as an aware UTC datetime (microseconds)."""
    return EPOCH + dt.timedelta(microseconds=ns // 1000)


def dump_map(m: Mapping[str, str]) -> str:
    """A string map as JSON, keys sorted so equal maps store equal text."""
    return json.dumps(dict(m), sort_keys=True) if m else _EMPTY_MAP


def load_map(text: str) -> dict[str, str]:
    if text == _EMPTY_MAP:
        return {}
    result: dict[str, str] = json.loads(text)
    return result


def dump_any(value: any_pb2.Any | None) -> bytes | None:
    return None if value is None else value.SerializeToString()


def load_any(blob: bytes | None) -> any_pb2.Any | None:
    return None if blob is None else any_pb2.Any.FromString(blob)


def dump_any_map(m: Mapping[str, any_pb2.Any]) -> str:
    """``map<string, Any>`` as JSON: name -> [type_url, base64 value]."""
    if not m:
        return _EMPTY_MAP
    return json.dumps(
        {k: [v.type_url, base64.b64encode(v.value).decode()] for k, v in m.items()},
        sort_keys=True,
    )


def load_any_map(text: str) -> dict[str, any_pb2.Any]:
    if text == _EMPTY_MAP:
        return {}
    return {
        k: any_pb2.Any(type_url=url, value=base64.b64decode(value))
        for k, (url, value) in json.loads(text).items()
    }
