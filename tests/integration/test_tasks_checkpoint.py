"""Checkpoint through Debian's ``ctr`` against our daemon, on a host where
CRIU cannot checkpoint: the error names CRIU and says why, and the task
goes on running.

CRIU (Debian's 3.17) fails its own ``criu check`` on this project's test
hosts: their kernel (6.18) splits the vDSO's data pages into ``[vvar]`` and
``[vvar_vclock]`` and CRIU stops at "vdso: Unexpected rt vDSO area bounds".
Where ``criu check`` passes these tests skip: they prove the error, not a
checkpoint.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._cli import Cli, table
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import tasks

pytestmark = pytest.mark.integration

IMAGE = tasks.IMAGE
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"


@functools.cache
def _criu_check() -> tuple[str, str]:
    """``missing``, ``broken`` (``criu check`` fails) or ``works``, and
    the first reason ``criu check`` gave."""
    criu = shutil.which("criu")
    if criu is None:
        return "missing", ""
    check = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=60, check=False)
    if check.returncode == 0:
        return "works", ""
    found = re.search(r"Error \([^)]*\): (?!exited, status)(.*)", check.stderr)
    return "broken", found.group(1).strip() if found else ""


def criu_state() -> str:
    return _criu_check()[0]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "oci.tar"
    build_oci_archive(path, IMAGE, tasks.busybox_layer())
    return path


@pytest.fixture(scope="module", params=tasks.SHIMS)
def ctr(request: pytest.FixtureRequest, archive: Path) -> Iterator[Cli]:
    if criu_state() == "works":
        pytest.skip("CRIU works on this host: these tests prove the error where it cannot")
    ns = tasks.namespace()
    with tasks.daemon(tasks.shim_config(request.param), [ns]) as d:
        cli = Cli("ctr", d.address, ns)
        cli("images", "import", str(archive))
        cli.shim = request.param  # type: ignore[attr-defined]
        yield cli


def _count(ctr: Cli, container_id: str, exec_id: str) -> int:
    out = ctr("tasks", "exec", "--exec-id", exec_id, container_id, "cat", "/tmp/count")
    return int(out.stdout)


def _assert_names_criu(ctr: Cli, message: str) -> None:
    if criu_state() == "missing":
        if ctr.shim == "pyrunc":  # type: ignore[attr-defined]
            assert "CRIU (criu) is not installed on this host" in message
        else:
            assert "criu" in message.lower()
        return
    assert "criu failed: type DUMP" in message
    if ctr.shim == "pyrunc":  # type: ignore[attr-defined]
        # Ours carries CRIU's own reasons out of its log, which goes with the bundle.
        # runc's dump starts as criu check does, and stops at the same place.
        assert "CRIU's dump.log says: " + _criu_check()[1] in message


def test_ctr_and_pyctr_checkpoint_name_criu_and_the_task_runs_on(ctr: Cli) -> None:
    ctr("run", "-d", IMAGE, "ck1", "sh", "-c", COUNTER)
    try:
        tasks.wait_for(lambda: _count_or_zero(ctr, "ck1") > 0)
        for args in (
            ("tasks", "checkpoint", "ck1"),
            ("tasks", "checkpoint", "--exit", "--image-path", "/tmp/pcd-never", "ck1"),
            ("containers", "checkpoint", "--task", "ck1", "checkpoint/ck1:1"),
        ):
            _assert_names_criu(ctr, ctr.error(*args))
        pyctr = Cli("pyctr", ctr.address, ctr.namespace)
        message = pyctr.error("tasks", "checkpoint", "--image-path", "/tmp/pcd-never", "ck1")
        _assert_names_criu(ctr, message)
        # ctr paused the task for the checkpoint and resumed it after.
        statuses = {row[0]: row[2] for row in table(ctr("tasks", "ls").stdout)[1:]}
        assert statuses["ck1"] == "RUNNING"
        before = _count(ctr, "ck1", "c1")
        tasks.wait_for(lambda: _count(ctr, "ck1", "c2") > before)
        # Nothing was stored under the name containers checkpoint asked for.
        assert "checkpoint/ck1:1" not in ctr("images", "ls", "-q").stdout
    finally:
        ctr("tasks", "kill", "-s", "SIGKILL", "ck1", ok=False)
        tasks.wait_for(lambda: _stopped(ctr, "ck1"))
        ctr("tasks", "rm", "ck1", ok=False)
        ctr("containers", "rm", "ck1", ok=False)


def _count_or_zero(ctr: Cli, container_id: str) -> int:
    out = ctr("tasks", "exec", "--exec-id", "w", container_id, "cat", "/tmp/count", ok=False)
    return int(out.stdout) if out.returncode == 0 and out.stdout.strip() else 0


def _stopped(ctr: Cli, container_id: str) -> bool:
    rows = table(ctr("tasks", "ls").stdout)[1:]
    return all(row[2] == "STOPPED" for row in rows if row[0] == container_id)
