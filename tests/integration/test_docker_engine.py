"""Docker Engine runs its containers on our daemon (issue 13, part 5).

Debian's ``dockerd`` 20.10 is started with ``--containerd`` on our socket
(everything else on private paths: see ``tests/support/dockerd.py``); it
pulls a busybox image from a ``docker-registry`` on loopback into its own
graphdriver and runs containers in containerd's ``moby`` namespace, with
its runc options (``BinaryName``, ``Root`` under its exec root) and fifos
under its own bundle directory.  The tests drive ``/usr/bin/docker`` as a
user would and check what it reports (output, exit codes, ``docker
inspect`` states) and what our daemon holds.  Each runs twice: on our shim
(the default for ``io.containerd.runc.v2``) and on Debian's Go shim mapped
by config.

The module is skipped only when dockerd or its client is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pycontainerd.client import Client
from pycontainerd.remotes import Resolver
from tests.support import dockerd, tasks
from tests.support.registry import busybox_image, push_image, registry

_missing = dockerd.available()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_missing is not None, reason=_missing or ""),
]


@dataclass
class Engine:
    daemon: tasks.Daemon
    docker: dockerd.RunningDockerd
    image: str

    def run_d(self, *command: str, options: tuple[str, ...] = ()) -> str:
        """``docker run -d`` under a unique name; the name.  A container
        that ignores SIGTERM is killed 1s after it (on ``docker stop`` or
        when dockerd shuts down), not 10s."""
        name = f"t-{uuid.uuid4().hex[:10]}"
        self.docker.docker(
            "run", "-d", "--network", "none", "--stop-timeout", "1", "--name", name,
            *options, self.image, *command,
        )  # fmt: skip
        return name

    def ours(self) -> Client:
        return Client(self.daemon.address, dockerd.NAMESPACE, timeout=10)


@pytest.fixture(scope="module")
def image_ref() -> Iterator[str]:
    """busybox in a registry on loopback (Docker schema 2 media types)."""
    with registry() as reg:
        ref = f"{reg.host}/busybox:test"

        async def push() -> None:
            async with Resolver(plain_http=True) as resolver:
                await push_image(resolver, ref, busybox_image(media_types="docker"))

        asyncio.run(push())
        yield ref


@contextlib.contextmanager
def engine(shim: str, image: str, *, live_restore: bool = False) -> Iterator[Engine]:
    """Our daemon on ``shim``, dockerd on it, the image pulled; everything
    (containers, dockerd, shims, runc state, mounts) gone on exit."""
    with (
        tasks.daemon(tasks.shim_config(shim), [dockerd.NAMESPACE]) as ours,
        dockerd.dockerd(ours.address, live_restore=live_restore) as docker,
    ):
        ours.sockets.add(_our_shim_socket(ours.address))
        docker.docker("pull", "-q", image, timeout=120)
        yield Engine(ours, docker, image)


def _our_shim_socket(address: str) -> str:
    from pycontainerd.shim import main as shim_entry

    return shim_entry.socket_path(address, dockerd.NAMESPACE, "")


@pytest.fixture(scope="module", params=tasks.SHIMS)
def env(request: pytest.FixtureRequest, image_ref: str) -> Iterator[Engine]:
    with engine(request.param, image_ref) as e:
        yield e


def _wait_state(env: Engine, name: str, key: str, value: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (state := env.docker.state(name))[key] != value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: State.{key} is {state[key]!r}, not {value!r}: {state}")
        time.sleep(0.05)


def test_run_rm_prints_output_and_leaves_nothing_in_our_daemon(env: Engine) -> None:
    result = env.docker.docker("run", "--rm", "--network", "none", env.image, "echo", "hello")

    assert result.stdout == "hello\n"
    assert env.docker.docker("ps", "-aq").stdout == ""
    with env.ours() as client:
        assert client.list_containers() == []
        assert client.tasks.list() == []


def test_run_rm_exit_code_and_stderr_propagate(env: Engine) -> None:
    result = env.docker.docker(
        "run",
        "--rm",
        "--network",
        "none",
        env.image,
        "sh",
        "-c",
        "echo oops >&2; exit 7",
        check=False,
    )

    assert result.returncode == 7
    assert "oops" in result.stderr


def test_run_interactive_stdin_reaches_the_container_and_its_end_closes_it(env: Engine) -> None:
    result = env.docker.docker(
        "run", "-i", "--rm", "--network", "none", env.image, "cat", input="piped\nin\n"
    )

    assert result.stdout == "piped\nin\n"  # cat saw EOF: CloseIO reached the shim


def _on_terminal(env: Engine, *args: str, rows: int = 33, columns: int = 111) -> tuple[int, str]:
    """Run ``docker ARGS`` on a pseudo-terminal of ``rows`` x ``columns``;
    its exit code and what it printed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(
        [dockerd.DOCKER, "-H", env.docker.host, *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        env={**os.environ, "DOCKER_CONFIG": str(env.docker.base / "client")},
    )
    os.close(terminal)
    output = b""
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # EIO: the terminal's last holder closed it
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        return process.wait(10), output.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)


