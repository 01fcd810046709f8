"""The walking differ: its layers turn the lower tree into the upper one when applied."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from pycontainerd.archive import apply_layer, write_diff, write_tree

pytestmark = pytest.mark.unit


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a layer carries, per path (directory mtimes aside: they change on apply)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                body: object = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                body = p.read_bytes()
            else:
                body = None
            mtime = None if stat.S_ISDIR(st.st_mode) else int(st.st_mtime)
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, body, mtime)
    return out


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf}


def names(data: bytes) -> list[str]:
    return list(members(data))


def diff(lower: Path, upper: Path) -> bytes:
    buf = io.BytesIO()
    write_diff(lower, upper, buf)
    return buf.getvalue()


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    lower = tmp_path / "lower"
    (lower / "etc/conf.d").mkdir(parents=True)
    (lower / "etc/hosts").write_bytes(b"127.0.0.1 localhost\n")
    (lower / "etc/conf.d/a").write_bytes(b"a")
    (lower / "gone/deep").mkdir(parents=True)
    (lower / "gone/deep/file").write_bytes(b"x")
    (lower / "bin").mkdir()
    (lower / "bin/sh").write_bytes(b"ELF")
    os.link(lower / "bin/sh", lower / "bin/ash")
    (lower / "ln").symlink_to("etc/hosts")
    (lower / "to-dir").write_bytes(b"file, later a directory")
    upper = tmp_path / "upper"
    shutil.copytree(lower, upper, symlinks=True)
    os.link(upper / "bin/sh", upper / "bin/ash-fixed")  # keep the pair linked in the copy
    os.unlink(upper / "bin/ash")
    os.rename(upper / "bin/ash-fixed", upper / "bin/ash")
    return lower, upper


def test_unchanged_trees_give_an_empty_layer(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    assert names(diff(lower, upper)) == []


def test_changes_round_trip_through_apply(trees: tuple[Path, Path], tmp_path: Path) -> None:
    lower, upper = trees
    (upper / "etc/hosts").write_bytes(b"10.0.0.1 changed\n")
    (upper / "etc/new").write_bytes(b"new")
    shutil.rmtree(upper / "gone")
    os.unlink(upper / "etc/conf.d/a")
    os.chmod(upper / "etc/conf.d", 0o700)
    os.unlink(upper / "ln")
    (upper / "ln").symlink_to("elsewhere")
    os.unlink(upper / "to-dir")
    (upper / "to-dir/inner").mkdir(parents=True)
    os.mkfifo(upper / "fifo")
    (upper / "bin/sh").write_bytes(b"ELF2")  # both names of the inode change
    data = diff(lower, upper)
    listed = names(data)
    assert "gone/deep/file" not in listed and ".wh.gone" in listed
    assert "etc/conf.d/.wh.a" in listed
    assert listed.index("etc") < listed.index("etc/hosts")
    listing = members(data)
    assert listing["bin/sh"].islnk() and listing["bin/sh"].linkname == "bin/ash"
    target = tmp_path / "applied"
    shutil.copytree(lower, target, symlinks=True)
    apply_layer(target, io.BytesIO(data))
    assert tree(target) == tree(upper)
    assert (target / "bin/sh").stat().st_ino == (target / "bin/ash").stat().st_ino


def test_same_second_mtime_changes_are_found_by_content(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    st = (lower / "etc/hosts").stat()
    (upper / "etc/hosts").write_bytes(b"127.0.0.2 localhos\n")  # same size
    os.utime(lower / "etc/hosts", (st.st_atime, int(st.st_mtime)))
    os.utime(upper / "etc/hosts", (st.st_atime, int(st.st_mtime)))
    assert names(diff(lower, upper)) == ["etc", "etc/hosts"]


def test_output_is_deterministic(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    (upper / "zz").write_bytes(b"1")
    (upper / "a b").write_bytes(b"2")
    os.unlink(upper / "etc/hosts")
    assert diff(lower, upper) == diff(lower, upper)


def test_write_tree_is_a_full_layer(trees: tuple[Path, Path], tmp_path: Path) -> None:
    _, upper = trees
    buf = io.BytesIO()
    write_tree(upper, buf)
    target = tmp_path / "full"
    target.mkdir()
    apply_layer(target, io.BytesIO(buf.getvalue()))
    assert tree(target) == tree(upper)


def test_sockets_are_left_out(tmp_path: Path) -> None:
    import socket

    root = tmp_path / "s"
    root.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
        buf = io.BytesIO()
        write_tree(root, buf)
    assert names(buf.getvalue()) == []


def test_new_hardlink_to_an_unchanged_file_carries_both_names(
    trees: tuple[Path, Path], tmp_path: Path
) -> None:
    lower, upper = trees
    os.link(upper / "etc/hosts", upper / "hosts-link")
    data = diff(lower, upper)
    listing = members(data)
    assert listing["hosts-link"].isreg()
    assert listing["etc/hosts"].islnk() and listing["etc/hosts"].linkname == "hosts-link"
    target = tmp_path / "applied"
    shutil.copytree(lower, target, symlinks=True)
    apply_layer(target, io.BytesIO(data))
    assert (target / "etc/hosts").stat().st_ino == (target / "hosts-link").stat().st_ino
