"""``google.protobuf.Any`` the way containerd spells it.

containerd names a packed message by its bare full name
(``containerd.events.TaskExit``), without the ``type.googleapis.com/`` prefix
that ``Any.Pack`` adds, and Go clients look types up by exactly that string.
A few types are registered under other URLs (the OCI runtime spec travels as
JSON under ``types.containerd.io/opencontainers/runtime-spec/1/Spec``); they
are added with :func:`register`.
"""

from __future__ import annotations

from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message

from pycontainerd import errdefs

__all__ = ["is_a", "marshal_any", "register", "type_url", "unmarshal_any"]

_by_url: dict[str, type[Message]] = {}
_by_type: dict[type[Message], str] = {}
_GOOGLE_PREFIX = "type.googleapis.com/"


def register(message_type: type[Message], url: str) -> None:
    """Give a message type a URL other than its full name."""
    _by_url[url] = message_type
    _by_type[message_type] = url


def type_url(message: Message | type[Message]) -> str:
    cls = message if isinstance(message, type) else type(message)
    return _by_type.get(cls) or cls.DESCRIPTOR.full_name


def is_a(value: any_pb2.Any, message_type: type[Message]) -> bool:
    """Whether ``value`` packs a ``message_type``, named containerd's way or
    with the ``type.googleapis.com/`` prefix Python and grpc-go add."""
    return value.type_url.removeprefix(_GOOGLE_PREFIX) == type_url(message_type)


def marshal_any(message: Message) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url(message), value=message.SerializeToString())


def _lookup(url: str) -> type[Message]:
    if url in _by_url:
        return _by_url[url]
    name = url.removeprefix(_GOOGLE_PREFIX)
    try:
        cls: type[Message] = symbol_database.Default().GetSymbol(name)
    except KeyError:
        raise errdefs.NotFound(f"type with url {url}") from None
    return cls


def unmarshal_any(value: any_pb2.Any) -> Message:
    """Decode an Any whose type is known (imported) in this process."""
    msg = _lookup(value.type_url)()
    msg.ParseFromString(value.value)
    return msg
