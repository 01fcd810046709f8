"""Shifting a tree's owners for a user namespace (what a remapped snapshot
is made with), and the bundle a remapped task gets."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.client._remap import MAX_ID, shift_ownership
from pycontainerd.runtime.bundle import new_bundle, remapped_gid

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def _owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "home" / "user").mkdir(parents=True)
    (root / "home" / "user" / "notes").write_text("mine")
    os.chown(root / "home" / "user", 1000, 1001)
    os.chown(root / "home" / "user" / "notes", 1000, 1001)
    (root / "bin" / "su").write_bytes(b"\x7fELF")
    (root / "bin" / "su").chmod(0o4755)
    (root / "bin" / "wall").write_bytes(b"\x7fELF")
    os.chown(root / "bin" / "wall", 0, 5)
    (root / "bin" / "wall").chmod(0o2755)
    os.link(root / "bin" / "busybox", root / "bin" / "hard")


def test_every_owner_is_incremented_and_symlinks_are_changed_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    _tree(root)
    outside = tmp_path / "host-file"
    outside.write_text("host")
    (root / "escape").symlink_to(outside)

    changed = shift_ownership(root, 100000, 200000)

    assert _owner(root) == (100000, 200000)
    assert _owner(root / "bin" / "busybox") == (100000, 200000)
    assert _owner(root / "bin" / "sh") == (100000, 200000)  # the link itself
    assert _owner(root / "home" / "user" / "notes") == (101000, 201001)
    assert _owner(root / "bin" / "wall") == (100000, 200005)
    assert _owner(root / "escape") == (100000, 200000)
    assert _owner(outside) == (0, 0)
    # root, bin, busybox, sh, su, wall, home, user, notes, escape; hard is busybox.
    assert changed == 10


def test_a_hard_linked_file_is_shifted_once(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    _tree(root)
    shift_ownership(root, 100000, 100000)
    assert _owner(root / "bin" / "hard") == (100000, 100000)
    assert os.lstat(root / "bin" / "hard").st_ino == os.lstat(root / "bin" / "busybox").st_ino


def test_set_id_bits_survive_the_chown(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    _tree(root)
    shift_ownership(root, 100000, 100000)
    assert stat.S_IMODE(os.lstat(root / "bin" / "su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(root / "bin" / "wall").st_mode) == 0o2755


def test_an_owner_shifted_past_the_largest_id_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    _tree(root)
    with pytest.raises(errdefs.InvalidArgument, match="home/user: owner 1000:1001 shifted"):
        shift_ownership(root, MAX_ID - 10, 0)
    with pytest.raises(errdefs.InvalidArgument, match="uid increment"):
        shift_ownership(root, -1, 0)
    with pytest.raises(errdefs.InvalidArgument, match="gid increment"):
        shift_ownership(root, 0, MAX_ID + 1)


def _spec(gid_mappings: object) -> bytes:
    return json.dumps({"linux": {"gidMappings": gid_mappings}}).encode()


def test_the_remapped_gid_is_the_host_gid_of_container_gid_0() -> None:
    assert remapped_gid(b"{}") == 0
    assert remapped_gid(b"") == 0
    assert remapped_gid(_spec([])) == 0
    assert remapped_gid(_spec([{"containerID": 1, "hostID": 5, "size": 1}])) == 0
    mappings = [
        {"containerID": 1, "hostID": 5, "size": 1},
        {"containerID": 0, "hostID": 200000, "size": 65536},
    ]
    assert remapped_gid(_spec(mappings)) == 200000
    with pytest.raises(errdefs.InvalidArgument, match="not JSON"):
        remapped_gid(b"\x0a\x02{")
    with pytest.raises(errdefs.InvalidArgument, match="invalid gid mapping"):
        remapped_gid(_spec([{"containerID": 0, "hostID": -1, "size": 1}]))


def test_a_remapped_tasks_bundle_lets_its_root_group_through_and_nobody_else(
    tmp_path: Path,
) -> None:
    spec = _spec([{"containerID": 0, "hostID": 200000, "size": 65536}])
    bundle = new_bundle(tmp_path / "root", tmp_path / "state", "ns", "userns", spec)
    st = bundle.path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 200000, 0o710)
    plain = new_bundle(tmp_path / "root", tmp_path / "state", "ns", "plain", b"{}")
    st = plain.path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o700)
