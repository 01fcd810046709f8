"""The restart monitor (``io.containerd.internal.v1.restart``) on our daemon,
with real runc: containers labelled ``containerd.io/restart.status`` are kept
running or stopped, through Debian's ``ctr`` and our client's options
(issue 13, part 3).

The daemon checks every 300ms, and also on each task exit; a container
the monitor restarted is not restarted again within that interval.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd.client import Client, restart
from tests.integration._cli import Cli, table
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import tasks

pytestmark = pytest.mark.integration

IMAGE = tasks.IMAGE
STATUS = "containerd.io/restart.status"
CONFIG = 'version = 2\n[plugins."io.containerd.internal.v1.restart"]\n  interval = "300ms"\n'


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "oci.tar"
    build_oci_archive(path, IMAGE, tasks.busybox_layer())
    return path


@pytest.fixture(scope="module")
def daemon(archive: Path) -> Iterator[tuple[tasks.Daemon, Cli]]:
    ns = tasks.namespace()
    with tasks.daemon(CONFIG, [ns]) as d:
        cli = Cli("ctr", d.address, ns)
        cli("images", "import", str(archive))
        yield d, cli


@pytest.fixture
def ctr(daemon: tuple[tasks.Daemon, Cli]) -> Iterator[Cli]:
    """ctr on the module's daemon; the test's containers are removed after it
    (their labels first, so that the monitor lets go of them)."""
    cli = daemon[1]
    before = set(_ids(cli))
    yield cli
    left = set(_ids(cli)) - before
    for id in left:
        cli("containers", "label", id, f"{STATUS}=", ok=False)
    # A start the monitor began before the label went may still create a
    # task after the first removal: try again once it is done.
    for _ in range(3):
        for id in left:
            cli("tasks", "rm", "-f", id, ok=False)
            cli("containers", "rm", id, ok=False)
        left &= set(_ids(cli))
        if not left:
            break
        time.sleep(0.5)


def _ids(ctr: Cli) -> list[str]:
    return [row[0] for row in table(ctr("containers", "ls", "-q").stdout)]


def _tasks(ctr: Cli) -> dict[str, tuple[int, str]]:
    """Task id -> (pid, status)."""
    return {row[0]: (int(row[1]), row[2]) for row in table(ctr("tasks", "ls").stdout)[1:]}


def _labels(ctr: Cli, id: str) -> dict[str, str]:
    labels: dict[str, str] = json.loads(ctr("containers", "info", id).stdout)["Labels"] or {}
    return labels


def _wait_running(ctr: Cli, id: str, *, not_pid: int = 0, timeout: float = 10) -> int:
    """The pid of ``id``'s task once it runs (as a pid other than ``not_pid``)."""
    found: list[int] = []

    def running() -> bool:
        pid, status = _tasks(ctr).get(id, (0, ""))
        if status == "RUNNING" and pid not in (0, not_pid):
            found.append(pid)
            return True
        return False

    tasks.wait_for(running, timeout=timeout, interval=0.1)
    return found[-1]


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_a_container_labelled_running_without_a_task_gets_one(ctr: Cli) -> None:
    ctr("containers", "create", "--label", f"{STATUS}=running", IMAGE, "r-new", "sleep", "300")
    pid = _wait_running(ctr, "r-new")
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"300"]
    assert _labels(ctr, "r-new")["containerd.io/restart.count"] == "1"


def test_a_killed_task_runs_again_with_a_new_pid(ctr: Cli) -> None:
    ctr("containers", "create", "--label", f"{STATUS}=running", IMAGE, "r-kill", "sleep", "300")
    first = _wait_running(ctr, "r-kill")
    _kill(first)
    # The exit event wakes the monitor; the deadline leaves a loaded machine
    # time for the restart itself (runc create and start).
    second = _wait_running(ctr, "r-kill", not_pid=first, timeout=20)
    assert _labels(ctr, "r-kill")["containerd.io/restart.count"] == "2"
    _kill(second)
    _wait_running(ctr, "r-kill", not_pid=second, timeout=20)
    assert _labels(ctr, "r-kill")["containerd.io/restart.count"] == "3"


