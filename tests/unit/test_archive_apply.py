"""apply_layer on ordinary layers: files, links, whiteouts, metadata, compression.

Entries use the caller's own uid/gid so these run unprivileged; owners,
device nodes and overlay markers are proved in tests/integration.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from pycontainerd import errdefs
from pycontainerd.archive import apply_layer
from pycontainerd.archive.compression import decompress

pytestmark = pytest.mark.unit

UID, GID = os.getuid(), os.getgid()


def entry(
    name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, **attrs: object
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.uid, info.gid = UID, GID
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def layer(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def apply(root: Path, data: bytes, **kw: object) -> None:
    apply_layer(root, io.BytesIO(data), **kw)  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def test_files_dirs_and_implicit_parents(root: Path) -> None:
    apply(
        root,
        layer(
            entry("etc/", kind=tarfile.DIRTYPE, mode=0o750),
            entry("etc/hosts", b"127"),
            entry("a/b/c", b"x"),
        ),
    )
    assert (root / "etc/hosts").read_bytes() == b"127"
    assert stat.S_IMODE((root / "etc").stat().st_mode) == 0o750
    # Parents without entries are made 0755, as containerd makes them.
    assert stat.S_IMODE((root / "a/b").stat().st_mode) == 0o755
    assert (root / "a/b/c").read_bytes() == b"x"


def test_modes_including_setuid_and_sticky(root: Path) -> None:
    apply(
        root,
        layer(
            entry("s", b"#!", mode=0o4755),
            entry("g", mode=0o2711),
            entry("t/", kind=tarfile.DIRTYPE, mode=0o1777),
        ),
    )
    assert stat.S_IMODE((root / "s").stat().st_mode) == 0o4755
    assert stat.S_IMODE((root / "g").stat().st_mode) == 0o2711
    assert stat.S_IMODE((root / "t").stat().st_mode) == 0o1777


def test_mtimes_of_files_and_dirs_are_set_after_contents(root: Path) -> None:
    apply(
        root,
        layer(
            entry("d/", kind=tarfile.DIRTYPE, mtime=1_000_000), entry("d/f", b"1", mtime=2_000_000)
        ),
    )
    assert (root / "d").stat().st_mtime == 1_000_000
    assert (root / "d/f").stat().st_mtime == 2_000_000


def test_pax_subsecond_mtime(root: Path) -> None:
    info, data = entry("f", b"1")
    info.pax_headers = {"mtime": "1600000000.5"}
    apply(root, layer((info, data)))
    assert (root / "f").stat().st_mtime_ns == 1_600_000_000_500_000_000


def test_symlinks_are_stored_not_followed(root: Path) -> None:
    apply(
        root,
        layer(
            entry("l", kind=tarfile.SYMTYPE, linkname="/etc/shadow"),
            entry("r", kind=tarfile.SYMTYPE, linkname="../../x"),
        ),
    )
    assert os.readlink(root / "l") == "/etc/shadow"
    assert os.readlink(root / "r") == "../../x"


def test_hardlinks_share_an_inode(root: Path) -> None:
    apply(
        root,
        layer(
            entry("a", b"data"),
            entry("b/c", kind=tarfile.LNKTYPE, linkname="a"),
            entry("d", kind=tarfile.LNKTYPE, linkname="/a"),
        ),
    )
    assert (root / "a").stat().st_ino == (root / "b/c").stat().st_ino == (root / "d").stat().st_ino


def test_hardlink_to_a_symlink_links_the_symlink(root: Path) -> None:
    apply(
        root,
        layer(
            entry("t", b"x"),
            entry("s", kind=tarfile.SYMTYPE, linkname="t"),
            entry("h", kind=tarfile.LNKTYPE, linkname="s"),
        ),
    )
    assert os.readlink(root / "h") == "t"


def test_hardlink_to_missing_target_is_invalid(root: Path) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="not found"):
        apply(root, layer(entry("h", kind=tarfile.LNKTYPE, linkname="nope")))


def test_hardlink_to_directory_is_invalid(root: Path) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        apply(
            root,
            layer(
                entry("d/", kind=tarfile.DIRTYPE), entry("h", kind=tarfile.LNKTYPE, linkname="d")
            ),
        )


def test_fifos(root: Path) -> None:
    apply(root, layer(entry("p", kind=tarfile.FIFOTYPE, mode=0o640)))
    st = (root / "p").lstat()
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640


def test_user_xattrs(root: Path) -> None:
    info, data = entry("f", b"1")
    info.pax_headers = {"SCHILY.xattr.user.test": "v"}
    apply(root, layer((info, data)))
    try:
        assert os.getxattr(root / "f", "user.test") == b"v"
    except OSError as exc:  # tmpfs without user xattrs: the applier warned and went on
        pytest.skip(f"no user xattrs here: {exc}")


def test_entry_replaces_file_and_dir_merges_dir(root: Path) -> None:
    (root / "d").mkdir()
    (root / "d/keep").write_bytes(b"k")
    (root / "f").write_bytes(b"old")
    (root / "x").mkdir()
    (root / "x/y").write_bytes(b"y")
    apply(
        root,
        layer(
            entry("d/", kind=tarfile.DIRTYPE, mode=0o700),
            entry("f", kind=tarfile.SYMTYPE, linkname="d"),
            entry("x", b"file now"),
        ),
    )
    assert (root / "d/keep").read_bytes() == b"k"
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o700
    assert os.readlink(root / "f") == "d"
    assert (root / "x").read_bytes() == b"file now"


def test_remove_whiteouts_delete_files_and_trees(root: Path) -> None:
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/c").write_bytes(b"1")
    (root / "f").write_bytes(b"1")
    apply(root, layer(entry(".wh.a"), entry("sub/.wh.f"), entry(".wh.f"), entry(".wh.missing")))
    assert sorted(os.listdir(root)) == ["sub"]


def test_remove_opaque_keeps_only_this_layers_entries(root: Path) -> None:
    (root / "d/old/deep").mkdir(parents=True)
    (root / "d/old/deep/x").write_bytes(b"1")
    (root / "d/keepdir").mkdir()
    (root / "d/keepdir/older").write_bytes(b"1")
    apply(
        root,
        layer(
            entry("d/new", b"n"), entry("d/keepdir/", kind=tarfile.DIRTYPE), entry("d/.wh..wh..opq")
        ),
    )
    assert sorted(os.listdir(root / "d")) == ["keepdir", "new"]
    assert os.listdir(root / "d/keepdir") == []


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh..."])
def test_whiteouts_naming_nothing_or_parents_are_rejected(root: Path, name: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="whiteout"):
        apply(root, layer(entry("d/" + name)))


def test_root_entries_are_skipped(root: Path) -> None:
    os.chmod(root, 0o711)
    apply(
        root,
        layer(
            entry("./", kind=tarfile.DIRTYPE, mode=0o777),
            entry("/", kind=tarfile.DIRTYPE, mode=0o777),
            entry("..", kind=tarfile.DIRTYPE),
        ),
    )
    assert stat.S_IMODE(root.stat().st_mode) == 0o711


def test_file_under_a_file_is_invalid(root: Path) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="a/b"):
        apply(root, layer(entry("a", b"1"), entry("a/b", b"2")))


def test_stats_count_bytes_and_entries(root: Path) -> None:
    data = layer(entry("a", b"x" * 700), entry(".wh.b"), entry("c/", kind=tarfile.DIRTYPE))
    st = apply_layer(root, io.BytesIO(data))
    assert st.size == len(data)
    assert st.files == 3


@pytest.mark.parametrize("codec", ["gzip", "gzip-multi", "zstd", "none"])
def test_compressed_layers(root: Path, codec: str) -> None:
    data = layer(entry("a", b"A" * 100_000), entry("b", os.urandom(50_000)))
    blob = {
        "gzip": lambda: gzip.compress(data),
        "gzip-multi": lambda: gzip.compress(data[:5000]) + gzip.compress(data[5000:]),
        "zstd": lambda: zstandard.ZstdCompressor().compress(data),
        "none": lambda: data,
    }[codec]()
    with decompress(io.BytesIO(blob)) as stream:
        st = apply_layer(root, stream)
    assert st.size == len(data)
    assert (root / "a").read_bytes() == b"A" * 100_000


def test_opaque_reached_through_a_symlink_tracks_resolved_paths(root: Path) -> None:
    (root / "real").mkdir()
    (root / "real/old").write_bytes(b"o")
    (root / "link").symlink_to("real")
    apply(root, layer(entry("link/new", b"n"), entry("link/.wh..wh..opq")))
    assert os.listdir(root / "real") == ["new"]


def test_directory_removed_mid_layer_is_not_written_through_a_stale_handle(root: Path) -> None:
    apply(root, layer(entry("d/sub/f1", b"1"), entry(".wh.d"), entry("d/sub/f2", b"2")))
    assert os.listdir(root / "d/sub") == ["f2"]


def test_directory_replaced_by_symlink_mid_layer_redirects_later_entries(root: Path) -> None:
    apply(
        root,
        layer(
            entry("d/sub/f1", b"1"),
            entry("other/", kind=tarfile.DIRTYPE),
            entry("d", kind=tarfile.SYMTYPE, linkname="other"),
            entry("d/f2", b"2"),
        ),
    )
    assert os.readlink(root / "d") == "other"
    assert os.listdir(root / "other") == ["f2"]


def test_missing_root_or_parent_layer_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(errdefs.NotFound, match="does not exist"):
        apply(tmp_path / "nope", layer())
    (tmp_path / "r").mkdir()
    with pytest.raises(errdefs.NotFound, match="lower"):
        apply(tmp_path / "r", layer(), parents=[tmp_path / "lower"])
