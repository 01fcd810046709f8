"""Deep trees are walked, copied, diffed and removed at any depth, and a
cleanup keeps going past an entry it cannot remove (issue 9, item 3).

The trees are deeper than Python's recursion limit (about 1,000 frames) and
their paths longer than the kernel's PATH_MAX (4,096 bytes), so a walk that
recursed per level, or built full paths, would fail; they are made through
directory fds, as a container writing into its rootfs makes them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd.client import Client
from pycontainerd.diff import MEDIA_TYPE_LAYER
from pycontainerd.mount import Mount, temp_mount
from tests.support import daemons, launch

pytestmark = pytest.mark.integration

#: Levels: past the recursion limit, and "d/" * DEPTH is past PATH_MAX.
DEPTH = 2500
SNAPSHOTTERS = ("overlayfs", "native")


def grow(top: Path, depth: int = DEPTH) -> None:
    """``depth`` nested directories ``d`` under ``top``, with a file ``f`` in every
    hundredth, from the first one on."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            if level % 100 == 1:
                file_fd = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(file_fd, b"x" * 100)
                os.close(file_fd)
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
    finally:
        os.close(fd)


def snapshots_dir(root: Path, snapshotter: str) -> Path:
    return root / f"io.containerd.snapshotter.v1.{snapshotter}" / "snapshots"


@pytest.fixture
def layout() -> Iterator[launch.Layout]:
    with daemons.temp_base("pcd-deep-") as base:
        yield launch.Layout(base)


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_deep_snapshot_is_measured_copied_and_removed_without_a_trace(
    layout: launch.Layout, snapshotter: str
) -> None:
    with launch.running(layout) as d, Client(d.address, "deep") as client:
        # Nothing is collected under the test; the lease's synchronous delete
        # then runs the collection that takes the removed snapshots' directories.
        with client.lease(sync=True):
            snaps = client.snapshot_service(snapshotter)
            with temp_mount(snaps.prepare("deep")) as root:
                grow(root)
            assert snaps.usage("deep").inodes >= DEPTH
            snaps.commit("deep-committed", "deep")
            # The native snapshotter copies its parent's whole tree.
            with temp_mount(snaps.prepare("child", "deep-committed"), readonly=True) as root:
                assert (root / "d" / "f").read_bytes() == b"x" * 100
            snaps.remove("child")
            snaps.remove("deep-committed")
        assert os.listdir(snapshots_dir(d.root, snapshotter)) == []
        launch.assert_serving(d.address)


def test_walking_diff_of_a_deep_tree(layout: launch.Layout) -> None:
    lower, upper = layout.base / "lower", layout.base / "upper"
    lower.mkdir()
    upper.mkdir()
    grow(upper)
    with launch.running(layout) as d, Client(d.address, "deep") as client, client.lease():
        desc = client.diff.compare(
            [Mount("bind", str(lower), ("rbind", "ro"))],
            [Mount("bind", str(upper), ("rbind", "ro"))],
            media_type=MEDIA_TYPE_LAYER,
        )
        # Every level's directory header, each with its whole path (PAX).
        assert desc.size > DEPTH * 512


def test_startup_cleanup_removes_every_leftover_past_one_it_cannot(
    layout: launch.Layout,
) -> None:
    """A crash left a deep rm-*, a new-* holding a mount, and others; the mount
    stays (never deleted through), everything else goes."""
    with launch.running(layout):
        pass
    where = snapshots_dir(layout.root, "overlayfs")
    for name in ("rm-1", "rm-9", "new-123", "77"):
        (where / name / "fs").mkdir(parents=True)
    grow(where / "rm-1" / "fs")
    (where / "stray-file").write_text("left")
    mounted = where / "new-123" / "fs"
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mounted)], check=True)
    try:
        (mounted / "inside").write_text("not ours to delete")
        with launch.running(layout) as d:
            daemons.wait_startup_gc(d)
            deadline = time.monotonic() + 10
            while sorted(os.listdir(where)) != ["new-123"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sorted(os.listdir(where)) == ["new-123"]
            assert (mounted / "inside").read_text() == "not ours to delete"
            launch.assert_serving(d.address)
    finally:
        subprocess.run(["umount", str(mounted)], check=False)
