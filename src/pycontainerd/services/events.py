"""The local events service: what the Events API does with the exchange.

A client's Publish goes out in its namespace, a Forward is re-broadcast as
it came (from a shim or another daemon), and a subscription yields the
envelopes its filters match.  containerd's events service has no local
plugin of its own; this one exists so that every transport reaches the
exchange the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from google.protobuf import any_pb2

from pycontainerd import errdefs, namespaces, plugin
from pycontainerd.events import Envelope, Exchange

__all__ = ["EventsService"]

ID = "events-service"


class EventsService:
    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def publish(self, topic: str, event: any_pb2.Any | None) -> None:
        """Publish a client's event in the namespace of the call."""
        ns = namespaces.required()
        if event is None:
            raise errdefs.InvalidArgument("event must not be empty")
        await self._exchange.publish(topic, event, namespace=ns)

    async def forward(self, envelope: Envelope) -> None:
        await self._exchange.forward(envelope)

    def subscribe(self, filters: Sequence[str]) -> AsyncIterator[Envelope]:
        return self._exchange.subscribe(filters)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SERVICE, id=ID, init=lambda ctx: EventsService(ctx.events)
    )
)
