"""Our shim, ``containerd-shim-pyrunc-v2``, under Debian's containerd.

containerd finds the shim on its PATH by the runtime name
``io.containerd.pyrunc.v2`` and drives it as it drives its own: ``start``,
the ``containerd.task.v2.Task`` calls over ttrpc, ``delete`` after the
connection closes, and the task events the shim forwards to its ttrpc
socket.  ``ctr`` is the client.  Each test runs in a namespace of its own,
so each gets a shim server of its own; everything a test starts (tasks,
containers, shim servers, runc state) is removed after it, pass or fail.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd.shim import main as shim_main
from tests.integration.test_images_ctr_acceptance import BUSYBOX, build_oci_archive
from tests.support import daemons
from tests.support.ctr_events import CtrEvents, ctr_events

pytestmark = pytest.mark.interop

RUNTIME = "io.containerd.pyrunc.v2"
IMAGE = "docker.io/library/pyrunc-shim:test"
APPLETS = ("sh", "echo", "sleep", "true", "cat")


def _rootfs_layer() -> bytes:
    """busybox with the applets the tests call, and the mount points runc wants."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


def _our_shims(address: str) -> list[int]:
    """Pids of our shim servers started for the daemon at ``address``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"containerd-shim-pyrunc-v2") for a in argv) and address.encode() in argv:
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="module")
def real() -> Iterator[daemons.RunningDaemon]:
    """Debian's containerd, with our shim on its PATH."""
    if shutil.which("containerd") is None or shutil.which("runc") is None:
        pytest.skip("containerd and runc are needed")
    with daemons.temp_base("ctdshim-") as base:
        address = str(base / "c.sock")
        log = base / "containerd.log"
        env = {**os.environ, "PATH": f"{daemons.VENV_BIN}:{os.environ.get('PATH', '')}"}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                daemons.containerd_args(base, address),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            daemons.wait_serving(address, proc, log)
            yield daemons.RunningDaemon(address, base / "root", base / "state", proc, log)
        finally:
            daemons.stop(proc)
            for pid in _our_shims(address):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shim-image") / "image.tar"
    build_oci_archive(path, IMAGE, _rootfs_layer())
    return path


