"""The shim's cgroup statistics have containerd's shape."""

from __future__ import annotations

import os

from pycontainerd.shim._cgroups import Cgroup


def test_block_io_stats_are_present_even_without_entries() -> None:
    # dockerd turns an absent blkio (v1) or io (v2) message into null lists
    # in its stats API where containerd's gives empty ones.
    cgroup = Cgroup(os.getpid())
    cgroup.paths = {}  # no controller readable: every file reads as zero

    assert cgroup._stats_v1().HasField("blkio")
    assert cgroup._stats_v2().HasField("io")
