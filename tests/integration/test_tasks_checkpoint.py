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
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.client import Client
from pycontainerd.images import Descriptor
from tests.integration._cli import Cli, table
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import tasks

pytestmark = pytest.mark.integration

IMAGE = tasks.IMAGE
# The count is written aside and renamed into place: a reader that opened the
# file between the shell's truncate and its write would read nothing.
COUNTER = (
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; "
    "sleep 0.1; done"
)


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
        for args in (
            ("tasks", "checkpoint", "ck1"),
            ("tasks", "checkpoint", "--image-path", "/tmp/pcd-never", "ck1"),
            ("containers", "checkpoint", "--task", "ck1", "checkpoint/ck1:2"),
        ):
            _assert_names_criu(ctr, pyctr.error(*args))
        # ctr paused the task for the checkpoint and resumed it after.
        statuses = {row[0]: row[2] for row in table(ctr("tasks", "ls").stdout)[1:]}
        assert statuses["ck1"] == "RUNNING"
        before = _count(ctr, "ck1", "c1")
        tasks.wait_for(lambda: _count(ctr, "ck1", "c2") > before)
        # Nothing was stored under the name containers checkpoint asked for.
        images = ctr("images", "ls", "-q").stdout
        assert "checkpoint/ck1" not in images and "containerd.io/checkpoint" not in images
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


# --- containers checkpoint / restore without CRIU ---------------------------------------
#
# `containers checkpoint` without --task saves what needs no CRIU: the runtime
# options, the image, the rw layer.  A restore also needs the container's spec,
# which only a task checkpoint stores (next to CRIU's image); where CRIU cannot
# run, the tests add it to the index themselves, as a host with CRIU would have
# it, and restore "cold": a new task on the restored root filesystem.

RUNTIME_OPTIONS = "application/vnd.containerd.container.checkpoint.runtime.options+proto"
CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _index(client: Client, ref: str) -> dict[str, Any]:
    target = client.images.get(ref).target
    assert target.media_type == "application/vnd.oci.image.index.v1+json"
    index: dict[str, Any] = json.loads(client.content.read(target.digest))
    return index


def _with_config(client: Client, ref: str, container_id: str, new_ref: str) -> None:
    """``ref``'s index plus the container's spec as a checkpoint config
    (written under a lease: a blob nothing refers to yet is the GC's)."""
    with client.lease():
        _add_config(client, ref, container_id, new_ref)


def _add_config(client: Client, ref: str, container_id: str, new_ref: str) -> None:
    index = _index(client, ref)
    spec = client.containers.get(container_id).spec
    assert spec is not None
    config = spec.SerializeToString()
    digest = client.content.write_blob(f"test-config-{container_id}", config, size=len(config))
    index["manifests"].append({"mediaType": CONFIG, "digest": digest, "size": len(config)})
    data = json.dumps(index).encode()
    labels = {
        f"containerd.io/gc.ref.content.{i}": m["digest"] for i, m in enumerate(index["manifests"])
    }
    index_digest = client.content.write_blob(
        f"test-index-{new_ref}", data, size=len(data), labels=labels
    )
    target = Descriptor("application/vnd.oci.image.index.v1+json", index_digest, len(data))
    client.images.create(new_ref, target)


@pytest.mark.parametrize(("saver", "restorer"), [("ctr", "pyctr"), ("pyctr", "ctr")])
def test_containers_checkpoint_rw_image_then_restore_rw_brings_the_files_back(
    ctr: Cli, saver: str, restorer: str
) -> None:
    save, back = Cli(saver, ctr.address, ctr.namespace), Cli(restorer, ctr.address, ctr.namespace)
    source, copy = f"src-{saver}", f"copy-{restorer}"
    ctr("run", "-d", IMAGE, source, "sleep", "300")
    try:
        ctr("tasks", "exec", "--exec-id", "w", source, "sh", "-c", "echo kept > /tmp/f")
        save("containers", "checkpoint", "--rw", "--image", source, f"ckpt/{source}:1")
        # The task was paused for it and is running again.
        statuses = {row[0]: row[2] for row in table(ctr("tasks", "ls").stdout)[1:]}
        assert statuses[source] == "RUNNING"
        with Client(ctr.address, ctr.namespace) as client:
            index = _index(client, f"ckpt/{source}:1")
            assert [m["mediaType"] for m in index["manifests"]] == [
                RUNTIME_OPTIONS,
                MANIFEST,
                LAYER,
            ]
            assert index["annotations"] == {
                "io.containerd.checkpoint.runtime": "io.containerd.runc.v2",
                "io.containerd.checkpoint.snapshotter": "overlayfs",
                "org.opencontainers.image.ref.name": IMAGE,
            }
            assert index["manifests"][1]["digest"] == client.images.get(IMAGE).target.digest
            # Without a config (only a task checkpoint makes one) there is nothing to restore.
            # (ctr prepares the snapshot before it looks for the config, and
            # leaves it to the GC: a retry takes another id, as with containerd.)
            message = back.error("containers", "restore", f"{copy}-none", f"ckpt/{source}:1")
            assert "not found" in message
            _with_config(client, f"ckpt/{source}:1", source, f"ckpt/{source}:cold")
        back("containers", "restore", "--rw", copy, f"ckpt/{source}:cold")
        try:
            tasks.wait_for(lambda: _running(ctr, copy))
            out = ctr("tasks", "exec", "--exec-id", "r", copy, "cat", "/tmp/f")
            assert out.stdout == "kept\n"
            info = json.loads(ctr("containers", "info", copy).stdout)
            assert (info["Image"], info["Snapshotter"]) == (IMAGE, "overlayfs")
            assert info["Runtime"]["Name"] == "io.containerd.runc.v2"
            assert info["Spec"]["process"]["args"] == ["sleep", "300"]
        finally:
            _remove(ctr, copy)
        # --live asks for the CRIU image, which this checkpoint does not have.
        message = back.error("containers", "restore", "--live", "live", f"ckpt/{source}:cold")
        assert "checkpoint not found in index" in message
    finally:
        _remove(ctr, source)
        for ref in (f"ckpt/{source}:1", f"ckpt/{source}:cold"):
            ctr("images", "rm", ref, ok=False)
        ctr("containers", "rm", "live", ok=False)