class Ctr:
    """``ctr`` against one daemon, in one namespace."""

    def __init__(self, address: str, namespace: str) -> None:
        self.address = address
        self.namespace = namespace

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", "-a", self.address, "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {result.returncode}\n{result.stderr}")
        return result

    def task_status(self, container_id: str) -> str | None:
        for line in self("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == container_id:
                return fields[-1]
        return None


@pytest.fixture
def ctr(real: daemons.RunningDaemon, archive: Path) -> Iterator[Ctr]:
    namespace = f"shim-{uuid.uuid4().hex[:8]}"
    client = Ctr(real.address, namespace)
    client("images", "import", str(archive))
    try:
        yield client
    finally:
        for line in client("task", "ls", check=False).stdout.splitlines()[1:]:
            task = line.split()[0]
            client("task", "kill", "-s", "SIGKILL", task, check=False)
            client("task", "rm", "-f", task, check=False)
        for line in client("containers", "ls", "-q", check=False).stdout.splitlines():
            client("containers", "rm", line.strip(), check=False)
        client("images", "rm", IMAGE, check=False)
        path = shim_main.socket_path(real.address, namespace, "")
        for pid in _our_shims(real.address):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if namespace.encode() in argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for leftover in (path, path + ".lock", path + ".log"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        _remove_runc_root(namespace)
        client("namespaces", "rm", namespace, check=False)


def _remove_runc_root(namespace: str) -> None:
    runc_root = Path(shim_main.RUNC_ROOT) / namespace
    if runc_root.is_dir():
        for state in runc_root.iterdir():
            subprocess.run(
                ["runc", "--root", str(runc_root), "delete", "-f", state.name],
                capture_output=True,
                check=False,
            )
        with contextlib.suppress(OSError):
            runc_root.rmdir()


def _wait_for(predicate: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_ctr_run_rm_prints_the_containers_output(ctr: Ctr) -> None:
    result = ctr("run", "--rm", "--runtime", RUNTIME, IMAGE, "hello", "echo", "hi")
    assert result.stdout == "hi\n"
    assert ctr("containers", "ls", "-q").stdout.strip() == ""


def test_ctr_run_returns_the_containers_exit_code(ctr: Ctr) -> None:
    result = ctr(
        "run", "--rm", "--runtime", RUNTIME, IMAGE, "exits", "sh", "-c", "exit 3", check=False
    )
    assert result.returncode == 3, result.stderr


def test_stderr_and_stdout_reach_ctr_separately(ctr: Ctr) -> None:
    result = ctr(
        "run", "--rm", "--runtime", RUNTIME, IMAGE, "streams", "sh", "-c", "echo out; echo err >&2"
    )
    assert (result.stdout, result.stderr) == ("out\n", "err\n")


def _topics_until(events: CtrEvents, topic: str) -> list[str]:
    """The topics of the events up to the first ``topic``.  The shim
    forwards its events on its own: the last may come after the ``ctr``
    command that caused it has returned."""
    return [e.topic for e in events.until(lambda e: e.topic == topic)]


def test_the_shim_forwards_its_task_events_to_containerd(ctr: Ctr) -> None:
    with ctr_events("ctr", ctr.address, ctr.namespace) as events:
        ctr("run", "--rm", "--runtime", RUNTIME, IMAGE, "evented", "true")
        # ``--rm`` deletes the task: its delete is the last of its events.
        topics = _topics_until(events, "/tasks/delete")
    topics = [t for t in topics if t.startswith("/tasks/")]
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]


def test_log_uri_file_gets_both_streams_and_null_io_gets_none(ctr: Ctr, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "c.log"
    ctr(
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--log-uri",
        f"file://{log}",
        IMAGE,
        "logged",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
    )
    # The shim copies each stream on its own: a line may land just after the exit.
    _wait_for(lambda: len(log.read_text().splitlines()) == 2)
    assert sorted(log.read_text().splitlines()) == ["to-err", "to-out"]
    quiet = ctr("run", "--rm", "--runtime", RUNTIME, "--null-io", IMAGE, "quiet", "echo", "lost")
    assert quiet.stdout == ""


def test_a_terminal_reaches_ctr_through_the_console_socket(ctr: Ctr) -> None:
    if shutil.which("script") is None:
        pytest.skip("script(1) provides ctr its tty here")
    command = (
        f"ctr -a {ctr.address} -n {ctr.namespace} run --rm -t --runtime {RUNTIME} {IMAGE} "
        "term sh -c 'test -t 0 && test -t 1 && echo on-a-tty'"
    )
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout
    assert b"on-a-tty" in result.stdout


def test_checkpoint_without_criu_is_a_clear_error(ctr: Ctr) -> None:
    """Without CRIU, or with a CRIU that fails (Debian's 3.17 on a 6.x
    kernel fails its own ``criu check``): the error says which, and the
    task runs on."""
    criu = shutil.which("criu")
    if criu is not None and subprocess.run([criu, "check"], capture_output=True).returncode == 0:
        pytest.skip("CRIU works here")
    ctr("run", "-d", "--runtime", RUNTIME, IMAGE, "frozen", "sleep", "600")
    result = ctr("task", "checkpoint", "frozen", check=False)
    assert result.returncode != 0
    if criu is None:
        assert "CRIU (criu) is not installed" in result.stderr
    else:
        assert "criu failed: type DUMP" in result.stderr
        assert "CRIU's dump.log says: " in result.stderr
    assert ctr.task_status("frozen") == "RUNNING"


def test_a_detached_task_execs_pauses_resumes_reports_and_dies(ctr: Ctr) -> None:
    ctr("run", "-d", "--runtime", RUNTIME, IMAGE, "web", "sleep", "600")
    assert ctr.task_status("web") == "RUNNING"

    exec_result = ctr(
        "task",
        "exec",
        "--exec-id",
        "probe",
        "web",
        "sh",
        "-c",
        "echo from-exec; exit 4",
        check=False,
    )
    assert exec_result.stdout == "from-exec\n"
    assert exec_result.returncode == 4

    with ctr_events("ctr", ctr.address, ctr.namespace) as events:
        ctr("task", "pause", "web")
        assert ctr.task_status("web") == "PAUSED"
        ctr("task", "resume", "web")
        assert ctr.task_status("web") == "RUNNING"
        topics = _topics_until(events, "/tasks/resumed")
    assert topics == ["/tasks/paused", "/tasks/resumed"]

    ps = ctr("task", "ps", "web").stdout.splitlines()
    assert ps[0].split()[:2] == ["PID", "INFO"]
    assert len(ps) >= 2 and ps[1].split()[0].isdigit()

    metrics = ctr("task", "metrics", "web").stdout
    assert "pids.current" in metrics or "pids" in metrics, metrics

    ctr("task", "kill", "-s", "SIGKILL", "web")
    _wait_for(lambda: ctr.task_status("web") == "STOPPED")
    ctr("task", "rm", "web")
    assert ctr.task_status("web") is None
    ctr("containers", "rm", "web")


def test_a_killed_shim_server_leaves_its_tasks_exited_and_nothing_hangs(
    ctr: Ctr, real: daemons.RunningDaemon
) -> None:
    ctr("run", "-d", "--runtime", RUNTIME, IMAGE, "doomed", "sleep", "600")
    assert ctr.task_status("doomed") == "RUNNING"
    servers = [
        pid
        for pid in _our_shims(real.address)
        if ctr.namespace.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    assert len(servers) == 1
    os.kill(servers[0], signal.SIGKILL)
    # containerd sees the connection close, runs our `delete`, and drops the task.
    _wait_for(lambda: ctr.task_status("doomed") in (None, "STOPPED"))
    runc_state = Path(shim_main.RUNC_ROOT) / ctr.namespace / "doomed"
    _wait_for(lambda: not runc_state.exists())
    ctr("containers", "rm", "doomed")
    # And the namespace gets a new server for its next container.
    assert ctr("run", "--rm", "--runtime", RUNTIME, IMAGE, "after", "echo", "ok").stdout == "ok\n"


def test_containers_outlive_a_containerd_restart(archive: Path) -> None:
    """containerd goes away and comes back on the same state: the task is
    still running, its shim still answers, and it can be exec'd and killed."""
    with daemons.temp_base("ctdrs-") as base:
        address = str(base / "c.sock")
        env = {**os.environ, "PATH": f"{daemons.VENV_BIN}:{os.environ.get('PATH', '')}"}
        log = base / "containerd.log"

        def launch() -> subprocess.Popen[bytes]:
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    daemons.containerd_args(base, address),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            daemons.wait_serving(address, proc, log)
            return proc

        namespace = f"shim-{uuid.uuid4().hex[:8]}"
        ctr = Ctr(address, namespace)
        proc = launch()
        try:
            ctr("images", "import", str(archive))
            ctr("run", "-d", "--runtime", RUNTIME, IMAGE, "survivor", "sleep", "600")
            pid = ctr("task", "ls").stdout.splitlines()[1].split()[1]
            daemons.stop(proc)
            assert Path(f"/proc/{pid}").exists()
            proc = launch()
            assert ctr.task_status("survivor") == "RUNNING"
            assert (
                ctr("task", "exec", "--exec-id", "again", "survivor", "echo", "still-here").stdout
                == "still-here\n"
            )
            ctr("task", "kill", "-s", "SIGKILL", "survivor")
            _wait_for(lambda: ctr.task_status("survivor") == "STOPPED")
            ctr("task", "rm", "survivor")
            ctr("containers", "rm", "survivor")
        finally:
            for line in ctr("task", "ls", check=False).stdout.splitlines()[1:]:
                ctr("task", "rm", "-f", line.split()[0], check=False)
            daemons.stop(proc)
            for shim in _our_shims(address):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(shim, signal.SIGKILL)
            _remove_runc_root(namespace)
            path = shim_main.socket_path(address, namespace, "")
            for leftover in (path, path + ".lock", path + ".log"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