#: The client sends its terminal's size once the process has started: until
#: it lands the terminal is 0 x 0, which busybox's ``stty size`` does not
#: print (it complains instead).  Wait for a size (10 s at most).
SIZED = (
    'i=0; while s=$(busybox stty size 2>/dev/null); [ -z "$s" ] || [ "$s" = "0 0" ]; do '
    "[ $i -lt 100 ] || break; sleep 0.1; i=$((i+1)); done"
)


def test_tty_run_and_exec_get_the_clients_terminal_size(env: Engine) -> None:
    code, output = _on_terminal(
        env, "run", "-it", "--rm", "--network", "none", env.image,
        "sh", "-c", f"{SIZED}; busybox stty size; exit 3",
    )  # fmt: skip

    assert (code, output) == (3, "33 111\r\n")
    name = env.run_d("sleep", "1000")
    code, output = _on_terminal(
        env, "exec", "-it", name, "sh", "-c", f"{SIZED}; busybox stty size; busybox tty",
        rows=20, columns=70,
    )  # fmt: skip
    assert (code, output) == (0, "20 70\r\n/dev/pts/0\r\n")
    env.docker.docker("rm", "-f", name)


def test_run_d_runs_in_our_daemon_and_logs_show_its_output(env: Engine) -> None:
    name = env.run_d("sh", "-c", "echo to-out; echo to-err >&2; exec sleep 1000")
    container_id = env.docker.inspect(name)["Id"]

    with env.ours() as client:
        [container] = client.list_containers()
        assert container.id == container_id
        [task] = client.tasks.list()
        assert task.id == container_id  # containerd leaves container_id empty here
        assert task.status.value == "running"
        assert task.pid == env.docker.state(name)["Pid"]
    # The two streams reach the log each on its own: wait for both.
    deadline = time.monotonic() + 10
    while "to-err" not in (logs := env.docker.docker("logs", name)).stderr or not logs.stdout:
        assert time.monotonic() < deadline, logs
        time.sleep(0.05)
    assert logs.stdout == "to-out\n"
    assert logs.stderr == "to-err\n"
    env.docker.docker("rm", "-f", name)


def test_exited_container_reports_its_exit_code(env: Engine) -> None:
    name = env.run_d("sh", "-c", "exit 3")

    assert env.docker.docker("wait", name).stdout.strip() == "3"
    state = env.docker.state(name)
    assert (state["Status"], state["Running"], state["ExitCode"]) == ("exited", False, 3)
    env.docker.docker("rm", name)


def test_exec_runs_in_the_container_with_stdin_and_exit_code(env: Engine) -> None:
    name = env.run_d("sleep", "1000")

    assert env.docker.docker("exec", name, "echo", "from-exec").stdout == "from-exec\n"
    piped = env.docker.docker("exec", "-i", name, "cat", input="through stdin")
    assert piped.stdout == "through stdin"
    failed = env.docker.docker("exec", name, "sh", "-c", "exit 5", check=False)
    assert failed.returncode == 5
    # The exec saw the container's filesystem and its PID 1.
    assert env.docker.docker("exec", name, "cat", "/proc/1/cmdline").stdout == "sleep\x001000\x00"
    env.docker.docker("rm", "-f", name)


def test_stop_sends_sigterm_then_the_container_exits(env: Engine) -> None:
    name = env.run_d("sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done")

    started = time.monotonic()
    env.docker.docker("stop", "-t", "10", name)

    assert time.monotonic() - started < 5  # SIGTERM was enough; no wait for the timeout
    state = env.docker.state(name)
    assert (state["Status"], state["Running"], state["ExitCode"]) == ("exited", False, 0)
    with env.ours() as client:
        assert client.tasks.list() == []
    env.docker.docker("rm", name)


def test_stop_kills_a_container_that_ignores_sigterm(env: Engine) -> None:
    name = env.run_d("sleep", "1000")  # PID 1 has no default action for SIGTERM

    env.docker.docker("stop", "-t", "1", name)

    state = env.docker.state(name)
    assert (state["Status"], state["ExitCode"]) == ("exited", 137)
    env.docker.docker("rm", name)


def test_kill_sends_sigkill(env: Engine) -> None:
    name = env.run_d("sleep", "1000")

    env.docker.docker("kill", name)

    _wait_state(env, name, "Status", "exited")
    assert env.docker.state(name)["ExitCode"] == 137
    env.docker.docker("rm", name)


