"""The ``pyctr`` console script against a real pycontainerd daemon."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

PYCTR = Path(sys.executable).parent / "pyctr"


def pyctr(
    daemon: RunningDaemon, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(PYCTR), "-a", daemon.address, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pyctr {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc


class EventStream:
    """A running ``pyctr events`` whose stdout lines arrive on a queue."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, needle: str, poke: list[str], daemon: RunningDaemon) -> str:
        """Return the first line containing ``needle``, creating namespaces
        named after ``poke`` until the subscription is live and one shows up."""
        deadline = time.monotonic() + 20
        attempt = 0
        while time.monotonic() < deadline:
            pyctr(daemon, "namespaces", "create", f"{poke[0]}{attempt}")
            attempt += 1
            try:
                while True:
                    line = self.lines.get(timeout=0.5)
                    if needle in line:
                        return line
            except queue.Empty:
                continue
        raise AssertionError(f"no event line with {needle!r}")


@contextmanager
def event_stream(daemon: RunningDaemon, *args: str) -> Iterator[EventStream]:
    proc = subprocess.Popen(
        [str(PYCTR), "-a", daemon.address, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stream = EventStream(proc)
    try:
        yield stream
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        stream.reader.join(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_version_shows_our_server(daemon: RunningDaemon) -> None:
    proc = pyctr(daemon, "version")
    lines = proc.stdout.splitlines()
    assert lines[0] == "Client:"
    assert "Server:" in lines
    server = lines[lines.index("Server:") :]
    assert "  Revision: pycontainerd" in server
    assert any(line.startswith("  UUID: ") and len(line) > 10 for line in server)
    assert proc.stderr == ""  # same version on both ends: no mismatch warning

    data = json.loads(pyctr(daemon, "version", "--format", "json").stdout)
    assert data["server"]["revision"] == "pycontainerd"
    assert data["server"]["version"] == data["client"]["version"]


def test_plugins_ls_lists_plugins_with_status(daemon: RunningDaemon) -> None:
    out = pyctr(daemon, "plugins", "ls").stdout.splitlines()
    assert out[0].split() == ["TYPE", "ID", "PLATFORMS", "STATUS"]
    rows = [line.split() for line in out[1:]]
    assert ["io.containerd.grpc.v1", "namespaces", "-", "ok"] in rows
    assert all(row[3] in ("ok", "skip", "error") for row in rows)
    # Columns line up: every STATUS starts where the header's does.
    col = out[0].index("STATUS")
    assert all(line[col - 1] == " " and line[col] != " " for line in out[1:])

    ids = pyctr(daemon, "plugin", "list", "-q", "type==io.containerd.grpc.v1").stdout.split()
    assert "namespaces" in ids and "introspection" in ids

    detailed = pyctr(daemon, "plugins", "ls", "-d", "id==namespaces").stdout
    assert "Type:" in detailed and "ID:           namespaces" in detailed

    data = json.loads(pyctr(daemon, "plugins", "ls", "--format", "json").stdout)
    by_id = {(p["type"], p["id"]): p for p in data}
    assert by_id["io.containerd.grpc.v1", "namespaces"]["status"] == "ok"


def test_namespaces_create_label_ls_rm(daemon: RunningDaemon) -> None:
    pyctr(daemon, "namespaces", "create", "ns1", "a=b")
    pyctr(daemon, "namespaces", "label", "ns1", "c=d")
    listing = pyctr(daemon, "namespaces", "ls").stdout.splitlines()
    assert listing[0].split() == ["NAME", "LABELS"]
    assert ["ns1", "a=b,c=d"] in [line.split() for line in listing[1:]]

    data = json.loads(pyctr(daemon, "ns", "list", "--format", "json").stdout)
    assert {"name": "ns1", "labels": {"a": "b", "c": "d"}} in data

    pyctr(daemon, "ns", "label", "ns1", "a=")  # an empty value removes the label
    assert "ns1" in pyctr(daemon, "ns", "ls", "-q").stdout.split()
    assert ["ns1", "c=d"] in [
        line.split() for line in pyctr(daemon, "ns", "ls").stdout.splitlines()
    ]

    rm = pyctr(daemon, "namespaces", "rm", "ns1")
    assert rm.stdout == "ns1\n"
    assert "ns1" not in pyctr(daemon, "namespaces", "ls", "-q").stdout.split()


def test_namespaces_create_twice_is_already_exists(daemon: RunningDaemon) -> None:
    pyctr(daemon, "ns", "create", "twice")
    proc = pyctr(daemon, "ns", "create", "twice", check=False)
    assert proc.returncode == 1
    assert proc.stderr == 'pyctr: namespace "twice": already exists\n'


def test_namespaces_rm_ignores_missing_and_reports_failures(daemon: RunningDaemon) -> None:
    pyctr(daemon, "ns", "create", "keep")
    proc = pyctr(daemon, "ns", "rm", "never-was", "a/b", "keep", check=False)
    assert proc.returncode == 1
    # Absent names count as removed (as in ctr); a bad one is reported and the rest go on.
    assert proc.stdout.split() == ["never-was", "keep"]
    assert proc.stderr.startswith("pyctr: unable to delete a/b: ")
    assert '"a/b"' in proc.stderr


@pytest.mark.parametrize("name", ["-bad", "a/b", "x" * 77])
def test_invalid_namespace_name_is_rejected_by_name(daemon: RunningDaemon, name: str) -> None:
    proc = pyctr(daemon, "namespaces", "create", name, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("pyctr: ")
    assert f'"{name}"' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_events_prints_namespace_creates_then_stops_on_sigterm(daemon: RunningDaemon) -> None:
    with event_stream(daemon, "events") as stream:
        line = stream.wait_for("/namespaces/create", ["evns"], daemon)
        # 2026-11-23 09:28:33.593035 +0000 UTC default /namespaces/create {"name":"evns0"}
        date, clock, zone, utc, namespace, topic, payload = line.split(" ", 6)
        assert (zone, utc, namespace, topic) == ("+0000", "UTC", "default", "/namespaces/create")
        assert len(date) == 10 and len(clock) >= 8
        assert json.loads(payload)["name"].startswith("evns")

        stream.proc.send_signal(signal.SIGTERM)
        assert stream.proc.wait(timeout=10) == 0
        assert stream.proc.stderr is not None
        assert stream.proc.stderr.read() == ""


def test_events_stops_cleanly_on_ctrl_c(daemon: RunningDaemon) -> None:
    with event_stream(daemon, "events") as stream:
        stream.wait_for("/namespaces/create", ["intns"], daemon)
        stream.proc.send_signal(signal.SIGINT)
        assert stream.proc.wait(timeout=10) == 0
        assert stream.proc.stderr is not None
        assert "Traceback" not in stream.proc.stderr.read()


def test_events_filters_and_json_lines(daemon: RunningDaemon) -> None:
    with event_stream(
        daemon, "events", "--format", "json", 'topic=="/namespaces/delete"'
    ) as stream:
        deadline = time.monotonic() + 20
        attempt = 0
        while time.monotonic() < deadline:
            name = f"gone{attempt}"
            attempt += 1
            pyctr(daemon, "ns", "create", name)
            pyctr(daemon, "ns", "rm", name)
            try:
                record = json.loads(stream.lines.get(timeout=0.5))
                break
            except queue.Empty:
                continue
        else:
            raise AssertionError("no delete event")
        assert record["topic"] == "/namespaces/delete"
        assert record["type"] == "containerd.events.NamespaceDelete"
        assert record["event"]["name"].startswith("gone")
        assert record["timestamp"].endswith("Z")


def test_address_and_namespace_from_environment(daemon: RunningDaemon) -> None:
    proc = subprocess.run(
        [str(PYCTR), "ns", "ls", "-q"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CONTAINERD_ADDRESS": daemon.address, "CONTAINERD_NAMESPACE": "envns"},
    )
    assert proc.returncode == 0, proc.stderr
