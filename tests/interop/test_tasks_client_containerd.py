"""Tasks against Debian's containerd (through the Go runc shim), and the same
against our daemon: our async and sync clients, and pyctr beside ctr,
running busybox containers.

Every test uses its own containers and removes them, tasks first, even
when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import cio, errdefs
from pycontainerd.client import AsyncClient, Client
from pycontainerd.client._async.containers import with_new_snapshot as async_with_new_snapshot
from pycontainerd.client._async.containers import with_snapshotter as async_with_snapshotter
from pycontainerd.client._sync.containers import with_new_snapshot, with_snapshotter
from pycontainerd.client._sync.task import ProcessStatus
from pycontainerd.oci import spec as oci
from tests.integration.test_images_ctr_acceptance import BUSYBOX, build_oci_archive
from tests.support import daemons
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.interop

IMAGE = "docker.io/library/tasks-busybox:1"
NAMESPACE = "tasks-interop"
APPLETS = ("sh", "echo", "sleep", "cat", "true", "id")
PYCTR = Path(sys.executable).parent / "pyctr"


def _busybox_layer() -> bytes:
    """bin/busybox and the applets the tests run, as links to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "etc", "tmp"):
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


@pytest.fixture(scope="module", params=["containerd", "pycontainerd"])
def target(request: pytest.FixtureRequest) -> Iterator[RunningDaemon]:
    """The daemon under test: Debian's containerd, then ours."""
    if request.param == "containerd":
        yield request.getfixturevalue("containerd")
    else:
        with daemons.pycontainerd() as daemon:
            yield daemon
    # runc keeps a root per namespace under /run/containerd/runc; ours is empty now.
    with contextlib.suppress(OSError):
        Path("/run/containerd/runc", NAMESPACE).rmdir()


