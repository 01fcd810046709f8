"""Reading an image's account files: symlinks stay in the root, only regular files count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycontainerd.images.accounts import read_accounts, read_in_root

pytestmark = pytest.mark.unit


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    return r


def test_regular_files_are_read_and_missing_ones_are_none(root: Path) -> None:
    (root / "etc" / "passwd").write_text("app:x:1:2::/:/bin/sh\n")
    assert read_accounts(root) == ("app:x:1:2::/:/bin/sh\n", None)


def test_absolute_symlink_resolves_inside_the_root(root: Path, tmp_path: Path) -> None:
    (tmp_path / "host-secret").write_text("host")
    (root / "usr").mkdir()
    (root / "usr" / "passwd").write_text("image")
    (root / "etc" / "passwd").symlink_to("/usr/passwd")
    assert read_in_root(root, "/etc/passwd") == "image"
    (root / "etc" / "group").symlink_to(tmp_path / "host-secret")
    assert read_in_root(root, "/etc/group") is None


def test_relative_symlink_climbing_out_stops_at_the_root(root: Path, tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("host")
    (root / "etc" / "passwd").symlink_to("../../../../passwd")
    assert read_in_root(root, "/etc/passwd") is None
    (root / "passwd").write_text("image")
    assert read_in_root(root, "/etc/passwd") == "image"


def test_symlinked_directory_resolves_inside_the_root(root: Path, tmp_path: Path) -> None:
    (root / "etc").rmdir()
    (root / "real").mkdir()
    (root / "real" / "group").write_text("g")
    (root / "etc").symlink_to("/../real")
    assert read_in_root(root, "/etc/group") == "g"


def test_symlink_loop_and_non_regular_files_read_as_absent(root: Path) -> None:
    (root / "etc" / "passwd").symlink_to("passwd")
    assert read_in_root(root, "/etc/passwd") is None
    os.mkfifo(root / "etc" / "group")  # opening it would block a reader
    assert read_in_root(root, "/etc/group") is None
    (root / "etc" / "shadow").mkdir()
    assert read_in_root(root, "/etc/shadow") is None
    (root / "file").write_text("x")
    assert read_in_root(root, "/file/passwd") is None


def test_reads_are_capped(root: Path) -> None:
    (root / "etc" / "passwd").write_bytes(b"a" * 100)
    assert read_in_root(root, "/etc/passwd", limit=10) == "a" * 10
