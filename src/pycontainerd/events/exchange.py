"""The event exchange: publish, forward, and subscribe with filters.

Events are held as envelopes (timestamp, namespace, topic, and the event as a
``google.protobuf.Any``), as containerd keeps them, so forwarding an event
from a shim or another daemon never needs to decode it.  Subscribers filter
with containerd's filter language over ``topic``, ``namespace`` and
``event.<field>``; the event is decoded only when a filter looks inside it.

Each subscriber has its own bounded queue; one that falls too far behind is
dropped with ``Unavailable`` rather than letting the daemon's memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

from pycontainerd import errdefs, filters, identifiers, namespaces, typeurl
from pycontainerd.protofields import message_field

__all__ = ["Envelope", "Exchange", "validate_topic"]

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 4096


@dataclass(frozen=True, slots=True)
class Envelope:
    timestamp: dt.datetime
    namespace: str
    topic: str
    event: any_pb2.Any

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        """containerd's envelope adaptor: topic, namespace, event.<field...>."""
        if not path:
            return "", False
        head = path[0]
        if head == "topic":
            return self.topic, len(path) == 1
        if head == "namespace":
            return self.namespace, len(path) == 1
        if head == "event" and len(path) > 1:
            try:
                decoded = typeurl.unmarshal_any(self.event)
            except errdefs.ContainerdError:
                return "", False
            return message_field(decoded, path[1:])
        return "", False


def validate_topic(topic: str) -> None:
    """Topics are ``/``-separated identifiers: ``/tasks/exit``."""
    if not topic:
        raise errdefs.InvalidArgument("must not be empty")
    if not topic.startswith("/"):
        raise errdefs.InvalidArgument("must start with '/'")
    if len(topic) == 1:
        raise errdefs.InvalidArgument("must have at least one component")
    for component in topic[1:].split("/"):
        try:
            identifiers.validate(component)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(
                f"failed validation on component {errdefs.q(component)}: {exc.message}"
            ) from None


class _Subscriber:
    __slots__ = ("closed", "filter", "queue")

    def __init__(self, flt: filters.Filter) -> None:
        self.filter = flt
        self.queue: asyncio.Queue[Envelope | BaseException] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.closed = False


class Exchange:
    """Broadcasts envelopes to every subscriber whose filters match."""

    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()

    async def publish(
        self, topic: str, event: Message | any_pb2.Any, *, namespace: str | None = None
    ) -> None:
        """Publish an event (a message, or one already packed) now, in the
        context's namespace or the one given."""
        ns = namespace if namespace is not None else namespaces.required()
        packed = event if isinstance(event, any_pb2.Any) else typeurl.marshal_any(event)
        await self.forward(
            Envelope(timestamp=dt.datetime.now(dt.UTC), namespace=ns, topic=topic, event=packed)
        )

    async def forward(self, envelope: Envelope) -> None:
        """Re-broadcast an envelope made elsewhere (a shim, another daemon)."""
        namespaces.validate(envelope.namespace)
        try:
            validate_topic(envelope.topic)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(
                f"envelope topic {errdefs.q(envelope.topic)}: {exc.message}"
            ) from None
        self._broadcast(envelope)

    def _broadcast(self, envelope: Envelope) -> None:
        for sub in list(self._subscribers):
            if sub.closed:
                continue
            try:
                if not sub.filter.match(envelope.field):
                    continue
            except Exception:  # a filter must never break publishing
                log.exception("event filter failed", extra={"topic": envelope.topic})
                continue
            try:
                sub.queue.put_nowait(envelope)
            except asyncio.QueueFull:
                sub.closed = True
                self._subscribers.discard(sub)
                # Make room for the error so the reader sees why it stopped.
                with contextlib.suppress(asyncio.QueueEmpty):
                    sub.queue.get_nowait()
                sub.queue.put_nowait(errdefs.Unavailable("event subscriber fell too far behind"))

    async def subscribe(self, filter_strings: Sequence[str] = ()) -> AsyncIterator[Envelope]:
        """Yield matching envelopes until the caller stops iterating.

        Filters are parsed before the first event so a bad filter fails at
        once with InvalidArgument.
        """
        sub = _Subscriber(filters.parse_all(list(filter_strings)))
        self._subscribers.add(sub)
        try:
            while True:
                item = await sub.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            sub.closed = True
            self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
