"""Named streams between a client and the daemon (containerd 1.7's
``io.containerd.streaming.v1`` manager).

A client opens a stream on the Streaming API and names it in its first
message; another call then finds it by that name in the same namespace and
talks on it: a transfer sends its progress there, or asks for registry
credentials and waits for the answer.  Messages are packed (``Any``) both
ways.

Bounds: at most :data:`MAX_STREAMS` open streams; each holds at most
:data:`OUT_QUEUE` messages for the client (a progress report that finds the
queue full is dropped, so a client that stops reading never stalls a
transfer) and :data:`IN_QUEUE` from it (the client's sends wait meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from google.protobuf import any_pb2

from pycontainerd import errdefs, identifiers, namespaces, plugin

__all__ = ["IN_QUEUE", "MAX_STREAMS", "OUT_QUEUE", "Stream", "StreamManager"]

ID = "manager"
MAX_STREAMS = 1024
OUT_QUEUE = 1024
IN_QUEUE = 16

_CLOSED = None


class Stream:
    """One open stream: what goes to the client and what came from it."""

    def __init__(self, namespace: str, id: str) -> None:
        self.namespace = namespace
        self.id = id
        self._out: asyncio.Queue[any_pb2.Any | None] = asyncio.Queue(OUT_QUEUE)
        self._in: asyncio.Queue[any_pb2.Any | None] = asyncio.Queue(IN_QUEUE)
        self.closed = False

    # --- the daemon's side ----------------------------------------------------------------

    async def send(self, message: any_pb2.Any) -> None:
        """Queue a message for the client, waiting for room."""
        if self.closed:
            raise errdefs.Unavailable(f"stream {self.id} is closed")
        await self._out.put(message)

    def offer(self, message: any_pb2.Any) -> bool:
        """Queue a message if there is room now; False when it was dropped."""
        if self.closed:
            return False
        try:
            self._out.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    async def recv(self) -> any_pb2.Any:
        """The client's next message; Unavailable once it closed its side."""
        message = await self._in.get()
        if message is None:
            self._in.put_nowait(_CLOSED)  # every later recv sees the end too
            raise errdefs.Unavailable(f"stream {self.id} is closed")
        return message

    def close(self) -> None:
        """End the stream: the client's side ends once what is queued is sent."""
        if self.closed:
            return
        self.closed = True
        _put_end(self._out)
        _put_end(self._in)

    # --- the transport's side -------------------------------------------------------------

    async def deliver(self, message: any_pb2.Any) -> None:
        """A message from the client (waits while :data:`IN_QUEUE` are unread)."""
        if not self.closed:
            await self._in.put(message)

    async def outgoing(self) -> AsyncIterator[any_pb2.Any]:
        """The messages for the client, until the stream is closed."""
        while True:
            message = await self._out.get()
            if message is None:
                return
            yield message


def _put_end(queue: asyncio.Queue[any_pb2.Any | None]) -> None:
    """Put the end mark, making room for it: the end must always get through."""
    while True:
        try:
            queue.put_nowait(_CLOSED)
            return
        except asyncio.QueueFull:
            queue.get_nowait()


class StreamManager:
    """The open streams, by namespace and name."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str], Stream] = {}

    def register(self, id: str) -> Stream:
        ns = namespaces.required()
        identifiers.validate(id)
        if (ns, id) in self._streams:
            raise errdefs.AlreadyExists(f"stream {id}")
        if len(self._streams) >= MAX_STREAMS:
            raise errdefs.ResourceExhausted(f"too many open streams (at most {MAX_STREAMS})")
        stream = Stream(ns, id)
        self._streams[ns, id] = stream
        return stream

    def get(self, id: str) -> Stream:
        stream = self._streams.get((namespaces.required(), id))
        if stream is None or stream.closed:
            raise errdefs.NotFound(f"stream {id}")
        return stream

    def unregister(self, stream: Stream) -> None:
        stream.close()
        if self._streams.get((stream.namespace, stream.id)) is stream:
            del self._streams[stream.namespace, stream.id]

    def __len__(self) -> int:
        return len(self._streams)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.STREAMING,
        id=ID,
        init=lambda ctx: StreamManager(),
    )
)
