"""containerd.services.streaming.v1.Streaming over the stream manager.

The client's first message is a packed ``StreamInit`` naming the stream;
the daemon answers with a packed ``google.protobuf.Empty`` once the name is
registered, then relays: the client's messages to whoever reads the stream,
the daemon's to the client.  The stream ends when the client closes its
side or goes away, or the daemon closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from google.protobuf import any_pb2, empty_pb2

from pycontainerd import errdefs, plugin, typeurl
from pycontainerd.api.services.streaming.v1 import streaming_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services.streaming import ID, Stream, StreamManager

__all__ = ["StreamingAPI"]

STREAM_INIT = pb.StreamInit.DESCRIPTOR.full_name


class StreamingAPI:
    def __init__(self, manager: StreamManager) -> None:
        self._manager = manager

    def methods(self) -> list[Method]:
        return describe(pb.DESCRIPTOR.services_by_name["Streaming"], {"Stream": self.stream})

    async def stream(
        self, requests: AsyncIterator[any_pb2.Any], call: Call
    ) -> AsyncIterator[any_pb2.Any]:
        first = await anext(requests, None)
        if first is None:
            return
        if not typeurl.is_a(first, pb.StreamInit):
            raise errdefs.InvalidArgument(
                f"first message on a stream must be a {STREAM_INIT}, not {first.type_url!r}"
            )
        init = pb.StreamInit.FromString(first.value)
        stream = self._manager.register(init.id)
        relay = asyncio.ensure_future(_relay(requests, stream))
        try:
            yield typeurl.marshal_any(empty_pb2.Empty())
            async for message in stream.outgoing():
                yield message
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await relay
            self._manager.unregister(stream)


async def _relay(requests: AsyncIterator[any_pb2.Any], stream: Stream) -> None:
    """The client's messages into the stream; its end (or failure) closes it."""
    try:
        async for message in requests:
            await stream.deliver(message)
    finally:
        stream.close()


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="streaming",
        init=lambda ctx: StreamingAPI(ctx.plugins.get_by_id(plugin.PluginType.STREAMING, ID)),
        requires=(plugin.PluginType.STREAMING,),
    )
)