def test_restoring_a_task_from_a_checkpoint_names_criu(ctr: Cli) -> None:
    """A checkpoint with a CRIU image in it (any blob of that media type)
    reaches the daemon, which says what it cannot do."""
    ctr("run", "-d", IMAGE, "src-live", "sleep", "300")
    try:
        with Client(ctr.address, ctr.namespace) as client, client.lease():
            ctr("containers", "checkpoint", "src-live", "ckpt/live:1")
            _with_config(client, "ckpt/live:1", "src-live", "ckpt/live:config")
            index = _index(client, "ckpt/live:config")
            fake = _tar(
                {
                    "inventory.img": b"not a CRIU image",
                    # runc reads the stdio of the dumped process first.
                    "descriptors.json": b'["/dev/null", "/dev/null", "/dev/null"]',
                }
            )
            digest = client.content.write_blob("test-criu", fake, size=len(fake))
            index["manifests"].append(
                {"mediaType": "application/vnd.containerd.container.criu.checkpoint.criu.tar",
                 "digest": digest, "size": len(fake)}
            )  # fmt: skip
            data = json.dumps(index).encode()
            labels = {
                f"containerd.io/gc.ref.content.{i}": m["digest"]
                for i, m in enumerate(index["manifests"])
            }
            index_digest = client.content.write_blob(
                "test-live", data, size=len(data), labels=labels
            )
            client.images.create(
                "ckpt/live:criu",
                Descriptor("application/vnd.oci.image.index.v1+json", index_digest, len(data)),
            )
        for tool in ("ctr", "pyctr"):
            cli = Cli(tool, ctr.address, ctr.namespace)
            result = cli(
                "containers", "restore", "--live", f"live-{tool}", "ckpt/live:criu", ok=False
            )
            assert result.returncode == 1
            message = result.stderr
            if ctr.shim == "pyrunc":  # type: ignore[attr-defined]
                assert "restoring from a checkpoint (runc restore with CRIU) is not" in message
            else:
                # Go's shim restores when the task starts: runc restore, then CRIU
                # fails (or is not there to be run).
                assert "OCI runtime restore failed" in message
                if criu_state() == "missing":
                    assert 'CRIU version check failed: exec: "criu"' in message
                else:
                    assert "criu failed: type RESTORE" in message
            ctr("tasks", "rm", f"live-{tool}", ok=False)
            ctr("containers", "rm", f"live-{tool}", ok=False)
            # The unpacked checkpoint went with the task.
            assert not list(Path(tempfile.gettempdir()).glob("ctrd-checkpoint-*"))
    finally:
        _remove(ctr, "src-live")
        for ref in ("ckpt/live:1", "ckpt/live:config", "ckpt/live:criu"):
            ctr("images", "rm", ref, ok=False)


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _running(ctr: Cli, container_id: str) -> bool:
    rows = table(ctr("tasks", "ls").stdout)[1:]
    return any(row[0] == container_id and row[2] == "RUNNING" for row in rows)


def _remove(ctr: Cli, container_id: str) -> None:
    ctr("tasks", "kill", "-s", "SIGKILL", container_id, ok=False)
    tasks.wait_for(lambda: _stopped(ctr, container_id))
    ctr("tasks", "rm", container_id, ok=False)
    ctr("containers", "rm", container_id, ok=False)
