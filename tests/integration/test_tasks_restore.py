"""Tasks outlive the daemon, and the daemon outlives shims (issue 11, item 4).

Our daemon is SIGKILLed while tasks run and started again: it reconnects to
the live shims, lists their tasks, reports their later exits, and reports
an exit that happened while it was down.  A shim SIGKILLed under a task:
the task is reported exited, a Wait on it returns, and the daemon and the
other tasks carry on.  The runtime runs Debian's Go shim.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration._cli import Cli, table
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import tasks

pytestmark = pytest.mark.integration

IMAGE = tasks.IMAGE


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.path.exists(tasks.GO_SHIM):
        pytest.skip("containerd-shim-runc-v2 is not installed")
    path = tmp_path_factory.mktemp("img") / "oci.tar"
    build_oci_archive(path, IMAGE, tasks.busybox_layer())
    return path


@pytest.fixture
def env(archive: Path) -> Iterator[tuple[tasks.Daemon, Cli]]:
    ns = tasks.namespace()
    with tasks.daemon(tasks.go_shim_config(), [ns]) as d:
        cli = Cli("ctr", d.address, ns)
        cli("images", "import", str(archive))
        yield d, cli


@contextlib.contextmanager
def ctr_events(cli: Cli) -> Iterator[queue.Queue[tuple[str, dict[str, object]]]]:
    """``ctr events`` in the namespace: (topic, event) as they come."""
    proc = subprocess.Popen(
        [cli.binary, "-a", cli.address, "events"], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    seen: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            # "<date> <time> <zone> <zone> <namespace> <topic> <event as JSON>"
            *_, ns, topic, payload = line.rstrip("\n").split(" ", 6)
            if ns == cli.namespace:
                seen.put((topic, json.loads(payload)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(0.3)  # ctr subscribes once it is up
        yield seen
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _next(seen: queue.Queue[tuple[str, dict[str, object]]], topic: str, id: str,
          timeout: float = 20) -> dict[str, object]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        got_topic, event = seen.get(timeout=max(0.01, deadline - time.monotonic()))
        if got_topic == topic and event.get("container_id") == id:
            return event


def _statuses(cli: Cli) -> dict[str, str]:
    return {row[0]: row[2] for row in table(cli("tasks", "ls").stdout)[1:]}


def test_tasks_survive_a_daemon_crash_and_report_their_later_exit(
    env: tuple[tasks.Daemon, Cli],
) -> None:
    daemon, cli = env
    cli("run", "-d", IMAGE, "r1", "sleep", "300")
    pid = int(table(cli("tasks", "ls").stdout)[1][1])
    daemon.kill()
    assert Path(f"/proc/{pid}").exists(), "the container died with the daemon"
    daemon.start()
    assert _statuses(cli) == {"r1": "RUNNING"}
    with ctr_events(cli) as seen:
        # (SIGKILL: sleep, as pid 1 of its namespace, ignores SIGTERM.)
        cli("tasks", "kill", "-s", "SIGKILL", "r1")
        exit_ = _next(seen, "/tasks/exit", "r1")
    assert exit_["pid"] == pid and exit_["exit_status"] == 137
    waited = daemon.wait(cli.namespace or "", "r1")
    assert waited.exit_status == 137
    cli("tasks", "rm", "r1")
    cli("containers", "rm", "r1")


def test_an_exit_while_the_daemon_is_down_is_reported_after_restart(
    env: tuple[tasks.Daemon, Cli],
) -> None:
    daemon, cli = env
    cli("run", "-d", IMAGE, "r2", "sh", "-c", "sleep 0.5; exit 7")
    daemon.kill()
    time.sleep(1.5)
    daemon.start()
    with ctr_events(cli) as seen:
        # The shim's own retried event, or the daemon's (not both).
        exit_ = _next(seen, "/tasks/exit", "r2", timeout=30)
        assert exit_["exit_status"] == 7
        with pytest.raises(queue.Empty):
            _next(seen, "/tasks/exit", "r2", timeout=1)
    assert _statuses(cli) == {"r2": "STOPPED"}
    assert daemon.wait(cli.namespace or "", "r2").exit_status == 7
    cli("tasks", "rm", "r2")
    cli("containers", "rm", "r2")


def test_a_killed_shim_reports_its_task_exited_and_the_daemon_carries_on(
    env: tuple[tasks.Daemon, Cli],
) -> None:
    daemon, cli = env
    cli("run", "-d", IMAGE, "k1", "sleep", "300")
    cli("run", "-d", IMAGE, "k2", "sleep", "300")
    (shim,) = [
        pid
        for pid in tasks.shim_pids(daemon.address)
        if b"k1" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    result: list[object] = []

    def wait() -> None:
        try:
            result.append(daemon.wait(cli.namespace or "", "k1", timeout=30))
        except grpc.RpcError as exc:
            result.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    with ctr_events(cli) as seen:
        os.kill(shim, signal.SIGKILL)
        exit_ = _next(seen, "/tasks/exit", "k1")
        delete = _next(seen, "/tasks/delete", "k1")
    waiter.join(30)
    assert exit_["exit_status"] == 137 and delete["exit_status"] == 137
    (waited,) = result
    assert not isinstance(waited, grpc.RpcError), waited
    assert waited.exit_status == 137  # type: ignore[attr-defined]
    assert _statuses(cli) == {"k2": "RUNNING"}
    assert not (daemon.state / (cli.namespace or "") / "k1").exists()
    assert "k1" not in Path("/proc/self/mountinfo").read_text()
    # The daemon serves as before: the other task runs and stops on request.
    out = cli("tasks", "exec", "--exec-id", "e1", "k2", "echo", "still here")
    assert out.stdout == "still here\n"
    cli("tasks", "kill", "-s", "SIGKILL", "k2")
    assert daemon.wait(cli.namespace or "", "k2").exit_status == 137
    cli("tasks", "rm", "k2")
    cli("containers", "rm", "k1", "k2")
