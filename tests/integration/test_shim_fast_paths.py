"""The two shortcuts on ``ctr run``'s path (issue 11's latency target).

- The daemon finds a live server of our shim itself and skips ``SHIM
  start`` (an interpreter start); with no live server it runs ``start``,
  which spawns one.
- Our shim starts a runc container by releasing runc's ``exec.fifo``
  itself instead of running ``runc start``; an init that died before it is
  started is a clear error, not a hang (the fifo's own cases are unit tests
  in ``tests/unit/test_shim_pieces.py``).
- Our shim answers the Delete of an exited container before ``runc
  delete`` has removed runc's state and cgroups; a Create of the same id
  waits for it, and nothing of it is left behind.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.integration._cli import Cli
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import daemons, tasks

pytestmark = pytest.mark.integration

IMAGE = tasks.IMAGE

#: Counts the daemon's ``SHIM start`` runs, one line each, in $START_LOG.
PRELUDE = """
import os
from pycontainerd.runtime import manager as _manager
_start_shim = _manager.start_shim
async def _counted(*args, **kwargs):
    with open(os.environ["START_LOG"], "a") as f:
        f.write("start\\n")
    return await _start_shim(*args, **kwargs)
_manager.start_shim = _counted
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "oci.tar"
    build_oci_archive(path, IMAGE, tasks.busybox_layer())
    return path


@pytest.fixture
def counted(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Cli, Path, daemons.RunningDaemon]]:
    log = tmp_path / "starts"
    log.touch()
    monkeypatch.setenv("START_LOG", str(log))
    ns = tasks.namespace()
    with daemons.pycontainerd(prelude=PRELUDE) as d:
        try:
            cli = Cli("ctr", d.address, ns)
            cli("images", "import", str(archive))
            yield cli, log, d
        finally:
            tasks.reap(d.address, [ns], d.root.parent)


def _starts(log: Path) -> int:
    return len(log.read_text().splitlines())


def test_a_live_server_takes_the_next_container_without_a_start(
    counted: tuple[Cli, Path, daemons.RunningDaemon],
) -> None:
    ctr, log, d = counted
    assert ctr("run", "--rm", IMAGE, "c1", "echo", "one").stdout == "one\n"
    assert _starts(log) == 1
    servers = tasks.shim_pids(d.address)
    assert len(servers) == 1
    assert ctr("run", "--rm", IMAGE, "c2", "echo", "two").stdout == "two\n"
    assert _starts(log) == 1, "the live server was not used"
    assert tasks.shim_pids(d.address) == servers

    # The server killed: the next container runs ``start``, which spawns one.
    os.kill(servers[0], signal.SIGKILL)
    tasks.wait_for(lambda: not tasks.shim_pids(d.address))
    assert ctr("run", "--rm", IMAGE, "c3", "echo", "three").stdout == "three\n"
    assert _starts(log) == 2
    assert tasks.shim_pids(d.address) not in ([], servers)


def test_a_container_whose_init_died_before_start_fails_to_start_clearly(
    counted: tuple[Cli, Path, daemons.RunningDaemon],
) -> None:
    ctr, _log, d = counted
    ctr("containers", "create", IMAGE, "dead", "sleep", "100")
    metadata = [("containerd-namespace", ctr.namespace or "")]
    with grpc.insecure_channel(f"unix://{d.address}") as channel:
        stub = tasks_pb2_grpc.TasksStub(channel)
        mounts = snapshots_pb2_grpc.SnapshotsStub(channel).Mounts(
            snapshots_pb2.MountsRequest(snapshotter="overlayfs", key="dead"),
            metadata=metadata,
            timeout=10,
        )
        created = stub.Create(
            tasks_pb2.CreateTaskRequest(container_id="dead", rootfs=mounts.mounts),
            metadata=metadata,
            timeout=30,
        )
        os.kill(created.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{created.pid}") and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as failed:
            stub.Start(tasks_pb2.StartRequest(container_id="dead"), metadata=metadata, timeout=10)
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not in the created state" in (failed.value.details() or "")
        stub.Delete(tasks_pb2.DeleteTaskRequest(container_id="dead"), metadata=metadata, timeout=30)
    ctr("containers", "rm", "dead")
    # runc's own delete of an exited container runs after Delete answered.
    tasks.wait_for(lambda: not (tasks.RUNC_STATE / (ctr.namespace or "") / "dead").exists())


def test_a_task_created_with_no_rootfs_fails_as_runc_says_and_leaves_no_bundle(
    counted: tuple[Cli, Path, daemons.RunningDaemon],
) -> None:
    """runc makes its mount points in the bare ``rootfs`` directory; the
    bundle still goes, and the answer is runc's error, not an internal one."""
    ctr, _log, d = counted
    ctr("containers", "create", IMAGE, "bare", "sleep", "100")
    metadata = [("containerd-namespace", ctr.namespace or "")]
    with (
        grpc.insecure_channel(f"unix://{d.address}") as channel,
        pytest.raises(grpc.RpcError) as failed,
    ):
        tasks_pb2_grpc.TasksStub(channel).Create(
            tasks_pb2.CreateTaskRequest(container_id="bare"), metadata=metadata, timeout=30
        )
    assert failed.value.code() == grpc.StatusCode.UNKNOWN
    assert "executable file not found" in (failed.value.details() or "")
    state = d.state / "io.containerd.runtime.v2.task" / (ctr.namespace or "")
    assert not state.exists() or list(state.iterdir()) == []
    ctr("containers", "rm", "bare")


def test_start_releases_the_container_and_runc_lists_it_running(
    counted: tuple[Cli, Path, daemons.RunningDaemon],
) -> None:
    ctr, _log, _d = counted
    ctr("run", "-d", IMAGE, "live", "sleep", "100")
    state = tasks.RUNC_STATE / (ctr.namespace or "") / "live"
    assert not (state / "exec.fifo").exists()
    assert '"status": "running"' in ctr_runc_state(state.parent, "live")
    ctr("tasks", "kill", "-s", "SIGKILL", "live")
    tasks.wait_for(lambda: "STOPPED" in ctr("tasks", "ls").stdout)
    ctr("tasks", "rm", "live")
    ctr("containers", "rm", "live")


def ctr_runc_state(root: Path, id: str) -> str:
    import subprocess

    return subprocess.run(
        ["runc", "--root", str(root), "state", id], capture_output=True, text=True, check=True
    ).stdout


def test_runc_delete_after_the_answer_leaves_nothing_and_an_id_can_be_reused_at_once(
    counted: tuple[Cli, Path, daemons.RunningDaemon],
) -> None:
    ctr, _log, _d = counted
    state = tasks.RUNC_STATE / (ctr.namespace or "") / "again"
    for n in range(5):
        # Each Create of "again" comes right after the last one's Delete.
        assert ctr("run", "--rm", IMAGE, "again", "echo", str(n)).stdout == f"{n}\n"
    tasks.wait_for(lambda: not state.exists())
    cgroups = [
        path for path in Path("/sys/fs/cgroup").glob(f"**/{ctr.namespace}/again") if path.is_dir()
    ]
    assert cgroups == []
