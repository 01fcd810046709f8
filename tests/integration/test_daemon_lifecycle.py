"""Signals and restarts: a clean stop, a stack dump on demand, and state that
outlives the process."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from pycontainerd.client import Client
from tests.support import daemons, launch

pytestmark = pytest.mark.integration


@pytest.fixture
def layout() -> Iterator[launch.Layout]:
    with daemons.temp_base("pcd-life-") as base:
        yield launch.Layout(base)


def wait_for_log(d: daemons.RunningDaemon, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = d.logs()
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged in {timeout}s:\n{d.logs()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_daemon_with_exit_0_and_removes_the_socket(
    layout: launch.Layout, sig: signal.Signals
) -> None:
    d = launch.start(layout)
    try:
        launch.assert_serving(d.address)
        d.process.send_signal(sig)
        assert d.process.wait(timeout=15) == 0, d.logs()
    finally:
        daemons.stop(d.process)
    assert not os.path.lexists(d.address)
    logs = d.logs()
    assert "stopping..." in logs
    assert "level=error" not in logs


def test_sigusr1_logs_a_stack_dump_and_the_daemon_keeps_serving(
    layout: launch.Layout,
) -> None:
    with launch.running(layout) as d:
        d.process.send_signal(signal.SIGUSR1)
        logs = wait_for_log(d, "=== END goroutine stack dump ===")
        assert "=== BEGIN goroutine stack dump ===" in logs
        assert "serve_forever" in logs  # the main task's stack is in it
        assert "--- thread" in logs
        assert "level=error" not in logs
        assert d.process.poll() is None
        launch.assert_serving(d.address)
        # and it can do it again
        d.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while d.logs().count("END goroutine stack dump") < 2:
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.05)
        launch.assert_serving(d.address)


def test_restart_keeps_namespaces_and_the_server_uuid(layout: launch.Layout) -> None:
    with launch.running(layout) as first, Client(first.address) as client:
        client.namespaces.create("keep", {"a": "b"})
        client.namespaces.create("also")
        client.namespaces.set_labels("also", {"c": "d"})
        client.namespaces.create("gone")
        client.namespaces.delete("gone")
        uuid = client.server().uuid
    assert first.process.returncode == 0

    with launch.running(layout) as second, Client(second.address) as client:
        assert client.server().uuid == uuid
        listed = {ns.name: dict(ns.labels) for ns in client.namespaces.list()}
        assert listed == {"keep": {"a": "b"}, "also": {"c": "d"}}


def test_each_root_has_its_own_server_uuid(layout: launch.Layout) -> None:
    with launch.running(layout) as d, Client(d.address) as client:
        first = client.server().uuid
    with daemons.pycontainerd() as other, Client(other.address) as client:
        assert client.server().uuid != first


def test_daemon_killed_without_cleanup_restarts_on_its_stale_socket(
    layout: launch.Layout,
) -> None:
    d = launch.start(layout)
    with Client(d.address) as client:
        client.namespaces.create("survivor")
    d.process.kill()
    d.process.wait()
    assert os.path.lexists(d.address)  # SIGKILL left the socket file behind

    with launch.running(layout) as again, Client(again.address) as client:
        assert "survivor" in [ns.name for ns in client.namespaces.list()]
