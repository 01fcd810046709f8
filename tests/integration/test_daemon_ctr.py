"""Debian's ``ctr`` (containerd 1.6) drives our daemon: the acceptance points.

Every test here runs the real ``ctr`` binary as a subprocess against a real
daemon; nothing is faked.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client
from pycontainerd.version import REVISION, VERSION
from tests.support.daemons import RunningDaemon

pytestmark = [pytest.mark.integration, pytest.mark.interop]


@pytest.fixture(scope="module")
def ctr_bin() -> str:
    path = shutil.which("ctr")
    if path is None:
        pytest.fail("Debian's ctr is not installed (make deps installs package containerd)")
    return path


@pytest.fixture
def ctr(ctr_bin: str, shared_daemon: RunningDaemon) -> Ctr:
    return Ctr(ctr_bin, shared_daemon.address)


class Ctr:
    def __init__(self, binary: str, address: str) -> None:
        self.binary = binary
        self.address = address

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "-a", self.address, *args]

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=30, check=False
        )
        if ok and result.returncode != 0:
            pytest.fail(f"ctr {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result


def table(output: str) -> list[list[str]]:
    """ctr's tab-aligned table as rows of cells, header first."""
    return [line.split() for line in output.splitlines() if line.strip()]


# --- version and plugins ------------------------------------------------------------


def test_ctr_version_shows_our_server_version_and_revision(
    ctr: Ctr, shared_daemon: RunningDaemon
) -> None:
    out = ctr("version").stdout
    server = out.split("Server:", 1)[1]
    fields = dict(line.strip().split(": ", 1) for line in server.strip().splitlines())
    assert fields["Version"].strip() == VERSION
    assert fields["Revision"] == REVISION == "pycontainerd"
    with Client(shared_daemon.address) as client:
        assert fields["UUID"] == client.server().uuid


BUILTINS = {
    ("io.containerd.metadata.v1", "sqlite"),
    ("io.containerd.gc.v1", "scheduler"),
    ("io.containerd.grpc.v1", "version"),
    ("io.containerd.grpc.v1", "healthcheck"),
    ("io.containerd.grpc.v1", "namespaces"),
    ("io.containerd.grpc.v1", "events"),
    ("io.containerd.grpc.v1", "introspection"),
}


def test_ctr_plugins_ls_lists_plugins_with_status_ok(
    ctr: Ctr, shared_daemon: RunningDaemon
) -> None:
    rows = table(ctr("plugins", "ls").stdout)
    assert rows[0] == ["TYPE", "ID", "PLATFORMS", "STATUS"]
    status = {(row[0], row[1]): row[-1] for row in rows[1:]}
    assert set(status) >= BUILTINS
    assert {status[p] for p in BUILTINS} == {"ok"}
    assert set(status.values()) <= {"ok", "skip", "error"}
    with Client(shared_daemon.address) as client:
        assert set(status) == {(p.type, p.id) for p in client.plugins()}


def test_ctr_plugins_ls_filter_by_type(ctr: Ctr) -> None:
    rows = table(ctr("plugins", "ls", "type==io.containerd.metadata.v1").stdout)
    assert [row[:2] for row in rows[1:]] == [["io.containerd.metadata.v1", "sqlite"]]


# --- namespaces -------------------------------------------------------------------------


def test_ctr_namespaces_create_label_list_and_remove(
    ctr: Ctr, shared_daemon: RunningDaemon
) -> None:
    ctr("namespaces", "create", "ns1", "a=b")
    ctr("namespaces", "label", "ns1", "c=d")

    rows = table(ctr("namespaces", "ls").stdout)
    assert rows[0] == ["NAME", "LABELS"]
    assert ["ns1", "a=b,c=d"] in rows[1:]
    assert "ns1" in ctr("namespaces", "ls", "-q").stdout.split()
    with Client(shared_daemon.address) as client:
        assert dict(client.namespaces.get("ns1").labels) == {"a": "b", "c": "d"}

    assert ctr("namespaces", "rm", "ns1").stdout.split() == ["ns1"]
    assert "ns1" not in ctr("namespaces", "ls", "-q").stdout.split()


def test_ctr_namespaces_label_without_value_removes_the_label(ctr: Ctr) -> None:
    ctr("namespaces", "create", "ns-unlabel", "a=b", "c=d")
    try:
        ctr("namespaces", "label", "ns-unlabel", "a=")
        rows = table(ctr("namespaces", "ls").stdout)
        assert ["ns-unlabel", "c=d"] in rows[1:]
    finally:
        ctr("namespaces", "rm", "ns-unlabel")


def test_ctr_namespaces_create_twice_fails_already_exists(ctr: Ctr) -> None:
    ctr("namespaces", "create", "ns-twice")
    try:
        result = ctr("namespaces", "create", "ns-twice", ok=False)
        assert result.returncode != 0
        assert 'namespace "ns-twice": already exists' in result.stderr
    finally:
        ctr("namespaces", "rm", "ns-twice")


