"""Reading a protobuf message by field path, for filters over messages.

containerd's filter adaptors expose an event's fields by their proto names
(``event.container_id``, ``event.labels."a.b"``); this walks a message the
same way so any event type can be filtered without a hand-written adaptor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

__all__ = ["message_field"]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def message_field(message: Message, path: Sequence[str]) -> tuple[str, bool]:
    """The value at ``path`` as a string and whether it is present."""
    current: Any = message
    for i, name in enumerate(path):
        if isinstance(current, Message):
            fields = current.DESCRIPTOR.fields_by_name
            if name not in fields:
                return "", False
            fd = fields[name]
            value = getattr(current, name)
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                rest = path[i + 1 :]
                if not rest:
                    return "", len(value) > 0
                key = ".".join(rest)
                if key in value:
                    item = value[key]
                    return (_scalar(item), True) if not isinstance(item, Message) else ("", True)
                return "", False
            if fd.message_type is not None and not fd.is_repeated and not current.HasField(name):
                return "", False
            current = value
        else:
            return "", False
    if isinstance(current, Message):
        return "", True
    return _scalar(current), True