@pytest.fixture(scope="module")
def image(target: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    built = build_oci_archive(
        tmp_path_factory.mktemp("img") / "busybox.tar", IMAGE, _busybox_layer()
    )
    with Client(target.address, NAMESPACE) as client:
        with open(built.archive, "rb") as f:
            client.import_archive(f)
        client.get_image(IMAGE).unpack("overlayfs")
    return IMAGE


def _remove_everything(client: Client, id: str) -> None:
    """Kill and delete the task if any, then the container and its snapshot."""
    with contextlib.suppress(errdefs.NotFound):
        container = client.load_container(id)
        with contextlib.suppress(errdefs.NotFound):
            task = container.task()
            with contextlib.suppress(errdefs.ContainerdError):
                task.kill(signal.SIGKILL, all=True)
            with contextlib.suppress(errdefs.ContainerdError):
                task.wait()
            task.delete()
        container.delete(cleanup_snapshot=True)


@pytest.fixture
def client(target: RunningDaemon, image: str) -> Iterator[Client]:
    made: list[str] = []
    with Client(target.address, NAMESPACE) as c:
        c._made = made  # type: ignore[attr-defined]
        try:
            yield c
        finally:
            for id in made:
                _remove_everything(c, id)


def new_id(client: Client) -> str:
    id = f"t-{uuid.uuid4().hex[:10]}"
    client._made.append(id)  # type: ignore[attr-defined]
    return id


def new_container(client: Client, id: str, *args: str, tty: bool = False) -> object:
    image = client.get_image(IMAGE)
    opts = [image.spec_opts(args)]
    if tty:
        opts.append(oci.with_tty)
    spec = oci.generate(NAMESPACE, id, *opts)
    return client.new_container(
        id, with_snapshotter("overlayfs"), with_new_snapshot(id, image), spec=spec
    )


# --- the async client ------------------------------------------------------------------


def test_async_client_captures_output_and_exit_code(client: Client, tmp_path: Path) -> None:
    id = new_id(client)
    address = client.address

    async def scenario() -> tuple[int, int, bytes, bytes, object]:
        async with AsyncClient(address, NAMESPACE) as ac:
            image = await ac.get_image(IMAGE)
            spec = oci.generate(
                NAMESPACE, id, await image.spec_opts(("sh", "-c", "echo out; echo err >&2; exit 3"))
            )
            container = await ac.new_container(
                id,
                async_with_snapshotter("overlayfs"),
                async_with_new_snapshot(id, image),
                spec=spec,
            )
            out, err = io.BytesIO(), io.BytesIO()
            task = await container.new_task(
                cio.new_creator(stdout=out, stderr=err, fifo_dir=tmp_path / "fifo")
            )
            assert task.pid > 0
            exited = asyncio.ensure_future(task.wait())  # waiting before start, as ctr does
            await task.start()
            status = await exited
            deleted = await task.delete()
            await container.delete(cleanup_snapshot=True)
            return status.code, deleted.code, out.getvalue(), err.getvalue(), status.exited_at

    code, deleted_code, out, err, exited_at = asyncio.run(scenario())
    assert (code, deleted_code) == (3, 3)
    assert (out, err) == (b"out\n", b"err\n")
    assert exited_at is not None
    assert list((tmp_path / "fifo").iterdir()) == []  # the FIFOs went with the task


# --- the sync client -------------------------------------------------------------------


def test_sync_client_drives_a_running_task(client: Client, tmp_path: Path) -> None:
    id = new_id(client)
    container = new_container(client, id, "sleep", "60")
    task = container.new_task(cio.null_io)  # type: ignore[attr-defined]
    assert task.status().status == ProcessStatus.CREATED
    task.start()
    assert task.status().status == ProcessStatus.RUNNING
    assert [p.pid for p in task.pids()] == [task.pid]

    task.pause()
    assert task.status().status == ProcessStatus.PAUSED
    task.resume()
    assert task.status().status == ProcessStatus.RUNNING

    metric = task.metrics()
    assert metric.id == id
    assert metric.data.type_url.startswith("io.containerd.cgroups.")
    task.update(resources={"memory": {"limit": 64 << 20}})

    out = io.BytesIO()
    spec = dict(container.spec()["process"])  # type: ignore[attr-defined]
    spec["args"] = ["sh", "-c", "echo from exec; id -u; exit 4"]
    process = task.exec("exec1", spec, cio.new_creator(stdout=out, fifo_dir=tmp_path))
    process.start()
    assert process.pid > 0 and process.pid != task.pid
    assert process.wait().code == 4
    assert process.delete().code == 4
    assert out.getvalue() == b"from exec\n0\n"

    with pytest.raises(errdefs.FailedPrecondition):
        task.delete()  # still running
    task.kill("SIGKILL")
    status = task.wait()
    assert status.code == 128 + signal.SIGKILL
    assert task.delete().code == 128 + signal.SIGKILL
    with pytest.raises(errdefs.NotFound, match="no running task found"):
        container.task()  # type: ignore[attr-defined]


def test_stdin_reaches_the_task_and_its_end_closes_it(client: Client, tmp_path: Path) -> None:
    id = new_id(client)
    container = new_container(client, id, "cat")
    out = io.BytesIO()
    stdin = io.BytesIO(b"line one\nline two\n")
    closer = cio.StdinCloser()
    task = container.new_task(  # type: ignore[attr-defined]
        cio.new_creator(stdin=stdin, stdout=out, fifo_dir=tmp_path, on_stdin_eof=closer)
    )
    closer.bind(task)
    task.start()
    assert task.wait().code == 0  # cat ends: its stdin was closed
    task.delete()
    assert out.getvalue() == b"line one\nline two\n"


def test_log_file_uri_has_the_shim_write_the_output(client: Client, tmp_path: Path) -> None:
    id = new_id(client)
    # One stream only: the Go shim copies stdout and stderr into the file
    # separately and, now and then, loses the race with a fast exit for one.
    container = new_container(client, id, "sh", "-c", "echo to the log")
    log = tmp_path / "task.log"
    task = container.new_task(cio.log_file(log))  # type: ignore[attr-defined]
    assert task.io.config.stdout == f"file://{log}"
    task.start()
    assert task.wait().code == 0
    task.delete()
    # The shim copies the output on its own: it may land just after the exit.
    _wait_for(lambda: log.exists() and log.read_text() == "to the log\n")


def test_delete_force_kills_a_running_task(client: Client) -> None:
    id = new_id(client)
    task = new_container(client, id, "sleep", "60").new_task(cio.null_io)  # type: ignore[attr-defined]
    task.start()
    assert task.delete(force=True).code == 128 + signal.SIGKILL


def test_container_with_a_task_is_not_deleted(client: Client) -> None:
    id = new_id(client)
    container = new_container(client, id, "sleep", "60")
    container.new_task(cio.null_io)  # type: ignore[attr-defined]
    with pytest.raises(errdefs.FailedPrecondition, match="cannot delete running task"):
        container.delete()  # type: ignore[attr-defined]


# --- pyctr beside ctr ------------------------------------------------------------------


def run(
    binary: str, target: RunningDaemon, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-a", target.address, "-n", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def pyctr(target: RunningDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run(str(PYCTR), target, *args)


def ctr(target: RunningDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("ctr")
    if binary is None:
        pytest.skip("Debian's ctr is not installed")
    return run(binary, target, *args)


def test_pyctr_run_rm_prints_the_output_and_exits_with_the_code(
    target: RunningDaemon, client: Client
) -> None:
    id = new_id(client)
    proc = pyctr(target, "run", "--rm", IMAGE, id, "echo", "hello")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hello\n", "")
    proc = pyctr(target, "run", "--rm", IMAGE, id, "sh", "-c", "echo oops >&2; exit 7")
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "", "oops\n")
    assert client.containers.list(f"id=={id}") == []  # --rm removed it
    # ctr does the same.
    proc = ctr(target, "run", "--rm", IMAGE, id, "sh", "-c", "echo oops >&2; exit 7")
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "", "oops\n")


def test_pyctr_run_flags_shape_the_container(
    target: RunningDaemon, client: Client, tmp_path: Path
) -> None:
    id = new_id(client)
    (tmp_path / "seen").write_text("from the host\n")
    proc = pyctr(
        target, "run", "--rm", "--env", "GREETING=hi", "--cwd", "/tmp", "--read-only",
        "--mount", f"type=bind,src={tmp_path},dst=/host,options=rbind:ro",
        IMAGE, id, "sh", "-c", "echo $GREETING; pwd; cat /host/seen; echo x > /x || echo ro",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:3] == ["hi", "/tmp", "from the host"]
    assert proc.stdout.splitlines()[-1] == "ro"


def test_pyctr_run_null_io_and_log_uri(
    target: RunningDaemon, client: Client, tmp_path: Path
) -> None:
    id = new_id(client)
    proc = pyctr(target, "run", "--rm", "--null-io", IMAGE, id, "echo", "lost")
    assert (proc.returncode, proc.stdout) == (0, "")
    log = tmp_path / "out.log"
    proc = pyctr(target, "run", "--rm", "--log-uri", f"file://{log}", IMAGE, id, "echo", "kept")
    assert (proc.returncode, proc.stdout) == (0, "")
    # The shim copies the output on its own: it may land just after the exit.
    _wait_for(lambda: log.exists() and log.read_text() == "kept\n")


def _wait_for(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_pyctr_tasks_commands_match_ctr(target: RunningDaemon, client: Client) -> None:
    id = new_id(client)
    proc = pyctr(target, "run", "-d", IMAGE, id, "sleep", "60")
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
    assert pyctr(target, "tasks", "ls").stdout == ctr(target, "tasks", "ls").stdout
    assert f"{id}\t" not in pyctr(target, "tasks", "ls").stdout
    assert pyctr(target, "t", "ls", "-q").stdout.split() == [id]
    assert pyctr(target, "tasks", "ps", id).stdout == ctr(target, "tasks", "ps", id).stdout

    # An exec with its own output and exit code; ps shows it as ctr does.
    proc = pyctr(target, "tasks", "exec", "--exec-id", "e1", id, "sh", "-c", "echo ex; exit 5")
    assert (proc.returncode, proc.stdout) == (5, "ex\n")
    detached = pyctr(target, "tasks", "exec", "-d", "--exec-id", "e2", id, "sleep", "60")
    assert detached.returncode == 0, detached.stderr
    ps = pyctr(target, "tasks", "ps", id).stdout
    assert ps == ctr(target, "tasks", "ps", id).stdout
    assert "&ProcessDetails{ExecID:e2," in ps

    metrics = pyctr(target, "tasks", "metrics", id).stdout.splitlines()
    expected = ctr(target, "tasks", "metrics", id).stdout.splitlines()
    assert [line.split()[0] for line in metrics if line] == [
        line.split()[0] for line in expected if line
    ]

    assert pyctr(target, "tasks", "pause", id).returncode == 0
    assert "PAUSED" in ctr(target, "tasks", "ls").stdout
    assert pyctr(target, "tasks", "resume", id).returncode == 0
    assert "RUNNING" in ctr(target, "tasks", "ls").stdout

    proc = pyctr(target, "tasks", "rm", id)
    assert proc.returncode == 1
    assert "task must be stopped before deletion: running: failed precondition" in proc.stderr
    assert pyctr(target, "tasks", "kill", "-s", "KILL", "--all", id).returncode == 0
    _wait_for(lambda: "STOPPED" in pyctr(target, "tasks", "ls").stdout)
    proc = pyctr(target, "tasks", "rm", id)
    assert proc.returncode == 0, proc.stderr
    assert "exit with non-zero exit code 137" in proc.stderr
    assert pyctr(target, "tasks", "ls").stdout == ctr(target, "tasks", "ls").stdout

    # No task now: both say so alike.
    ours, theirs = pyctr(target, "tasks", "kill", id), ctr(target, "tasks", "kill", id)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr.removeprefix("pyctr: ") == theirs.stderr.removeprefix("ctr: ")


def test_pyctr_tasks_start_runs_a_created_container(
    target: RunningDaemon, client: Client
) -> None:
    id = new_id(client)
    create = pyctr(target, "containers", "create", IMAGE, id, "sh", "-c", "echo up; exit 2")
    assert create.returncode == 0, create.stderr
    proc = pyctr(target, "tasks", "start", id)
    assert (proc.returncode, proc.stdout) == (2, "up\n")
    assert pyctr(target, "tasks", "ls", "-q").stdout == ""  # deleted after
