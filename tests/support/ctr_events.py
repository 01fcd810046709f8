"""``ctr events`` in the background, for tests: its events as they come, and
a way to know its subscription is live before the test acts.

``ctr events`` gives no sign of when its subscription listens: events
published before that are lost, and a fixed sleep is a guess a loaded
machine beats.  :func:`ctr_events` creates a marker namespace (another
``ctr`` each time) until the stream shows one, and only then hands the
stream over.  The markers are published in ctr's ``default`` namespace, so
a stream of a test's own namespace never shows them.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import NamedTuple

__all__ = ["CtrEvents", "Event", "ctr_events"]


class Event(NamedTuple):
    """One line of ``ctr events``:
    ``<date> <time> <zone> UTC <namespace> <topic> <event as JSON>``."""

    namespace: str
    topic: str
    event: dict[str, object]

    @classmethod
    def parse(cls, line: str) -> Event:
        *_, namespace, topic, payload = line.rstrip("\n").split(" ", 6)
        return cls(namespace, topic, json.loads(payload))


class CtrEvents:
    """``ctr -a ADDRESS events``, its lines parsed into a queue by a thread;
    only those of ``namespace``, when given, come out of :meth:`get`."""

    def __init__(self, binary: str, address: str, namespace: str | None = None) -> None:
        self.binary = binary
        self.address = address
        self.namespace = namespace
        self.proc = subprocess.Popen(
            [binary, "-a", address, "events"], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._events: queue.Queue[Event] = queue.Queue()
        #: events :meth:`sync` took while it looked for its marker
        self._held: list[Event] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._events.put(Event.parse(line))

    def get(self, timeout: float) -> Event:
        """The next event; ``queue.Empty`` when none comes in ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self._held:
                event = self._held.pop(0)
            else:
                event = self._events.get(timeout=max(0, deadline - time.monotonic()))
            if self.namespace is None or event.namespace == self.namespace:
                return event

    def until(self, match: Callable[[Event], bool], timeout: float = 20) -> list[Event]:
        """The events up to and including the first that ``match`` accepts."""
        taken: list[Event] = []
        deadline = time.monotonic() + timeout
        while not taken or not match(taken[-1]):
            try:
                taken.append(self.get(timeout=max(0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no such event in {timeout}s; got {taken}") from None
        return taken

    def sync(self, timeout: float = 20) -> None:
        """Return once the subscription is live: create marker namespaces
        until one shows (the first ones may come before it listens).  Other
        events that show meanwhile stay for :meth:`get`, in order; the
        markers are removed again."""
        prefix = f"events-sync-{uuid.uuid4().hex[:8]}"
        markers: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                assert self.proc.poll() is None, f"ctr events exited {self.proc.returncode}"
                assert time.monotonic() < deadline, f"ctr events showed no marker in {timeout}s"
                markers.append(f"{prefix}-{len(markers)}")
                self._ctr("namespaces", "create", markers[-1])
                wait = time.monotonic() + 0.5
                with contextlib.suppress(queue.Empty):
                    while True:
                        event = self._events.get(timeout=max(0.01, wait - time.monotonic()))
                        name = event.event.get("name")
                        if event.topic == "/namespaces/create" and name in markers:
                            return
                        self._held.append(event)
        finally:
            for name in markers:
                self._ctr("namespaces", "rm", name, check=False)

    def _ctr(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [self.binary, "-a", self.address, *args], capture_output=True, timeout=30, check=check
        )

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextlib.contextmanager
def ctr_events(binary: str, address: str, namespace: str | None = None) -> Iterator[CtrEvents]:
    """``ctr events`` on ``address`` (the events of ``namespace``, when
    given), live once the block starts; ended after it."""
    stream = CtrEvents(binary, address, namespace)
    try:
        stream.sync()
        yield stream
    finally:
        stream.close()
