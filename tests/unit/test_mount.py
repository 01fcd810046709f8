"""Mount helpers without mounting: option parsing, syscall sequences, read-only views."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd import mount as ml
from pycontainerd.mount import Mount

pytestmark = pytest.mark.unit

Call = tuple[str, str, str, int, str]


def _real(target: str) -> str:
    """Where a mount call aimed: targets are fds resolved inside the root."""
    return os.readlink(target) if target.startswith("/proc/self/fd/") else target


@pytest.fixture
def mnt(tmp_path: Path) -> str:
    (tmp_path / "mnt/proc/x").mkdir(parents=True)
    return str(tmp_path / "mnt")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    seen: list[Call] = []

    def fake(source: str, target: str, fstype: str, flags: int, data: str) -> None:
        seen.append((source, _real(target), fstype, flags, data))

    monkeypatch.setattr(ml, "_sys_mount", fake)
    monkeypatch.setattr(ml, "_detach", os.close)  # nothing was really mounted
    return seen


def test_options_split_into_flags_propagation_and_data() -> None:
    flags, prop, data = ml._parse_options(
        ["ro", "nosuid", "rw", "rbind", "rprivate", "index=off", "lowerdir=/a:/b"]
    )
    assert flags == ml.MS_NOSUID | ml.MS_BIND | ml.MS_REC  # "rw" cleared "ro"
    assert prop == ml.MS_PRIVATE | ml.MS_REC
    assert data == ["index=off", "lowerdir=/a:/b"]


def test_read_only_bind_is_remounted(calls: list[Call], mnt: str) -> None:
    ml.mount_all([Mount("bind", "/src", ("ro", "rbind"))], mnt)
    first = ml.MS_RDONLY | ml.MS_BIND | ml.MS_REC
    assert calls == [
        ("/src", mnt, "bind", first, ""),
        ("", mnt, "", first | ml.MS_REMOUNT, ""),
    ]


def test_rw_bind_and_overlay_take_one_call(calls: list[Call], mnt: str) -> None:
    ml.mount_all([Mount("bind", "/src", ("rw", "rbind"))], mnt)
    opts = ("index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2")
    ml.mount_all([Mount("overlay", "overlay", opts)], mnt)
    assert calls == [
        ("/src", mnt, "bind", ml.MS_BIND | ml.MS_REC, ""),
        ("overlay", mnt, "overlay", 0, ",".join(opts)),
    ]


def test_propagation_is_a_second_call(calls: list[Call], mnt: str) -> None:
    ml.mount_all([Mount("tmpfs", "tmpfs", ("nodev", "rslave", "size=1m"))], mnt)
    assert calls == [
        ("tmpfs", mnt, "tmpfs", ml.MS_NODEV, "size=1m"),
        ("", mnt, "", ml.MS_SLAVE | ml.MS_REC, ""),
    ]


def test_sub_targets_stay_under_the_root(calls: list[Call], mnt: str) -> None:
    ml.mount_all([Mount("bind", "/a", ("rbind",), target="/proc/x")], mnt)
    assert calls[0][1] == f"{mnt}/proc/x"
    with pytest.raises(errdefs.InvalidArgument, match="escapes"):
        ml.mount_all([Mount("bind", "/a", ("rbind",), target="../etc")], mnt)


def test_symlinked_sub_target_is_resolved_inside_the_root(
    calls: list[Call], mnt: str, tmp_path: Path
) -> None:
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", f"{mnt}/escape")
    os.symlink("../../..", f"{mnt}/proc/up")
    ml.mount_all([Mount("bind", "/a", ("rbind",), target="proc/up/proc/x")], mnt)
    assert calls == [("/a", f"{mnt}/proc/x", "bind", ml.MS_BIND | ml.MS_REC, "")]
    with pytest.raises(errdefs.NotFound):  # <root>/<tmp_path>/outside: not there
        ml.mount_all([Mount("bind", "/a", ("rbind",), target="escape")], mnt)
    assert len(calls) == 1


def test_failed_mount_undoes_earlier_ones(monkeypatch: pytest.MonkeyPatch, mnt: str) -> None:
    undone: list[str] = []

    def fake(source: str, target: str, fstype: str, flags: int, data: str) -> None:
        if source == "/bad":
            raise errdefs.NotFound("mount /bad: No such file or directory")

    def detach(fd: int) -> None:
        undone.append(_real(f"/proc/self/fd/{fd}"))
        os.close(fd)

    monkeypatch.setattr(ml, "_sys_mount", fake)
    monkeypatch.setattr(ml, "_detach", detach)
    os.mkdir(f"{mnt}/sub")
    mounts = [Mount("bind", "/ok", ("rbind",)), Mount("bind", "/bad", ("rbind",), target="sub")]
    with pytest.raises(errdefs.NotFound):
        ml.mount_all(mounts, mnt)
    assert undone == [mnt]


def test_long_lowerdir_lists_use_fd_paths(tmp_path: Path) -> None:
    lowers = []
    for i in range(80):
        d = tmp_path / ("layer-with-a-rather-long-directory-name-" + "x" * 20 + f"-{i:03d}")
        d.mkdir()
        lowers.append(str(d))
    data = [f"upperdir={tmp_path}", "lowerdir=" + ":".join(lowers)]
    assert len(",".join(data)) > ml._PAGE_SIZE
    with ml._short_lowerdirs(data) as text:
        assert len(text) < ml._PAGE_SIZE
        names = text.split("lowerdir=")[1].split(":")
        assert all(n.startswith("/proc/self/fd/") for n in names)
        assert [str(Path(n).resolve()) for n in names] == lowers
    short = ["lowerdir=/a:/b"]
    with ml._short_lowerdirs(short) as text:
        assert text == "lowerdir=/a:/b"


def test_too_many_layers_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    data = ["lowerdir=" + ":".join([str(tmp_path / "d")] * 400)]
    with pytest.raises(errdefs.InvalidArgument, match="at most"), ml._short_lowerdirs(data):
        pass


def test_read_only_folds_overlay_upper_into_lowers() -> None:
    over = Mount(
        "overlay", "overlay", ("index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2")
    )
    bind = Mount("bind", "/s", ("rw", "rbind"))
    assert ml.read_only([over, bind]) == [
        Mount("overlay", "overlay", ("index=off", "lowerdir=/u:/l1:/l2", "ro")),
        Mount("bind", "/s", ("rbind", "ro")),
    ]


def test_overlay_dirs() -> None:
    over = Mount("overlay", "overlay", ("workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"))
    dirs = ml.overlay_dirs(over)
    assert dirs == ml.OverlayDirs(Path("/u"), (Path("/l1"), Path("/l2")), Path("/w"))
    view = ml.overlay_dirs(Mount("overlay", "overlay", ("lowerdir=/l1:/l2",)))
    assert view.upper is None and view.lowers == (Path("/l1"), Path("/l2"))
    with pytest.raises(errdefs.InvalidArgument):
        ml.overlay_dirs(Mount("bind", "/s", ("rbind",)))


def test_errno_maps_to_typed_errors() -> None:
    assert isinstance(ml._error(errno.ENOENT, "x"), errdefs.NotFound)
    assert isinstance(ml._error(errno.EPERM, "x"), errdefs.PermissionDenied)
    assert isinstance(ml._error(errno.EINVAL, "x"), errdefs.InvalidArgument)
    assert isinstance(ml._error(errno.EBUSY, "x"), errdefs.FailedPrecondition)
    assert isinstance(ml._error(errno.EIO, "x"), errdefs.Unknown)
    assert "No such file" in ml._error(errno.ENOENT, "mount /a").message


def test_unmount_all_stops_when_nothing_is_mounted(monkeypatch: pytest.MonkeyPatch) -> None:
    results = iter([None, None, errdefs.InvalidArgument("not mounted")])
    seen: list[int] = []

    def fake(target: str, flags: int = 0) -> None:
        seen.append(flags)
        r = next(results)
        if r is not None:
            raise r

    monkeypatch.setattr(ml, "unmount", fake)
    ml.unmount_all("/mnt", ml.MNT_DETACH)
    assert seen == [ml.MNT_DETACH] * 3
