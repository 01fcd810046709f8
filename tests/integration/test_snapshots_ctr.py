"""Debian's ``ctr snapshots`` against our daemon, with real mounts.

Each command's output is what ``ctr`` prints against containerd 1.6 (the
same tables, ``mount -t …`` lines, JSON and errors); the mounts it prints
really mount; removed snapshots leave the disk once garbage collection
runs, and a snapshot a lease holds survives until the lease goes.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from pycontainerd.client import Client
from tests.integration._cli import Cli, table
from tests.support import daemons
from tests.support.ctr_events import ctr_events
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration


@pytest.fixture(params=["overlayfs", "native"])
def ctr(request: pytest.FixtureRequest, daemon: RunningDaemon) -> Cli:
    """``ctr snapshots --snapshotter X`` on a daemon of the test's own.

    ctr labels no view ``containerd.io/gc.root``: a collection (the first
    runs 100ms after start, others after removals) may take one, as
    containerd's would, so the test waits for the first and shares nothing.
    """
    name = request.param
    daemons.wait_startup_gc(daemon)
    cli = Cli("ctr", daemon.address, f"snap-{name}-{uuid.uuid4().hex[:8]}")
    cli.snapshotter = name  # type: ignore[attr-defined]
    return cli


def snap(cli: Cli, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return cli("snapshots", "--snapshotter", cli.snapshotter, *args, ok=ok)  # type: ignore[attr-defined]


def snap_error(cli: Cli, *args: str) -> str:
    return cli.error("snapshots", "--snapshotter", cli.snapshotter, *args)  # type: ignore[attr-defined]


def mount(line: str, target: Path) -> None:
    argv = shlex.split(line)
    assert argv[:2] == ["mount", "-t"] and argv[4] == str(target), line
    subprocess.run(argv, check=True, capture_output=True)


def test_lifecycle_with_real_mounts(ctr: Cli, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    out = snap(ctr, "prepare", "--target", str(target), "work").stdout
    mount(out.strip(), target)
    try:
        (target / "hello").write_text("world")
    finally:
        subprocess.run(["umount", str(target)], check=True)
    snap(ctr, "commit", "base", "work")
    snap(ctr, "prepare", "child", "base")
    snap(ctr, "view", "look", "base")
    assert table(snap(ctr, "ls").stdout) == [
        ["KEY", "PARENT", "KIND"],
        ["base", "Committed"],
        ["child", "base", "Active"],
        ["look", "base", "View"],
    ]
    for key in ("child", "look"):
        lines = snap(ctr, "mounts", str(target), key).stdout.splitlines()
        assert len(lines) == 1
        mount(lines[0], target)
        try:
            assert (target / "hello").read_text() == "world"
        finally:
            subprocess.run(["umount", str(target)], check=True)
    assert snap(ctr, "tree").stdout == " base\n  \\_ child\n  \\_ look\n"
    info = json.loads(snap(ctr, "info", "child").stdout)
    assert list(info) == ["Kind", "Name", "Parent", "Labels", "Created", "Updated"]
    assert (info["Kind"], info["Name"], info["Parent"]) == ("Active", "child", "base")
    assert "containerd.io/gc.root" in info["Labels"]
    labels = snap(ctr, "label", "child", "a=1", "containerd.io/gc.root=").stdout.strip()
    assert labels == "a=1"
    usage = table(snap(ctr, "usage", "base").stdout)
    assert usage[0] == ["KEY", "SIZE", "INODES"] and usage[1][0] == "base"
    assert snap(ctr, "usage", "-b", "base").stdout.split()[-2:] != ["0", "0"]
    snap(ctr, "rm", "child", "look")
    snap(ctr, "rm", "base")
    assert table(snap(ctr, "ls").stdout) == [["KEY", "PARENT", "KIND"]]


def test_errors_are_containerds(ctr: Cli) -> None:
    assert (
        snap_error(ctr, "prepare", "x", "nope") == "parent snapshot nope does not exist: not found"
    )
    assert snap_error(ctr, "commit", "c", "nope") == "snapshot nope does not exist: not found"
    snap(ctr, "prepare", "a")
    assert snap_error(ctr, "prepare", "a") == 'snapshot "a": already exists'
    snap(ctr, "commit", "c", "a")
    snap(ctr, "prepare", "b", "c")
    assert snap_error(ctr, "rm", "c") == (
        'failed to remove "c": cannot remove snapshot with child: failed precondition'
    )
    assert snap_error(ctr, "rm", "zz") == (
        'failed to remove "zz": snapshot zz does not exist: not found'
    )
    assert ctr.error("snapshots", "--snapshotter", "bogus", "ls") == (
        "snapshotter not loaded: bogus: invalid argument"
    )
    snap(ctr, "rm", "b")
    snap(ctr, "rm", "c")


def _backend_dirs(daemon: RunningDaemon) -> set[str]:
    snaps = daemon.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    return {p.name for p in snaps.iterdir()} if snaps.exists() else set()


def test_removed_snapshot_leaves_disk_and_leased_one_waits_for_its_lease(
    daemon: RunningDaemon,
) -> None:
    cli = Cli("ctr", daemon.address, "gc")
    before = _backend_dirs(daemon)
    cli("snapshots", "prepare", "gone")
    assert len(_backend_dirs(daemon) - before) == 1
    cli("snapshots", "rm", "gone")
    cli("leases", "create", "--id", "tick")
    cli("leases", "rm", "--sync", "tick")  # a collection runs before this returns
    assert _backend_dirs(daemon) == before

    with Client(daemon.address, "gc") as client:
        sn = client.snapshot_service("overlayfs")
        with client.lease("hold", expiration=None):
            sn.prepare("held")  # no gc.root label: only the lease keeps it
            cli("leases", "create", "--id", "tick2")
            cli("leases", "rm", "--sync", "tick2")
            assert [r[0] for r in table(cli("snapshots", "ls").stdout)[1:]] == ["held"]
            cli("snapshots", "prepare", "loose-rooted")  # ctr's gc.root keeps this one
        # Leaving the block deleted the lease (without sync); collect now.
        cli("leases", "create", "--id", "tick3")
        cli("leases", "rm", "--sync", "tick3")
        assert [r[0] for r in table(cli("snapshots", "ls").stdout)[1:]] == ["loose-rooted"]


def test_prepare_commit_remove_publish_containerds_events(daemon: RunningDaemon) -> None:
    cli = Cli("ctr", daemon.address, "ev")
    with ctr_events(cli.binary, daemon.address, "ev") as events:
        cli("snapshots", "prepare", "a")
        cli("snapshots", "commit", "c", "a")
        # Views publish nothing, as in containerd.  ctr's view has no gc.root
        # label, so a collection running meanwhile could take it before the
        # rm: this one is made rooted.
        with Client(daemon.address, "ev") as client:
            client.snapshot_service("overlayfs").view("v", "c", {"containerd.io/gc.root": "t"})
        cli("snapshots", "rm", "v")
        seen = events.until(lambda e: e.topic == "/snapshot/remove")
    assert [(e.topic, e.event) for e in seen] == [
        ("/snapshot/prepare", {"key": "a"}),
        ("/snapshot/commit", {"key": "a", "name": "c"}),
        ("/snapshot/remove", {"key": "v"}),
    ]
