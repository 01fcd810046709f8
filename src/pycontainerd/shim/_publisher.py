"""Task events to the daemon, over its ttrpc socket, in order, surviving restarts.

The Go shim forwards each event with
``containerd.services.events.ttrpc.v1.Events/Forward``, the namespace in
the ``containerd-namespace-ttrpc`` metadata.  Here events go through one
queue drained by one task: while the daemon is down (restarting) the queue
holds them and the task reconnects with a growing pause (0.1 s to 2 s);
past :data:`MAX_QUEUED` events the oldest are dropped (and logged), so a
daemon that never comes back costs bounded memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from google.protobuf import any_pb2
from google.protobuf.message import Message

from pycontainerd import ttrpc
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2

__all__ = ["Publisher", "topic_of"]

log = logging.getLogger(__name__)

MAX_QUEUED = 4096
FORWARD_TIMEOUT = 10.0
EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
NAMESPACE_HEADER = "containerd-namespace-ttrpc"

_TOPICS = {
    "TaskCreate": "/tasks/create",
    "TaskStart": "/tasks/start",
    "TaskExit": "/tasks/exit",
    "TaskDelete": "/tasks/delete",
    "TaskOOM": "/tasks/oom",
    "TaskExecAdded": "/tasks/exec-added",
    "TaskExecStarted": "/tasks/exec-started",
    "TaskPaused": "/tasks/paused",
    "TaskResumed": "/tasks/resumed",
    "TaskCheckpointed": "/tasks/checkpointed",
}


def topic_of(event: Message) -> str:
    return _TOPICS[event.DESCRIPTOR.name]


class Publisher:
    def __init__(self, address: str) -> None:
        self._address = address.removeprefix("unix://")
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def publish(self, namespace: str, event: Message) -> None:
        if not self._address:
            return
        now = time.time_ns()
        request = events_pb2.ForwardRequest()
        envelope = request.envelope
        envelope.timestamp.seconds, envelope.timestamp.nanos = divmod(now, 1_000_000_000)
        envelope.namespace = namespace
        envelope.topic = topic_of(event)
        envelope.event.CopyFrom(
            any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())
        )
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self.dropped += 1
            log.warning("event queue full: dropped the oldest event (%d so far)", self.dropped)
        self._queue.append((namespace, request.SerializeToString()))
        self._wake.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        client: ttrpc.Client | None = None
        pause = 0.1
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if client is None or client.closed:
                    client = await ttrpc.Client.connect(self._address, timeout=5)
                    pause = 0.1
                namespace, data = self._queue[0]
                await client.call(
                    EVENTS_SERVICE,
                    "Forward",
                    data,
                    metadata=[(NAMESPACE_HEADER, namespace)],
                    timeout=FORWARD_TIMEOUT,
                )
                self._queue.popleft()
            except ttrpc.StatusError as exc:
                if exc.code in (ttrpc.Code.UNAVAILABLE, ttrpc.Code.DEADLINE_EXCEEDED):
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                log.warning("the daemon refused an event: %s", exc)
                self._queue.popleft()
            except (OSError, TimeoutError, ttrpc.TTRPCError):
                if client is not None:
                    await _close(client)
                    client = None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every queued event is delivered."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


async def _close(client: ttrpc.Client) -> None:
    try:
        await client.close()
    except Exception:
        log.debug("closing the events connection failed", exc_info=True)
