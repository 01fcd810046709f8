"""Every database file the daemon keeps is readable by root alone: container
specs carry environments, and environments carry secrets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pycontainerd.client import Client
from tests.support import launch

pytestmark = pytest.mark.integration


def database_files(root: Path) -> dict[str, int]:
    found = {}
    for path in root.rglob("*"):
        if path.name.endswith((".db", ".db-wal", ".db-shm")):
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_database_and_wal_files_are_0600_even_when_an_old_version_left_them_0644(
    tmp_path: Path,
) -> None:
    layout = launch.Layout(tmp_path)
    with launch.running(layout) as daemon:
        with Client(daemon.address, timeout=10) as client:
            client.namespaces.create("secret", {"written": "yes"})
        found = database_files(layout.root)
        assert "io.containerd.metadata.v1.sqlite/meta.db" in found, sorted(found)
        assert any("snapshotter" in name for name in found), found
        assert set(found.values()) == {0o600}, found
    # An upgrade from a version that made them 0644 tightens them at start.
    for name in database_files(layout.root):
        os.chmod(layout.root / name, 0o644)
    with launch.running(layout):
        found = database_files(layout.root)
        assert found and set(found.values()) == {0o600}, found
