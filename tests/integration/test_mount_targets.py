"""A mount's target is resolved inside the mount root, never joined as text
(issue 9, item 6).

The first mount's content plants a symlink pointing outside the root; a later
mount aimed through it must neither land outside (where, before, it stayed
mounted: the final unmount, not following the symlink, missed it) nor leave
anything mounted when it is refused.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client
from pycontainerd.diff import MEDIA_TYPE_LAYER
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount, temp_mount
from tests.integration.test_diff_service import make_layer, put
from tests.support import launch
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

LAYER = make_layer([("hello", b"hi\n")])


def mount_points(pid: int | str = "self") -> list[str]:
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
        return [line.split()[4] for line in f]


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(content, outside): content holds ``escape`` -> outside, an absolute symlink."""
    content, outside = tmp_path / "content", tmp_path / "outside"
    content.mkdir()
    outside.mkdir()
    (outside / "marker").write_text("still visible")
    (content / "escape").symlink_to(outside)
    try:
        yield content, outside
    finally:
        subprocess.run(["umount", "-R", "-l", str(tmp_path)], capture_output=True, check=False)


def _mounts(content: Path) -> list[Mount]:
    return [
        Mount("bind", str(content), ("rbind", "rw")),
        Mount("tmpfs", "tmpfs", ("size=1m",), target="escape"),
    ]


def _assert_nothing_left(outside: Path, pid: int | str = "self") -> None:
    points = mount_points(pid)
    assert str(outside) not in points
    assert not [p for p in points if "pycontainerd-mount-" in p]
    assert (outside / "marker").read_text() == "still visible"


@pytest.fixture
def client(shared_daemon: RunningDaemon) -> Iterator[Client]:
    with Client(shared_daemon.address, f"mnt-{uuid.uuid4().hex[:8]}") as c, c.lease():
        yield c


def test_mount_through_a_planted_symlink_is_refused_by_the_daemon_and_nothing_stays(
    client: Client, shared_daemon: RunningDaemon, planted: tuple[Path, Path]
) -> None:
    content, outside = planted
    desc = Descriptor(MEDIA_TYPE_LAYER, put(client, LAYER), len(LAYER))
    # Resolved inside the root, "escape" leads to <root>/<outside>: not there.
    with pytest.raises(errdefs.NotFound, match="mount target"):
        client.diff.apply(desc, _mounts(content))
    _assert_nothing_left(outside, shared_daemon.process.pid)
    assert not (content / "hello").exists()
    launch.assert_serving(shared_daemon.address)


def test_mount_through_a_planted_symlink_is_confined_to_the_root(
    planted: tuple[Path, Path],
) -> None:
    content, outside = planted
    inside = content / outside.relative_to("/")
    inside.mkdir(parents=True)
    with temp_mount(_mounts(content)) as root:
        points = mount_points()
        assert str(root / outside.relative_to("/")) in points
        assert str(outside) not in points
    _assert_nothing_left(outside)


def test_temp_mount_refusal_unmounts_what_it_already_mounted(
    planted: tuple[Path, Path],
) -> None:
    content, outside = planted
    with pytest.raises(errdefs.NotFound), temp_mount(_mounts(content)):
        pass
    _assert_nothing_left(outside)
