"""Forward an event over a daemon's ttrpc socket and see it on its gRPC
events stream: the same check against our daemon and against containerd."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

from google.protobuf import message

from pycontainerd import namespaces, ttrpc, typeurl
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2 as ttrpc_events_pb2
from pycontainerd.client import AsyncClient
from pycontainerd.events.exchange import Envelope

EVENTS = "containerd.services.events.ttrpc.v1.Events"


def forward_request(namespace: str, topic: str, event: message.Message) -> bytes:
    req = ttrpc_events_pb2.ForwardRequest()
    req.envelope.namespace = namespace
    req.envelope.topic = topic
    req.envelope.timestamp.FromDatetime(dt.datetime.now(dt.UTC))
    req.envelope.event.CopyFrom(typeurl.marshal_any(event))
    return req.SerializeToString()


async def forward_until_seen(
    grpc_address: str,
    publish: object,
    filter_: str,
    *,
    timeout: float = 20,
) -> Envelope:
    """Subscribe on ``grpc_address`` with ``filter_``, then call the
    coroutine function ``publish`` every 200 ms until an event arrives (a
    subscription is live only once its stream is open); the first envelope."""
    seen: asyncio.Queue[Envelope] = asyncio.Queue()

    async def listen() -> None:
        async with AsyncClient(grpc_address, namespaces.DEFAULT) as client:
            async for env in client.events.subscribe(filter_):
                seen.put_nowait(env)

    listener = asyncio.ensure_future(listen())
    try:
        async with asyncio.timeout(timeout):
            while seen.empty():
                if listener.done():
                    listener.result()  # raise why it ended
                await publish()  # type: ignore[operator]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        return await seen.get()
            return seen.get_nowait()
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def ttrpc_forward(ttrpc_address: str, data: bytes, namespace: str = "default") -> bytes:
    async with await ttrpc.Client.connect(ttrpc_address, timeout=10) as client:
        return await client.call(
            EVENTS, "Forward", data, metadata=[(namespaces.TTRPC_HEADER, namespace)], timeout=10
        )
