"""Debian's ``ctr`` runs containers on our daemon (issue 11, items 4 and 5).

Each test runs twice: with the runtime ``io.containerd.runc.v2`` on our
shim (the default) and mapped by config to Debian's Go shim, so the task
manager and the tasks service are proved against a shim we did not write
too; every test cleans up its tasks, shims and runc state.
"""

from __future__ import annotations

import os
import pty
import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._cli import Cli, table
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import tasks

pytestmark = pytest.mark.integration

IMAGE = tasks.IMAGE


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "oci.tar"
    build_oci_archive(path, IMAGE, tasks.busybox_layer())
    return path


@pytest.fixture(scope="module", params=tasks.SHIMS)
def ctr(request: pytest.FixtureRequest, archive: Path) -> Iterator[Cli]:
    """ctr on our daemon running ``request.param``'s shim, in a namespace of
    this module's, the image imported."""
    ns = tasks.namespace()
    with tasks.daemon(tasks.shim_config(request.param), [ns]) as d:
        cli = Cli("ctr", d.address, ns)
        cli("images", "import", str(archive))
        yield cli


def _statuses(ctr: Cli) -> dict[str, str]:
    return {row[0]: row[2] for row in table(ctr("tasks", "ls").stdout)[1:]}


def test_run_rm_prints_the_output_and_exits_with_the_process_status(ctr: Cli) -> None:
    hello = ctr("run", "--rm", IMAGE, "t1", "echo", "hello")
    assert hello.stdout == "hello\n"
    three = ctr("run", "--rm", IMAGE, "t2", "sh", "-c", "exit 3", ok=False)
    assert three.returncode == 3, three.stderr
    assert _statuses(ctr) == {}
    assert table(ctr("containers", "ls", "-q").stdout) == []


def test_env_and_cwd_apply(ctr: Cli) -> None:
    out = ctr(
        "run", "--rm", "--env", "GREETING=hi there", "--cwd", "/etc",
        IMAGE, "t3", "sh", "-c", 'echo "$GREETING"; pwd',
    )  # fmt: skip
    assert out.stdout == "hi there\n/etc\n"


def test_detached_task_exec_pause_resume_ps_metrics_kill_rm(ctr: Cli) -> None:
    try:
        ctr("run", "-d", IMAGE, "d1", "sleep", "300")
        rows = table(ctr("tasks", "ls").stdout)
        assert rows[0] == ["TASK", "PID", "STATUS"]
        (task,) = [r for r in rows[1:] if r[0] == "d1"]
        pid = int(task[1])
        assert task[2] == "RUNNING"
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"300"]

        out = ctr("tasks", "exec", "--exec-id", "e1", "d1", "sh", "-c", "echo from exec; exit 4",
                  ok=False)  # fmt: skip
        assert (out.returncode, out.stdout) == (4, "from exec\n")

        ctr("tasks", "pause", "d1")
        assert _statuses(ctr)["d1"] == "PAUSED"
        ctr("tasks", "resume", "d1")
        assert _statuses(ctr)["d1"] == "RUNNING"

        ps = table(ctr("tasks", "ps", "d1").stdout)
        assert ps[0] == ["PID", "INFO"] and [str(pid), "-"] in ps[1:]

        metrics = ctr("tasks", "metrics", "d1").stdout
        assert metrics.splitlines()[0].split() == ["ID", "TIMESTAMP"]
        assert metrics.splitlines()[1].split()[0] == "d1"
        assert "pids.current" in metrics

        ctr("tasks", "kill", "-s", "SIGKILL", "d1")
        deadline = time.monotonic() + 10
        while _statuses(ctr)["d1"] != "STOPPED":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ctr("tasks", "rm", "d1")
        assert "d1" not in _statuses(ctr)
    finally:
        ctr("tasks", "rm", "-f", "d1", ok=False)
        ctr("containers", "rm", "d1", ok=False)
    assert table(ctr("containers", "ls", "-q").stdout) == []


def test_deleted_task_leaves_no_bundle_and_no_mount(ctr: Cli) -> None:
    ctr("run", "--rm", IMAGE, "t4", "true")
    state = Path(ctr.address).parent / "state" / "io.containerd.runtime.v2.task" / ctr.namespace
    assert not (state / "t4").exists()
    assert str(state) not in Path("/proc/self/mountinfo").read_text()


def test_run_t_is_interactive_in_a_pty(ctr: Cli) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: ctr on the pty
        os.execv(ctr.binary, [ctr.binary, "-a", ctr.address, "-n", ctr.namespace,
                              "run", "-t", "--rm", IMAGE, "tty1", "sh"])  # fmt: skip
    try:
        output = b""

        def read_until(marker: bytes, timeout: float = 20) -> None:
            nonlocal output
            deadline = time.monotonic() + timeout
            while marker not in output:
                remaining = deadline - time.monotonic()
                assert remaining > 0, output
                ready, _, _ = select.select([fd], [], [], remaining)
                if ready:
                    try:
                        output += os.read(fd, 4096)
                    except OSError:
                        break

        os.write(fd, b"echo $((6 * 7)); tty\n")
        read_until(b"/dev/pts/")
        assert b"42" in output
        os.write(fd, b"exit 5\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_a_runtime_without_a_shim_fails_and_leaves_nothing(ctr: Cli) -> None:
    ctr("containers", "create", "--runtime", "io.containerd.nosuch.v1", IMAGE, "nr")
    try:
        err = ctr("tasks", "start", "nr", ok=False)
        assert err.returncode == 1
        assert "containerd-shim-nosuch-v1" in err.stderr
        state = Path(ctr.address).parent / "state" / "io.containerd.runtime.v2.task"
        assert not (state / ctr.namespace / "nr").exists()
    finally:
        ctr("containers", "rm", "nr")


def test_the_real_shim_runs_under_any_name_the_config_points_at_it(archive: Path) -> None:
    tasks.shim_config("go")  # skips without it
    ns = tasks.namespace()
    with tasks.daemon(tasks.go_shim_config("io.example.custom.v7"), [ns]) as d:
        cli = Cli("ctr", d.address, ns)
        cli("images", "import", str(archive))
        out = cli("run", "--rm", "--runtime", "io.example.custom.v7", IMAGE, "c1", "echo", "ok")
        assert out.stdout == "ok\n"
