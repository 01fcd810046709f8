"""A client that subscribes to events and stops reading must not pin the
daemon's memory: its queue is bounded (4 MiB), it is dropped when that is
full, and it learns so from ``Unavailable`` when it reads again.

The subscriber here is a real process, stopped with SIGSTOP, so nothing
reads its socket; events of 1 MiB are then published through the API while
the daemon's peak RSS (VmHWM) is watched.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from tests.support import launch
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

NS = (("containerd-namespace", "default"),)
MIB = 1 << 20
#: Events published while the subscriber is stopped: 200 MiB, far more than
#: the bound, far less than the daemon's 16 MiB request limit each.
STALLED_EVENTS = 200
#: What the daemon may grow by while they are published: the subscriber's
#: 4 MiB queue, the envelope it is sending, and allocator slack.
GROWTH_BOUND = 32 * MIB

SUBSCRIBER = """
import sys, grpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
with grpc.insecure_channel("unix://" + sys.argv[1]) as channel:
    events = events_pb2_grpc.EventsStub(channel).Subscribe(
        events_pb2.SubscribeRequest(filters=['topic~="^/stall/"'])
    )
    try:
        for envelope in events:
            print(envelope.topic, flush=True)
    except grpc.RpcError as exc:
        print("error", exc.code().name, flush=True)
"""


class Subscriber:
    """The subscriber process and the lines it prints, read on a thread."""

    def __init__(self, address: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, address], stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_for(self, line: str, timeout: float = 10) -> list[str]:
        """Lines up to and including ``line``."""
        seen = []
        deadline = time.monotonic() + timeout
        while not seen or seen[-1] != line:
            seen.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
        return seen

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)  # at end of file once the process is gone
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def subscriber(daemon: RunningDaemon) -> Iterator[Subscriber]:
    sub = Subscriber(daemon.address)
    try:
        yield sub
    finally:
        sub.close()


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def publish(events: events_pb2_grpc.EventsStub, topic: str, size: int) -> None:
    payload = any_pb2.Any(type_url="example.com/Payload", value=os.urandom(size))
    events.Publish(events_pb2.PublishRequest(topic=topic, event=payload), metadata=NS, timeout=10)


@dataclass
class Stall:
    baseline: int  # peak RSS before the subscriber stopped, bytes
    peak: int  # peak RSS after STALLED_EVENTS were published to it, bytes
    after_resume: list[str]  # what the subscriber printed once it read again


def stall(daemon: RunningDaemon, subscriber: Subscriber) -> Stall:
    with grpc.insecure_channel(f"unix://{daemon.address}") as channel:
        events = events_pb2_grpc.EventsStub(channel)
        # Subscribed once a ping gets through.
        deadline = time.monotonic() + 10
        while True:
            publish(events, "/stall/ping", 1)
            with contextlib.suppress(queue.Empty):
                subscriber.wait_for("/stall/ping", timeout=0.1)
                break
            assert time.monotonic() < deadline, "the subscriber never subscribed"
        # Large events to a reader that keeps up: what publishing costs anyway.
        for _ in range(20):
            publish(events, "/stall/warm", MIB)
            subscriber.wait_for("/stall/warm")
        baseline = peak_rss(daemon.process.pid)

        subscriber.process.send_signal(signal.SIGSTOP)
        for i in range(STALLED_EVENTS):
            publish(events, f"/stall/big{i}", MIB)
        peak = peak_rss(daemon.process.pid)
        launch.assert_serving(daemon.address)

        subscriber.process.send_signal(signal.SIGCONT)
        # Bounded: on code that never drops, the stream would go on forever.
        lines = []
        with contextlib.suppress(queue.Empty):
            while not lines or not lines[-1].startswith("error"):
                lines.append(subscriber.lines.get(timeout=10))
        return Stall(baseline, peak, lines)


def test_a_stalled_subscriber_is_dropped_and_pins_only_its_bound(
    daemon: RunningDaemon, subscriber: Subscriber
) -> None:
    result = stall(daemon, subscriber)
    growth = result.peak - result.baseline
    assert growth < GROWTH_BOUND, f"peak RSS grew by {growth / MIB:.1f} MiB"
    # Once it reads: the few envelopes that were in flight, then Unavailable.
    assert result.after_resume[-1:] == ["error UNAVAILABLE"], result.after_resume
    assert len(result.after_resume) <= 8, result.after_resume
    assert "event subscriber fell too far behind" in daemon.logs()
    assert "filters=" in daemon.logs() and "queued_bytes=" in daemon.logs()
