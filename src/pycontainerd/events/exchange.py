"""The event exchange: publish, forward, and subscribe with filters.

Events are held as envelopes (timestamp, namespace, topic, and the event as a
``google.protobuf.Any``), as containerd keeps them, so forwarding an event
from a shim or another daemon never needs to decode it.  Subscribers filter
with containerd's filter language over ``topic``, ``namespace`` and
``event.<field>``; the event is decoded only when a filter looks inside it.

Each subscriber has its own queue of the envelopes it has not taken yet,
bounded by :data:`MAX_QUEUED_BYTES` (4 MiB: payloads plus a fixed allowance
per envelope) and :data:`MAX_QUEUED_EVENTS` (4,096).  A subscriber whose
next envelope would go over either bound is dropped: its queue is freed at
once, a warning names its filters and what it had queued, and its stream
ends with ``Unavailable``.  The envelope being sent counts until its send
is done.  An envelope larger than the bound on its own still reaches a
subscriber with nothing else waiting, so one subscriber holds at most the
bound, or two envelopes when they are larger (one being sent, one waiting;
an envelope is at most the daemon's largest request, 16 MiB by default,
and is shared by every subscriber it goes to).

A subscriber that stops reading fills this queue and nothing else: the gRPC
stream sends an envelope only as the client's HTTP/2 flow-control window
allows, and the next one is not taken from the queue until that send is
done.

Filters run as the subscriber takes envelopes, not as they are published:
a publisher never waits on someone else's regexp, and a filter with a
regexp runs on the filter pool (see :func:`filters.select`).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

from pycontainerd import errdefs, filters, identifiers, namespaces, typeurl
from pycontainerd.protofields import message_field

__all__ = ["ZERO_TIME", "Envelope", "Exchange", "validate_topic"]

log = logging.getLogger(__name__)

#: Bytes of envelopes one subscriber may have queued (payload, topic and
#: namespace, plus :data:`ENVELOPE_OVERHEAD` each).
MAX_QUEUED_BYTES = 4 << 20

#: Go's zero time: the timestamp of an envelope that carries none, which
#: Forward refuses as containerd does.
ZERO_TIME = dt.datetime(1, 1, 1, tzinfo=dt.UTC)

#: Envelopes one subscriber may have queued.
MAX_QUEUED_EVENTS = 4096

#: What an envelope costs beyond its strings: the objects that carry them.
ENVELOPE_OVERHEAD = 512


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


def _cost(envelope: Envelope) -> int:
    """What an envelope holds in memory, near enough to bound a queue by."""
    return (
        envelope.event.ByteSize()
        + len(envelope.topic)
        + len(envelope.namespace)
        + ENVELOPE_OVERHEAD
    )


def _fields(envelope: Envelope) -> filters.AdaptorLike:
    return envelope


class _Subscriber:
    """One subscription's filter and queue.

    The envelope :meth:`next` returned stays queued, and counted, until the
    following call: until then it is being sent.
    """

    __slots__ = ("dropped", "filter", "filter_strings", "queue", "queued_bytes", "ready", "sending")

    def __init__(self, flt: filters.Filter, filter_strings: Sequence[str]) -> None:
        self.filter = flt
        self.filter_strings = list(filter_strings)
        self.queue: collections.deque[tuple[Envelope, int]] = collections.deque()
        self.queued_bytes = 0
        self.ready = asyncio.Event()
        self.sending = False
        self.dropped = False

    def offer(self, envelope: Envelope, cost: int, *, max_bytes: int, max_events: int) -> bool:
        """Queue ``envelope``, or say False when that would go over the bounds."""
        waiting = len(self.queue) - self.sending
        if waiting and (len(self.queue) >= max_events or self.queued_bytes + cost > max_bytes):
            return False
        self.queue.append((envelope, cost))
        self.queued_bytes += cost
        self.ready.set()
        return True

    def drop(self) -> None:
        """Free the queue now; the reader's next step raises Unavailable."""
        self.dropped = True
        self.queue.clear()
        self.queued_bytes = 0
        self.ready.set()

    async def next(self) -> Envelope:
        """The next queued envelope the filter matches."""
        if self.sending:
            self.sending = False
            self._pop()
        while True:
            if self.dropped:
                raise errdefs.Unavailable("event subscriber fell too far behind")
            if not self.queue:
                self.ready.clear()
                await self.ready.wait()
                continue
            if await self._head_matches():
                self.sending = True
                return self.queue[0][0]
            self._pop()

    async def _head_matches(self) -> bool:
        # Its own frame, so a skipped envelope is not kept alive by a local
        # while the subscriber waits for the next one.
        matched = await filters.select(self.filter, (self.queue[0][0],), _fields)
        return bool(matched) and not self.dropped

    def _pop(self) -> None:
        # A drop may have emptied the queue while the head was in flight.
        if self.queue:
            self.queued_bytes -= self.queue.popleft()[1]


class Exchange:
    """Broadcasts envelopes to every subscriber whose filters match."""

    def __init__(
        self,
        *,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        max_queued_events: int = MAX_QUEUED_EVENTS,
    ) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._max_bytes = max_queued_bytes
        self._max_events = max_queued_events

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
        if envelope.timestamp == ZERO_TIME:
            raise errdefs.InvalidArgument("timestamp must be set on forwarded event")
        try:
            validate_topic(envelope.topic)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(
                f"envelope topic {errdefs.q(envelope.topic)}: {exc.message}"
            ) from None
        self._broadcast(envelope)

    def _broadcast(self, envelope: Envelope) -> None:
        cost = _cost(envelope)
        for sub in list(self._subscribers):
            if sub.offer(envelope, cost, max_bytes=self._max_bytes, max_events=self._max_events):
                continue
            log.warning(
                "event subscriber fell too far behind; dropped",
                extra={
                    "filters": sub.filter_strings,
                    "queued_events": len(sub.queue),
                    "queued_bytes": sub.queued_bytes,
                },
            )
            self._subscribers.discard(sub)
            sub.drop()

    async def subscribe(self, filter_strings: Sequence[str] = ()) -> AsyncIterator[Envelope]:
        """Yield matching envelopes until the caller stops iterating.

        Filters are parsed before the first event so a bad filter fails at
        once with InvalidArgument.
        """
        sub = _Subscriber(await filters.parse_async(filter_strings), filter_strings)
        self._subscribers.add(sub)
        try:
            while True:
                yield await sub.next()
        finally:
            self._subscribers.discard(sub)
            sub.drop()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
