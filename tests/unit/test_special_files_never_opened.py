"""Device nodes and FIFOs are looked at through O_PATH and never opened where a
regular file was expected (issue 9, item 2): the overlay applier's copy-up of
a hardlink target, the diff writer's file bodies, an image's account files.

An inotify watch counts every real open of the node and none made with O_PATH.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.archive import Whiteouts, apply_layer, write_diff
from pycontainerd.archive import diff as diff_module
from pycontainerd.images.accounts import read_in_root
from tests.support.inotify import OpenWatch

pytestmark = pytest.mark.unit

NODE_KINDS = {"char": stat.S_IFCHR, "fifo": stat.S_IFIFO}


def _plant(dir_fd: int | None, name: str | Path, kind: str) -> None:
    # 1:3 is /dev/null's number: harmless should the code under test open it.
    os.mknod(name, NODE_KINDS[kind] | 0o600, os.makedev(1, 3), dir_fd=dir_fd)


def _hardlink_layer(name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.LNKTYPE, target
        tf.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("kind", sorted(NODE_KINDS))
def test_overlay_copy_up_refuses_a_lower_node_without_opening_it(tmp_path: Path, kind: str) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    _plant(None, lower / "node", kind)
    with OpenWatch() as watch:
        watch.add(lower / "node")
        with pytest.raises(errdefs.InvalidArgument, match="target not found"):
            apply_layer(
                upper,
                io.BytesIO(_hardlink_layer("link", "node")),
                whiteouts=Whiteouts.OVERLAY,
                parents=[lower],
            )
        assert watch.opens() == 0
    assert not (upper / "link").exists()


@pytest.mark.parametrize("kind", sorted(NODE_KINDS))
def test_diff_writer_never_opens_a_file_swapped_for_a_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A running container swaps a listed file for a node before its body is read."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    (upper / "file").write_bytes(b"body")
    listing = diff_module._listing
    watch = OpenWatch()

    def listing_then_swap(dir_fd: int) -> dict[str, os.stat_result]:
        seen = listing(dir_fd)
        if "file" in seen and stat.S_ISREG(seen["file"].st_mode):
            os.unlink("file", dir_fd=dir_fd)
            _plant(dir_fd, "file", kind)
            watch.add(upper / "file")
        return seen

    monkeypatch.setattr(diff_module, "_listing", listing_then_swap)
    with watch:
        with pytest.raises(errdefs.FailedPrecondition, match="file"):
            write_diff(lower, upper, io.BytesIO())
        assert watch.opens() == 0


@pytest.mark.parametrize("kind", sorted(NODE_KINDS))
def test_account_file_that_is_a_node_is_absent_and_never_opened(tmp_path: Path, kind: str) -> None:
    (tmp_path / "etc").mkdir()
    _plant(None, tmp_path / "etc/passwd", kind)
    with OpenWatch() as watch:
        watch.add(tmp_path / "etc/passwd")
        assert read_in_root(tmp_path, "/etc/passwd") is None
        assert watch.opens() == 0
