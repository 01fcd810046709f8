"""The pure helpers under the options: account files as runc parses them,
device nodes as containerd lists them, capability sets as pkg/cap reads them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.oci import caps, devices, user

pytestmark = pytest.mark.unit


def test_passwd_lines_are_parsed_as_runc_does() -> None:
    text = "  root:x:0:0:root:/root:/bin/sh  \n\nshort:x:5\nbad:x:abc:7\n# c:x:9:9\n"
    parsed = user.parse_passwd(text)
    assert parsed == [
        user.Account("root", 0, 0),
        user.Account("short", 5, 0),  # missing fields are empty
        user.Account("bad", 0, 7),  # a non-number counts as 0
        user.Account("# c", 9, 9),  # no comment syntax
    ]


def test_group_members_are_split_on_commas() -> None:
    groups = user.parse_group("wheel:x:10:root,app\nempty:x:11:\nnolist:x:12\n")
    assert groups == [
        user.Group("wheel", 10, ("root", "app")),
        user.Group("empty", 11, ()),
        user.Group("nolist", 12, ()),
    ]


PASSWD = "root:x:0:0::/:/bin/sh\nwww:x:33:33::/:/bin/false\ntwin:x:33:99::/:/bin/false\n"
GROUP = "root:x:0:\nwheel:x:10:root\nwww:x:33:www\nweb:x:50:www,nobody\n"


def test_resolve_user_for_an_image_without_user_is_root_and_roots_groups() -> None:
    assert user.resolve_user("", None, None) == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert user.resolve_user("", PASSWD, GROUP)["additionalGids"] == [0, 10]


def test_resolve_user_takes_the_first_account_with_a_uid() -> None:
    resolved = user.resolve_user("33", PASSWD, GROUP)
    # The group named after the user is not a supplementary one.
    assert resolved == {"uid": 33, "gid": 33, "additionalGids": [33, 50]}


def test_numeric_users_and_groups_wrap_as_gos_uint32() -> None:
    assert user.uid_gid("-1", None, None) == (0xFFFFFFFF, 0)
    assert user.uid_gid("+7:-2", None, None) == (7, 0xFFFFFFFE)
    # Too big for an int is a name, as strconv.Atoi fails on it.
    with pytest.raises(errdefs.NotFound):
        user.uid_gid("99999999999999999999", PASSWD, None)


def test_additional_gids_of_an_unknown_uid_or_without_group_file_are_none() -> None:
    assert user.additional_gids("4242", PASSWD, GROUP) == []
    assert user.additional_gids("www", PASSWD, None) == []
    assert user.ensure_primary(5, [1, 2]) == [5, 1, 2]
    assert user.ensure_primary(2, [1, 2]) == [1, 2]


def test_known_capabilities_are_numbered_as_the_kernel_does() -> None:
    assert caps.KNOWN[0] == "CAP_CHOWN"
    assert caps.KNOWN[21] == "CAP_SYS_ADMIN"
    assert caps.KNOWN[40] == "CAP_CHECKPOINT_RESTORE"
    assert caps.from_bitmap((1 << 21) | 1 | (1 << 50)) == (["CAP_CHOWN", "CAP_SYS_ADMIN"], [50])


def test_current_capabilities_read_the_effective_set(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapPrm:\t0000000000000003\nCapEff:\t0000000000000021\n")
    assert caps.current(status) == ["CAP_CHOWN", "CAP_KILL"]
    status.write_text("Name:\tx\n")
    assert caps.current(status) == []


def test_device_walk_is_sorted_skips_pseudo_dirs_and_maps_container_paths() -> None:
    found = devices.devices("/dev", "/host-dev")
    paths = [d["path"] for d in found]
    assert "/host-dev/null" in paths
    assert not any(p.startswith("/host-dev/pts/") for p in paths)
    # Go's order: a directory's entries by name, each subtree at its place.
    top = [p for p in paths if p.count("/") == 2]
    assert top == sorted(top, key=os.fsencode)


def test_device_walk_never_follows_symlinks(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/dev")
    (tmp_path / "null").symlink_to("/dev/null")
    assert devices.devices(str(tmp_path)) == []


def test_device_walk_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        (tmp_path / str(i)).mkdir()
    monkeypatch.setattr(devices, "MAX_DEVICES", 3)
    with pytest.raises(errdefs.ResourceExhausted):
        devices.devices(str(tmp_path))
