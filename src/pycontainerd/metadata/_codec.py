"""How values are spelled in the database's columns (see ``db.py``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from google.protobuf import any_pb2

from pycontainerd._sqlite import EMPTY_MAP, dump_map, load_map, to_datetime

__all__ = [
    "dump_any",
    "dump_any_map",
    "dump_map",
    "load_any",
    "load_any_map",
    "load_map",
    "to_datetime",
]


def dump_any(value: any_pb2.Any | None) -> bytes | None:
    return None if value is None else value.SerializeToString()


def load_any(blob: bytes | None) -> any_pb2.Any | None:
    return None if blob is None else any_pb2.Any.FromString(blob)


def dump_any_map(m: Mapping[str, any_pb2.Any]) -> str:
    """``map<string, Any>`` as JSON: name -> [type_url, base64 value]."""
    if not m:
        return EMPTY_MAP
    return json.dumps(
        {k: [v.type_url, base64.b64encode(v.value).decode()] for k, v in m.items()},
        sort_keys=True,
    )


def load_any_map(text: str) -> dict[str, any_pb2.Any]:
    if text == EMPTY_MAP:
        return {}
    return {
        k: any_pb2.Any(type_url=url, value=base64.b64decode(value))
        for k, (url, value) in json.loads(text).items()
    }