def test_a_running_task_labelled_stopped_is_killed_and_deleted(ctr: Cli) -> None:
    ctr("containers", "create", "--label", f"{STATUS}=running", IMAGE, "r-stop", "sleep", "300")
    pid = _wait_running(ctr, "r-stop")
    ctr("containers", "label", "r-stop", f"{STATUS}=stopped")
    tasks.wait_for(lambda: "r-stop" not in _tasks(ctr), timeout=10, interval=0.1)
    assert (
        not Path(f"/proc/{pid}").exists()
        or b"sleep" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    time.sleep(1)  # ... and it stays stopped
    assert "r-stop" not in _tasks(ctr)


def test_restarted_tasks_write_to_the_log_uri_and_the_log_path(ctr: Cli, tmp_path: Path) -> None:
    uri_log, path_log = tmp_path / "uri.log", tmp_path / "path.log"
    script = 'echo "out $$"; echo "err $$" >&2; sleep 300'
    ctr("containers", "create", "--label", f"{STATUS}=running",
        "--label", f"containerd.io/restart.loguri=file://{uri_log}",
        IMAGE, "r-uri", "--", "sh", "-c", script)  # fmt: skip
    ctr("containers", "create", "--label", f"{STATUS}=running",
        "--label", f"containerd.io/restart.logpath={path_log}",
        IMAGE, "r-path", "--", "sh", "-c", script)  # fmt: skip
    for id, log in (("r-uri", uri_log), ("r-path", path_log)):
        first = _wait_running(ctr, id)
        tasks.wait_for(lambda log=log: len(_lines(log)) == 2)
        _kill(first)
        second = _wait_running(ctr, id, not_pid=first)
        tasks.wait_for(lambda log=log: len(_lines(log)) == 4)
        # Each task's pid inside is 1: what tells them apart is the order.
        assert sorted(_lines(log)) == ["err 1", "err 1", "out 1", "out 1"], log
        _kill(second)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_a_broken_container_is_logged_and_the_others_still_restart(
    daemon: tuple[tasks.Daemon, Cli], ctr: Cli
) -> None:
    ctr("containers", "create", "--label", f"{STATUS}=running",
        IMAGE, "r-broken", "/no/such/program")  # fmt: skip
    ctr("containers", "create", "--label", f"{STATUS}=running", IMAGE, "r-fine", "sleep", "300")
    pid = _wait_running(ctr, "r-fine")
    _kill(pid)
    _wait_running(ctr, "r-fine", not_pid=pid)
    d = daemon[0]

    def failures() -> list[str]:
        return [
            line
            for line in d.logs().splitlines()
            if "level=error" in line and "start task" in line and " id=r-broken" in line
        ]

    tasks.wait_for(failures)
    assert "/no/such/program" in failures()[0], failures()
    # The failed start left no created task behind to block the next try.
    assert _tasks(ctr).get("r-broken", (0, ""))[1] != "CREATED"


def test_on_failure_stops_after_the_maximum_retry_count(ctr: Cli) -> None:
    # Started by ctr, then labelled: on-failure never starts a container that
    # has no task, as containerd (its exit status reads as 0).
    ctr("run", "-d", IMAGE, "r-fail", "sh", "-c", "sleep 0.2; exit 3")
    ctr("containers", "label", "r-fail", f"{STATUS}=running",
        "containerd.io/restart.policy=on-failure:2")  # fmt: skip
    tasks.wait_for(lambda: _labels(ctr, "r-fail").get("containerd.io/restart.count") == "2")
    tasks.wait_for(lambda: _tasks(ctr).get("r-fail", (0, ""))[1] == "STOPPED", timeout=10)
    time.sleep(1.5)  # well past a few intervals: no third restart
    assert _labels(ctr, "r-fail")["containerd.io/restart.count"] == "2"
    assert _tasks(ctr)["r-fail"][1] == "STOPPED"


def test_on_failure_leaves_a_clean_exit_alone_and_no_never_restarts(ctr: Cli) -> None:
    ctr("run", "-d", IMAGE, "r-ok", "true")
    ctr("run", "-d", IMAGE, "r-no", "sh", "-c", "exit 1")
    ctr("containers", "label", "r-ok", f"{STATUS}=running",
        "containerd.io/restart.policy=on-failure")  # fmt: skip
    ctr("containers", "label", "r-no", f"{STATUS}=running",
        "containerd.io/restart.policy=no")  # fmt: skip
    tasks.wait_for(
        lambda: all(_tasks(ctr).get(id, (0, ""))[1] == "STOPPED" for id in ("r-ok", "r-no"))
    )
    time.sleep(1)
    for id in ("r-ok", "r-no"):
        assert _tasks(ctr)[id][1] == "STOPPED"
        assert "containerd.io/restart.count" not in _labels(ctr, id)


def test_client_options_label_a_container_and_no_restarts_lets_it_go(
    daemon: tuple[tasks.Daemon, Cli], ctr: Cli, tmp_path: Path
) -> None:
    log = tmp_path / "client.log"
    ctr("containers", "create", IMAGE, "r-client", "--", "sh", "-c", "echo hello; sleep 300")
    assert "r-client" not in _tasks(ctr)
    with Client(daemon[0].address, ctr.namespace or "") as client:
        container = client.load_container("r-client")
        container.update(
            restart.with_status("running"),
            restart.with_file_log_uri(log),
            restart.with_policy("unless-stopped"),
        )
        labels = container.labels()
        assert labels[STATUS] == "running"
        assert labels["containerd.io/restart.loguri"] == f"file://{log}"
        assert labels["containerd.io/restart.policy"] == "unless-stopped"
        pid = _wait_running(ctr, "r-client")
        tasks.wait_for(lambda: _lines(log) == ["hello"])

        container.update(restart.with_no_restarts)
        assert STATUS not in container.labels()
        _kill(pid)
        tasks.wait_for(lambda: _tasks(ctr)["r-client"][1] == "STOPPED")
        time.sleep(1)
        assert _tasks(ctr)["r-client"][1] == "STOPPED"


def test_the_monitor_restarts_after_the_daemon_is_killed_and_started_again(
    archive: Path,
) -> None:
    ns = tasks.namespace()
    with tasks.daemon(CONFIG, [ns]) as d:
        ctr = Cli("ctr", d.address, ns)
        ctr("images", "import", str(archive))
        ctr("containers", "create", "--label", f"{STATUS}=running",
            IMAGE, "r-crash", "sleep", "300")  # fmt: skip
        first = _wait_running(ctr, "r-crash")
        d.kill()
        _kill(first)  # while no daemon watches
        d.start()
        second = _wait_running(ctr, "r-crash", not_pid=first)
        assert Path(f"/proc/{second}").exists()
        ctr("containers", "label", "r-crash", f"{STATUS}=stopped")
        tasks.wait_for(lambda: "r-crash" not in _tasks(ctr))
        ctr("containers", "rm", "r-crash")


def test_tasks_on_gos_shim_are_restarted_too(archive: Path) -> None:
    """The daemon's side alone: the same restart through containerd's Go shim."""
    ns = tasks.namespace()
    config = tasks.shim_config("go") + CONFIG.removeprefix("version = 2\n")
    with tasks.daemon(config, [ns]) as d:
        ctr = Cli("ctr", d.address, ns)
        ctr("images", "import", str(archive))
        ctr("containers", "create", "--label", f"{STATUS}=running",
            IMAGE, "r-go", "sleep", "300")  # fmt: skip
        first = _wait_running(ctr, "r-go")
        _kill(first)
        _wait_running(ctr, "r-go", not_pid=first)
        assert _labels(ctr, "r-go")["containerd.io/restart.count"] == "2"
        ctr("containers", "label", "r-go", f"{STATUS}=stopped")
        tasks.wait_for(lambda: "r-go" not in _tasks(ctr))
        ctr("containers", "rm", "r-go")
