"""Events over the events service: ``client.events``.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from pycontainerd import errdefs, typeurl
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.wire import events as events_wire

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from pycontainerd.client._async.client import _Call
    from pycontainerd.events.exchange import Envelope

__all__ = ["AsyncEvents"]


class AsyncEvents:
    """``client.events``: publish and subscribe."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._stub = events_pb2_grpc.EventsStub(call.channel)

    async def publish(self, topic: str, event: Message) -> None:
        req = events_pb2.PublishRequest(topic=topic, event=typeurl.marshal_any(event))
        await self._call.unary(self._stub.Publish, req)

    async def forward(self, envelope: Envelope) -> None:
        req = events_pb2.ForwardRequest(envelope=events_wire.to_pb(envelope))
        await self._call.unary(self._stub.Forward, req)

    async def subscribe(self, *filters: str) -> AsyncIterator[Envelope]:
        """Envelopes matching any of ``filters`` until the caller stops iterating."""
        call = self._stub.Subscribe(
            events_pb2.SubscribeRequest(filters=list(filters)), metadata=self._call.metadata()
        )
        try:
            async for msg in call:
                yield events_wire.from_pb(msg)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise errdefs.from_grpc(exc) from exc
        finally:
            call.cancel()