def test_removing_a_missing_namespace_is_not_found_which_ctr_treats_as_done(
    ctr: Ctr, shared_daemon: RunningDaemon
) -> None:
    with Client(shared_daemon.address) as client, pytest.raises(errdefs.NotFound) as excinfo:
        client.namespaces.delete("ns-ghost")
    assert excinfo.value.message == 'namespace "ns-ghost"'
    # ctr ignores NotFound on rm, with our daemon as with containerd
    result = ctr("namespaces", "rm", "ns-ghost")
    assert result.stdout.split() == ["ns-ghost"]


# --- events -------------------------------------------------------------------------------


class EventStream:
    """``ctr events`` running in the background, its lines read into a queue."""

    def __init__(self, ctr: Ctr, *filters: str) -> None:
        self.proc = subprocess.Popen(
            ctr.argv("events", *filters),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        #: every line taken from the queue so far, in order
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, needle: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if needle in line:
                return line
        return None

    def close(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        return err


@pytest.fixture
def events(ctr: Ctr) -> Iterator[Callable[..., EventStream]]:
    """Start ``ctr events`` processes; all are terminated after the test."""
    streams: list[EventStream] = []

    def open_stream(*filters: str, on: Ctr = ctr) -> EventStream:
        stream = EventStream(on, *filters)
        streams.append(stream)
        return stream

    yield open_stream
    for stream in streams:
        stream.close()


@contextlib.contextmanager
def namespaces_removed(ctr: Ctr) -> Iterator[list[str]]:
    """Names created in the block; each is removed afterwards if still there."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            ctr("namespaces", "rm", name, ok=False)


def create_until_seen(
    ctr: Ctr, stream: EventStream, prefix: str, created: list[str], *labels: str
) -> tuple[str, str]:
    """Create namespaces (another process each time) until ``ctr events`` shows one.

    ``ctr events`` gives no sign of when its subscription is live, so the
    first creations may happen before it; the first one it prints proves it is.
    """
    for i in range(50):
        name = f"{prefix}-{i}"
        ctr("namespaces", "create", name, *labels)
        created.append(name)
        line = stream.wait_for(f'"name":"{name}"', timeout=0.3)
        if line is not None:
            return name, line
    pytest.fail(f"ctr events printed nothing; stderr: {stream.close()}")


def parse_event(line: str) -> tuple[str, str, dict[str, object]]:
    """``2024-01-02 03:04:05.1 +0000 UTC <namespace> <topic> <event json>``."""
    _date, _time, _zone, utc, namespace, topic, event = line.split(" ", 6)
    assert utc == "UTC", line
    return namespace, topic, json.loads(event)


def test_ctr_events_prints_namespace_create_made_by_another_process(
    ctr: Ctr, events: Callable[..., EventStream]
) -> None:
    stream = events()
    with namespaces_removed(ctr) as created:
        name, line = create_until_seen(ctr, stream, "ev-create", created, "team=web")
    namespace, topic, event = parse_event(line)
    assert topic == "/namespaces/create"
    assert namespace == "default"
    assert event == {"name": name, "labels": {"team": "web"}}


def test_ctr_events_filter_on_an_event_field(ctr: Ctr, events: Callable[..., EventStream]) -> None:
    stream = events('event.name~="^ev-filter-"')
    with namespaces_removed(ctr) as created:
        create_until_seen(ctr, stream, "ev-filter", created)
        # The subscription is live: an unmatched change, then a matched one.
        ctr("namespaces", "create", "other-ns")
        created.append("other-ns")
        ctr("namespaces", "create", "ev-filter-last")
        created.append("ev-filter-last")
        assert stream.wait_for("ev-filter-last", timeout=10) is not None
    assert stream.wait_for("other-ns", timeout=0.3) is None
    assert not [line for line in stream.seen if "other-ns" in line]
    assert all("ev-filter-" in line for line in stream.seen)


def namespace_events(ctr: Ctr, stream: EventStream) -> list[tuple[str, str, str]]:
    """(namespace, topic, name) of the events one create/label/rm round prints."""
    with namespaces_removed(ctr) as created:
        create_until_seen(ctr, stream, "ev-cmp", created)
    ctr("namespaces", "create", "ev-cmp", "a=b")
    ctr("namespaces", "label", "ev-cmp", "c=d")
    ctr("namespaces", "rm", "ev-cmp")
    seen = []
    while len(seen) < 3:
        line = stream.wait_for('"name":"ev-cmp"', timeout=10)
        assert line is not None, f"only {seen}"
        namespace, topic, event = parse_event(line)
        seen.append((namespace, topic, str(event["name"])))
    return seen


def test_namespace_events_match_containerd_topics_and_namespaces(
    ctr: Ctr, ctr_bin: str, containerd: RunningDaemon, events: Callable[..., EventStream]
) -> None:
    ours = namespace_events(ctr, events())
    theirs_ctr = Ctr(ctr_bin, containerd.address)
    theirs = namespace_events(theirs_ctr, events(on=theirs_ctr))
    assert (
        ours
        == theirs
        == [
            ("default", "/namespaces/create", "ev-cmp"),
            ("default", "/namespaces/update", "ev-cmp"),
            # containerd sends a namespace's delete event in that namespace
            ("ev-cmp", "/namespaces/delete", "ev-cmp"),
        ]
    )
