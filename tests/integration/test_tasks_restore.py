"""Tasks outlive the daemon, and the daemon outlives shims (issue 11, item 4).

Our daemon is SIGKILLed while tasks run and started again: it reconnects to
the live shims, lists their tasks, reports their later exits, and reports
an exit that happened while it was down.  A shim SIGKILLed under a task:
the task is reported exited, a Wait on it returns, and the daemon and the
other tasks carry on.  Each test runs with our shim (the default runtime)
and with Debian's Go shim mapped by config.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration._cli import Cli, table
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import tasks
from tests.support.ctr_events import CtrEvents, ctr_events

pytestmark = pytest.mark.integration

IMAGE = tasks.IMAGE


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "oci.tar"
    build_oci_archive(path, IMAGE, tasks.busybox_layer())
    return path


@pytest.fixture(params=tasks.SHIMS)
def env(request: pytest.FixtureRequest, archive: Path) -> Iterator[tuple[tasks.Daemon, Cli]]:
    """Our daemon on ``request.param``'s shim; ctr in a namespace with the
    image, and a second namespace (ctr's ``other``) ready too."""
    ns = tasks.namespace()
    with tasks.daemon(tasks.shim_config(request.param), [ns, f"{ns}-other"]) as d:
        cli = Cli("ctr", d.address, ns)
        cli("images", "import", str(archive))
        _other(cli)("images", "import", str(archive))
        yield d, cli


def _other(cli: Cli) -> Cli:
    """ctr in the test's second namespace."""
    return Cli("ctr", cli.address, f"{cli.namespace}-other")


def _parent(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _next(seen: CtrEvents, topic: str, id: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        _, got_topic, event = seen.get(timeout=max(0.01, deadline - time.monotonic()))
        if got_topic == topic and event.get("container_id") == id:
            return event


def _collect(
    seen: CtrEvents,
    topics: set[str],
    ids: list[str],
    timeout: float = 20,
) -> dict[tuple[str, str], dict[str, object]]:
    """The first event of each topic for each container id, in any order."""
    want = {(t, i) for t in topics for i in ids}
    got: dict[tuple[str, str], dict[str, object]] = {}
    deadline = time.monotonic() + timeout
    while want - got.keys():
        _, topic, event = seen.get(timeout=max(0.01, deadline - time.monotonic()))
        key = (topic, str(event.get("container_id")))
        if key in want and key not in got:
            got[key] = event
    return got


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
    with ctr_events(cli.binary, cli.address, cli.namespace) as seen:
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
    with ctr_events(cli.binary, cli.address, cli.namespace) as seen:
        # The shim's own retried event, or the daemon's (not both).  Under
        # load the shim's retry can land before ``ctr events`` subscribed:
        # then the task is already reported stopped with its status.
        try:
            exit_ = _next(seen, "/tasks/exit", "r2", timeout=30)
        except queue.Empty:
            assert _statuses(cli) == {"r2": "STOPPED"}
        else:
            assert exit_["exit_status"] == 7
            with pytest.raises(queue.Empty):
                _next(seen, "/tasks/exit", "r2", timeout=1)
    assert _statuses(cli) == {"r2": "STOPPED"}
    assert daemon.wait(cli.namespace or "", "r2").exit_status == 7
    cli("tasks", "rm", "r2")
    cli("containers", "rm", "r2")


def test_a_killed_shim_reports_its_tasks_exited_and_the_daemon_carries_on(
    env: tuple[tasks.Daemon, Cli],
) -> None:
    """k1 and k3 share a namespace: our shim serves both from one server,
    Go's runs a shim for each.  k2, in another namespace, has a shim of its
    own with either.  Killing k1's shim ends exactly the tasks it served."""
    daemon, cli = env
    other = _other(cli)
    cli("run", "-d", IMAGE, "k1", "sleep", "300")
    cli("run", "-d", IMAGE, "k3", "sleep", "300")
    other("run", "-d", IMAGE, "k2", "sleep", "300")
    (shim,) = [
        pid
        for pid in tasks.shim_pids(daemon.address)
        if b"k1" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    pids = {row[0]: int(row[1]) for row in table(cli("tasks", "ls").stdout)[1:]}
    served = sorted(c for c, pid in pids.items() if _parent(pid) == shim)
    assert "k1" in served
    daemon.sockets.add((daemon.state / (cli.namespace or "") / "k1" / "address").read_text())
    result: list[object] = []

    def wait() -> None:
        try:
            result.append(daemon.wait(cli.namespace or "", "k1", timeout=30))
        except grpc.RpcError as exc:
            result.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    with ctr_events(cli.binary, cli.address, cli.namespace) as seen:
        os.kill(shim, signal.SIGKILL)
        events = _collect(seen, {"/tasks/exit", "/tasks/delete"}, served)
    exits = {c: events["/tasks/exit", c]["exit_status"] for c in served}
    deletes = {c: events["/tasks/delete", c]["exit_status"] for c in served}
    waiter.join(30)
    assert exits == deletes == dict.fromkeys(served, 137)
    (waited,) = result
    assert not isinstance(waited, grpc.RpcError), waited
    assert waited.exit_status == 137  # type: ignore[attr-defined]
    assert _statuses(cli) == {c: "RUNNING" for c in pids if c not in served}
    for c in served:
        assert not (daemon.state / (cli.namespace or "") / c).exists()
        assert f"/{c}/rootfs" not in Path("/proc/self/mountinfo").read_text()
    # The daemon serves as before: the other tasks run and stop on request.
    assert _statuses(other) == {"k2": "RUNNING"}
    out = other("tasks", "exec", "--exec-id", "e1", "k2", "echo", "still here")
    assert out.stdout == "still here\n"
    for ctr, c in [(other, "k2")] + [(cli, c) for c in pids if c not in served]:
        ctr("tasks", "kill", "-s", "SIGKILL", c)
        assert daemon.wait(ctr.namespace or "", c).exit_status == 137
        ctr("tasks", "rm", c)
    cli("containers", "rm", "k1", "k3")
    other("containers", "rm", "k2")
