"""What a crash leaves in a snapshotter's directory goes shortly after the next start.

A snapshot is made in ``snapshots/new-*`` and renamed into place, and removed
by renaming it to ``snapshots/rm-*`` first; a crash between the steps leaves
those behind.  The first garbage collection after start-up cleans every
snapshotter, so they do not wait for some later snapshot removal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._cli import Cli
from tests.support import daemons, launch

pytestmark = pytest.mark.integration

SNAPSHOTTERS = ("overlayfs", "native")
LEFTOVERS = ("new-123456", "rm-7", "99")


@pytest.fixture
def layout() -> Iterator[launch.Layout]:
    with daemons.temp_base("pcd-sncl-") as base:
        yield launch.Layout(base)


def _snapshots_dir(root: Path, snapshotter: str) -> Path:
    return root / f"io.containerd.snapshotter.v1.{snapshotter}" / "snapshots"


def test_crash_leftovers_are_removed_after_start(layout: launch.Layout) -> None:
    with launch.running(layout) as d:
        ctr = Cli("ctr", d.address)
        for sn in SNAPSHOTTERS:
            ctr("snapshots", "--snapshotter", sn, "prepare", "kept")
    kept: dict[str, set[str]] = {}
    for sn in SNAPSHOTTERS:
        where = _snapshots_dir(layout.root, sn)
        kept[sn] = set(os.listdir(where))
        for name in LEFTOVERS:
            (where / name / "fs" / "deep").mkdir(parents=True)
            (where / name / "fs" / "deep" / "file").write_text("left by a crash")

    with launch.running(layout) as d:
        daemons.wait_startup_gc(d)
        deadline = time.monotonic() + 5
        while True:
            now = {sn: set(os.listdir(_snapshots_dir(layout.root, sn))) for sn in SNAPSHOTTERS}
            if now == kept or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert now == kept
        ctr = Cli("ctr", d.address)
        for sn in SNAPSHOTTERS:
            assert "kept" in ctr("snapshots", "--snapshotter", sn, "ls").stdout
            ctr("snapshots", "--snapshotter", sn, "rm", "kept")
