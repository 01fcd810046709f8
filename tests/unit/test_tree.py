"""The iterative, fd-based tree walker and remover (``pycontainerd._tree``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import _tree

pytestmark = pytest.mark.unit

DEPTH = 2500  # past the recursion limit; "d/" * DEPTH is past PATH_MAX


def _chain(top: Path, depth: int = DEPTH) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            os.symlink("/etc", "etc-link", dir_fd=fd)  # never followed
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
    finally:
        os.close(fd)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied here: pytest's own cleanup recurses per level."""
    yield tmp_path
    subprocess.run(["rm", "-rf", str(tmp_path)], check=False)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_walk_visits_a_deep_tree_in_order_within_a_few_fds(scratch: Path) -> None:
    _chain(scratch)
    before = _open_fds()
    most = 0
    names: list[tuple[int, str, bool]] = []
    for visit in _tree.walk(scratch):
        most = max(most, _open_fds() - before)
        if len(visit.parents) < 2:
            names.append((len(visit.parents), visit.name, visit.leaving))
    assert most <= _tree.HELD_FDS + 2
    assert names == [
        (0, "d", False),
        (1, "d", False),
        (1, "d", True),
        (1, "etc-link", False),
        (0, "d", True),
        (0, "etc-link", False),
    ]


def test_walk_does_not_enter_what_descend_refuses(scratch: Path) -> None:
    (scratch / "a/b").mkdir(parents=True)
    (scratch / "c/d").mkdir(parents=True)
    seen = [v.path for v in _tree.walk(scratch, descend=lambda v: v.name != "c")]
    assert seen == ["a", "a/b", "a/b", "a", "c"]


def test_remove_tree_removes_a_deep_tree_and_follows_no_symlink(scratch: Path) -> None:
    top = scratch / "top"
    top.mkdir()
    _chain(top)
    _tree.remove_tree(top)
    assert not top.exists()
    assert os.path.isdir("/etc")


def test_remove_tree_of_a_file_symlink_or_nothing(scratch: Path) -> None:
    target = scratch / "target"
    target.mkdir()
    (target / "kept").write_text("k")
    (scratch / "link").symlink_to(target)
    (scratch / "file").write_text("f")
    for name in ("link", "file", "absent"):
        _tree.remove_tree(scratch / name)
    assert sorted(os.listdir(scratch)) == ["target"]
    assert (target / "kept").read_text() == "k"


def test_remove_tree_keeps_going_past_what_it_cannot_remove(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = scratch / "top"
    for name in ("a", "b", "c"):
        (top / name / "sub").mkdir(parents=True)
        (top / name / "sub" / "file").write_text(name)
    unlink = os.unlink

    def refuse_b(path: str, *, dir_fd: int | None = None) -> None:
        if path == "file" and os.readlink(f"/proc/self/fd/{dir_fd}").endswith("/b/sub"):
            raise PermissionError(1, "refused", path)
        unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", refuse_b)
    with pytest.raises(PermissionError):
        _tree.remove_tree(top)
    assert sorted(str(p.relative_to(top)) for p in top.rglob("*")) == ["b", "b/sub", "b/sub/file"]


def test_cursor_goes_back_up_through_dotdot_past_its_held_fds(scratch: Path) -> None:
    _chain(scratch, 3 * _tree.HELD_FDS)
    with _tree.DirCursor(scratch) as cursor:
        for _ in range(3 * _tree.HELD_FDS):
            cursor.down("d")
        for _ in range(3 * _tree.HELD_FDS):
            cursor.up()
        assert os.path.samestat(os.fstat(cursor.fd), os.stat(scratch))


def test_cursor_refuses_a_parent_moved_while_it_was_away(scratch: Path) -> None:
    _chain(scratch, _tree.HELD_FDS + 2)
    (scratch / "elsewhere").mkdir()
    with _tree.DirCursor(scratch) as cursor:
        for _ in range(_tree.HELD_FDS + 2):
            cursor.down("d")
        # The top's "d" (no longer held) moves: ".." no longer leads back to it.
        os.rename(scratch / "d" / "d", scratch / "elsewhere" / "d")
        with pytest.raises(_tree.TreeMoved):
            for _ in range(_tree.HELD_FDS + 2):
                cursor.up()