def test_pause_and_unpause(env: Engine) -> None:
    name = env.run_d("sleep", "1000")
    container_id = env.docker.inspect(name)["Id"]

    env.docker.docker("pause", name)
    state = env.docker.state(name)
    assert (state["Status"], state["Paused"]) == ("paused", True)
    with env.ours() as client:
        assert client.tasks.get(str(container_id)).status.value == "paused"

    env.docker.docker("unpause", name)
    state = env.docker.state(name)
    assert (state["Status"], state["Paused"], state["Running"]) == ("running", False, True)
    with env.ours() as client:
        assert client.tasks.get(str(container_id)).status.value == "running"
    assert env.docker.docker("exec", name, "true").returncode == 0
    env.docker.docker("rm", "-f", name)


def test_rm_force_removes_a_running_container_from_our_daemon(env: Engine) -> None:
    name = env.run_d("sleep", "1000")

    env.docker.docker("rm", "-f", name)

    assert name not in env.docker.docker("ps", "-a", "--format", "{{.Names}}").stdout
    with env.ours() as client:
        assert client.list_containers() == []
        assert client.tasks.list() == []


def test_stats_come_from_our_daemon_in_containerds_shape(env: Engine) -> None:
    name = env.run_d("sleep", "1000")

    stats = env.docker.api(f"/containers/{name}/stats?stream=false")

    assert isinstance(stats, dict)
    assert stats["pids_stats"]["current"] == 1
    assert stats["memory_stats"]["usage"] > 0
    assert stats["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    # Lists, not null, even with no block I/O: dockerd copies what it gets.
    assert all(value == [] or isinstance(value, list) for value in stats["blkio_stats"].values())
    assert env.docker.docker("top", name).stdout.splitlines()[1].endswith("sleep 1000")
    env.docker.docker("rm", "-f", name)


def test_restart_always_container_comes_back_after_dockerd_restarts(env: Engine) -> None:
    plain = env.run_d("sleep", "1000")
    name = env.run_d("sleep", "1000", options=("--restart", "always"))
    old_pid = env.docker.state(name)["Pid"]

    env.docker.restart()  # no live restore: dockerd stops its containers as it goes

    _wait_state(env, name, "Running", True)
    assert env.docker.state(name)["Pid"] != old_pid
    assert env.docker.state(plain)["Status"] == "exited"
    assert env.docker.docker("exec", name, "echo", "back").stdout == "back\n"
    with env.ours() as client:
        [task] = client.tasks.list()
        assert task.id == env.docker.inspect(name)["Id"]
    env.docker.docker("rm", "-f", name, plain)


@pytest.mark.parametrize("shim", tasks.SHIMS)
def test_live_restore_keeps_containers_on_our_daemon_across_a_dockerd_restart(
    shim: str, image_ref: str
) -> None:
    with engine(shim, image_ref, live_restore=True) as env:
        ticker = env.run_d("sh", "-c", "while true; do echo tick; sleep 0.1; done")
        quitter = env.run_d("sh", "-c", "sleep 0.5; exit 4")
        pid = env.docker.state(ticker)["Pid"]

        env.docker.restart(down_for=1)  # the quitter exits while dockerd is down

        assert env.docker.state(ticker)["Pid"] == pid
        assert env.docker.state(ticker)["Running"] is True
        _wait_state(env, quitter, "Status", "exited")
        assert env.docker.state(quitter)["ExitCode"] == 4
        assert env.docker.docker("exec", ticker, "echo", "x").stdout == "x\n"
        # The restored container's output still reaches its log (fifos reopened).
        before = env.docker.docker("logs", ticker).stdout.count("tick")
        deadline = time.monotonic() + 10
        while env.docker.docker("logs", ticker).stdout.count("tick") <= before:
            assert time.monotonic() < deadline, "no output after the restore"
            time.sleep(0.1)
        env.docker.docker("stop", "-t", "1", ticker)
        assert env.docker.state(ticker)["Status"] == "exited"


@pytest.mark.parametrize("shim", tasks.SHIMS)
def test_containers_survive_a_restart_of_our_daemon(shim: str, image_ref: str) -> None:
    with engine(shim, image_ref) as env:
        name = env.run_d("sleep", "1000")
        pid = env.docker.state(name)["Pid"]

        env.daemon.kill()
        env.daemon.start()

        # dockerd reconnects on its own; its view is unchanged and live.
        assert env.docker.docker("ps", "--format", "{{.Names}}").stdout.split() == [name]
        state = env.docker.state(name)
        assert (state["Status"], state["Pid"]) == ("running", pid)
        # Its gRPC channel redials with a backoff (as after a restart of
        # containerd): an exec may be refused until it has.
        deadline = time.monotonic() + 15
        while (after := env.docker.docker("exec", name, "echo", "after", check=False)).returncode:
            assert "unavailable" in after.stdout + after.stderr, after
            assert time.monotonic() < deadline, after
            time.sleep(0.2)
        assert after.stdout == "after\n"
        env.docker.docker("stop", "-t", "1", name)
        state = env.docker.state(name)
        assert (state["Status"], state["ExitCode"]) == ("exited", 137)
        env.docker.docker("rm", name)
        with env.ours() as client:
            assert client.list_containers() == []
