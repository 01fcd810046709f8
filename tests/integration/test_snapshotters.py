"""The overlayfs and native snapshotters on real directories with real mounts.

The snapshotters are built directly in temp dirs (no daemon); one interop
test compares the mounts they hand out with what Debian's containerd hands
out for the same sequence of ``ctr snapshots`` calls.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import stat
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pycontainerd import errdefs, plugin
from pycontainerd import mount as ml
from pycontainerd.mount import Mount
from pycontainerd.snapshots import Info, Kind, Snapshotter, Usage
from pycontainerd.snapshots._local import LocalSnapshotter, host_platform
from pycontainerd.snapshots.native import NativeSnapshotter
from pycontainerd.snapshots.overlay import LABEL_UPPERDIR, OverlaySnapshotter, check_supported
from tests.integration._cli import Cli
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

T = TypeVar("T")
Shape = list[tuple[str, str, tuple[str, ...]]]

#: containerd 1.6's mount shapes, with ``R`` for ``<root>/snapshots`` (read from
#: snapshots/overlay/overlay.go and snapshots/native/native.go, and checked
#: against Debian's containerd by test_mount_shapes_match_containerd).
OVERLAY_SHAPES: dict[str, Shape] = {
    "active, no parent": [("bind", "R/1/fs", ("rw", "rbind"))],
    "view, no parent": [("bind", "R/2/fs", ("ro", "rbind"))],
    "active on c1": [
        (
            "overlay",
            "overlay",
            ("index=off", "workdir=R/3/work", "upperdir=R/3/fs", "lowerdir=R/1/fs"),
        )
    ],
    "view of c1": [("bind", "R/1/fs", ("ro", "rbind"))],
    "view of c2": [("overlay", "overlay", ("index=off", "lowerdir=R/3/fs:R/1/fs"))],
}
NATIVE_SHAPES: dict[str, Shape] = {
    "active, no parent": [("bind", "R/1", ("rbind", "rw"))],
    "view, no parent": [("bind", "R/2", ("rbind", "ro"))],
    "active on c1": [("bind", "R/3", ("rbind", "rw"))],
    "view of c1": [("bind", "R/1", ("rbind", "ro"))],
    "view of c2": [("bind", "R/3", ("rbind", "ro"))],
}


def run(aw: Awaitable[T]) -> T:
    async def inner() -> T:
        return await aw

    return asyncio.run(inner())


@pytest.fixture(params=["overlayfs", "native"])
def sn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalSnapshotter]:
    root = tmp_path / request.param
    s: LocalSnapshotter
    if request.param == "overlayfs":
        check_supported(root)
        s = OverlaySnapshotter(root)
    else:
        s = NativeSnapshotter(root)
    try:
        yield s
    finally:
        run(s.close())


def shapes(mounts: list[Mount], root: Path) -> Shape:
    base = str(root / "snapshots")
    return [
        (m.type, m.source.replace(base, "R"), tuple(o.replace(base, "R") for o in m.options))
        for m in mounts
    ]


def write_layer(s: LocalSnapshotter, key: str, parent: str, files: dict[str, str]) -> list[Mount]:
    mounts = run(s.prepare(key, parent))
    with ml.temp_mount(mounts) as root:
        for name, text in files.items():
            (root / name).write_text(text)
    return mounts


def build_chain(s: LocalSnapshotter) -> None:
    """c0 <- c1 <- c2, each layer adding a file and c2 changing c0's."""
    write_layer(s, "k0", "", {"a": "0", "shared": "from c0"})
    run(s.commit("c0", "k0"))
    write_layer(s, "k1", "c0", {"b": "1"})
    run(s.commit("c1", "k1"))
    write_layer(s, "k2", "c1", {"c": "2", "shared": "from c2"})
    run(s.commit("c2", "k2"))


def test_implements_the_protocol(sn: LocalSnapshotter) -> None:
    assert isinstance(sn, Snapshotter)


def test_three_layer_chain_is_visible_and_writes_land_in_the_upper(sn: LocalSnapshotter) -> None:
    build_chain(sn)
    mounts = run(sn.prepare("work", "c2"))
    with ml.temp_mount(mounts) as root:
        assert {p.name: p.read_text() for p in root.iterdir()} == {
            "a": "0",
            "b": "1",
            "c": "2",
            "shared": "from c2",
        }
        (root / "new").write_text("mine")
        (root / "a").unlink()
    own = sn.layer_dir(_id_of(sn, "work"))
    assert (own / "new").read_text() == "mine"
    if isinstance(sn, OverlaySnapshotter):  # the deletion is an overlay whiteout
        assert (own / "a").lstat().st_rdev == 0 and stat.S_ISCHR((own / "a").lstat().st_mode)
    else:
        assert not (own / "a").exists()
    # Lower layers are untouched.
    assert (sn.layer_dir(_id_of(sn, "c0")) / "a").read_text() == "0"


def _id_of(sn: LocalSnapshotter, key: str) -> str:
    return sn.ms.read(lambda tx: tx.get_info(key))[0]


def test_views_are_read_only(sn: LocalSnapshotter) -> None:
    build_chain(sn)
    for key, parent in (("v2", "c2"), ("v0", "c0"), ("v", "")):
        with ml.temp_mount(run(sn.view(key, parent))) as root:
            with pytest.raises(OSError) as info:
                (root / "x").write_text("no")
            assert info.value.errno == errno.EROFS
            if parent == "c2":
                assert (root / "shared").read_text() == "from c2"
    with pytest.raises(errdefs.FailedPrecondition, match="is not active"):
        run(sn.commit("cv", "v2"))


def test_read_only_temp_mount_of_an_active_snapshot(sn: LocalSnapshotter) -> None:
    build_chain(sn)
    mounts = write_layer(sn, "a", "c2", {"top": "t"})
    with ml.temp_mount(mounts, readonly=True) as root:
        assert (root / "top").read_text() == "t" and (root / "a").read_text() == "0"
        with pytest.raises(OSError):
            (root / "x").write_text("no")


def test_usage_counts_blocks_and_hardlinks_once(sn: LocalSnapshotter) -> None:
    mounts = run(sn.prepare("a", ""))
    base = run(sn.usage("a"))
    assert base.inodes == 1 and base.size > 0  # the directory itself, as containerd counts
    with ml.temp_mount(mounts) as root:
        (root / "big").write_bytes(os.urandom(64 * 1024))
        os.link(root / "big", root / "link")
        (root / "dir").mkdir()
        (root / "dir" / "sym").symlink_to("../big")
    used = run(sn.usage("a"))
    assert used.inodes == base.inodes + 3
    assert 64 * 1024 <= used.size - base.size <= 64 * 1024 + 3 * 4096 * 2
    run(sn.commit("c", "a"))
    assert run(sn.usage("c")) == used
    with pytest.raises(errdefs.NotFound):
        run(sn.usage("nope"))


def test_remove_refuses_parents_and_deletes_directories(sn: LocalSnapshotter) -> None:
    build_chain(sn)
    with pytest.raises(errdefs.FailedPrecondition, match="with child"):
        run(sn.remove("c1"))
    top = sn.snapshot_dir(_id_of(sn, "c2"))
    run(sn.remove("c2"))
    assert not top.exists()
    assert sorted(os.listdir(sn.snapshots_dir)) == ["1", "2"]
    with pytest.raises(errdefs.NotFound):
        run(sn.stat("c2"))
    with pytest.raises(errdefs.NotFound):
        run(sn.remove("c2"))


def test_cleanup_removes_only_orphans(sn: LocalSnapshotter) -> None:
    build_chain(sn)
    for orphan in ("99", "new-abc", "rm-7"):
        (sn.snapshots_dir / orphan / "fs").mkdir(parents=True)
        (sn.snapshots_dir / orphan / "fs" / "f").write_text("x")
    run(sn.cleanup())
    assert sorted(os.listdir(sn.snapshots_dir)) == ["1", "2", "3"]


def test_an_id_handed_out_again_after_a_crash_gets_a_fresh_directory(
    sn: LocalSnapshotter,
) -> None:
    # A create that crashed before its commit rolled back its id (1) but
    # left its directory; the next create takes that id again.
    stale = sn.snapshots_dir / "1"
    (stale / "fs").mkdir(parents=True)
    (stale / "fs" / "leftover").write_text("from the crashed create")
    mounts = run(sn.prepare("a", ""))
    assert _id_of(sn, "a") == "1"
    with ml.temp_mount(mounts) as root:
        assert os.listdir(root) == []
    assert sorted(os.listdir(sn.snapshots_dir)) == ["1"]


def test_failed_prepare_leaves_no_row_and_no_directory(
    sn: LocalSnapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise OSError(errno.ENOSPC, "no space left")

    monkeypatch.setattr(sn, "_fill_dir", broken)
    with pytest.raises(errdefs.ResourceExhausted, match="failed to prepare snapshot a"):
        run(sn.prepare("a", ""))
    assert os.listdir(sn.snapshots_dir) == []
    with pytest.raises(errdefs.NotFound):
        run(sn.stat("a"))


def test_stat_update_walk(sn: LocalSnapshotter) -> None:
    build_chain(sn)
    run(sn.prepare("a", "c2", {"role": "app"}))
    info = run(sn.stat("a"))
    assert (info.kind, info.parent, dict(info.labels)) == (Kind.ACTIVE, "c2", {"role": "app"})
    new = run(sn.update(Info(name="a", kind=Kind.ACTIVE, labels={"x": "1"}), ["labels.x"]))
    assert dict(new.labels) == {"role": "app", "x": "1"}

    async def names(*flt: str) -> list[str]:
        return [i.name async for i in sn.walk(*flt)]

    assert run(names()) == ["a", "c0", "c1", "c2"]
    assert run(names("kind==committed,parent==c0")) == ["c1"]
    assert run(names("labels.x==1")) == ["a"]


def test_mount_shapes(sn: LocalSnapshotter) -> None:
    expected = OVERLAY_SHAPES if isinstance(sn, OverlaySnapshotter) else NATIVE_SHAPES
    got = {}
    got["active, no parent"] = shapes(run(sn.prepare("a", "")), sn.root)
    got["view, no parent"] = shapes(run(sn.view("va", "")), sn.root)
    run(sn.commit("c1", "a"))
    got["active on c1"] = shapes(run(sn.prepare("b", "c1")), sn.root)
    got["view of c1"] = shapes(run(sn.view("vb", "c1")), sn.root)
    run(sn.commit("c2", "b"))
    got["view of c2"] = shapes(run(sn.view("vc", "c2")), sn.root)
    assert got == expected
    assert shapes(run(sn.mounts("vc")), sn.root) == expected["view of c2"]
    with pytest.raises(errdefs.FailedPrecondition, match="not active or view"):
        run(sn.mounts("c2"))


def test_overlay_with_more_layers_than_a_page_of_options(tmp_path: Path) -> None:
    root = tmp_path / ("deep-" + "x" * 60)
    check_supported(root)
    sn = OverlaySnapshotter(root)
    try:
        parent = ""
        for i in range(70):
            run(sn.prepare(f"k{i}", parent))
            (sn.layer_dir(_id_of(sn, f"k{i}")) / f"f{i}").write_text(str(i))
            run(sn.commit(f"c{i}", f"k{i}"))
            parent = f"c{i}"
        mounts = run(sn.prepare("top", parent))
        assert len(",".join(mounts[0].options)) > os.sysconf("SC_PAGE_SIZE")
        with ml.temp_mount(mounts) as merged:
            assert len(os.listdir(merged)) == 70
            (merged / "new").write_text("x")
        assert (sn.layer_dir(_id_of(sn, "top")) / "new").exists()
    finally:
        run(sn.close())


def test_native_copy_keeps_metadata(tmp_path: Path) -> None:
    sn = NativeSnapshotter(tmp_path / "native")
    try:
        run(sn.prepare("a", ""))
        src = sn.layer_dir(_id_of(sn, "a"))
        (src / "dir").mkdir(mode=0o750)
        f = src / "dir" / "file"
        f.write_text("data")
        os.chown(f, 1000, 1001)
        os.chmod(f, 0o4755)  # after chown, which clears set-id bits
        os.setxattr(f, "user.note", b"hello")
        os.setxattr(f, "trusted.overlay.opaque", b"y")
        os.utime(f, ns=(1_000_000_000, 2_000_000_000))
        os.link(f, src / "hard")
        (src / "sym").symlink_to("dir/file")
        os.mknod(src / "fifo", stat.S_IFIFO | 0o600)
        os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.utime(src / "dir", ns=(3_000_000_000, 4_000_000_000))
        run(sn.commit("c", "a"))
        run(sn.prepare("b", "c"))
        dst = sn.layer_dir(_id_of(sn, "b"))
        g = dst / "dir" / "file"
        st = g.stat()
        assert g.read_text() == "data"
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 1000, 1001)
        assert st.st_mtime_ns == 2_000_000_000
        assert os.getxattr(g, "user.note") == b"hello"
        assert os.getxattr(g, "trusted.overlay.opaque") == b"y"
        assert (dst / "hard").stat().st_ino == st.st_ino and st.st_nlink == 2
        assert os.readlink(dst / "sym") == "dir/file"
        assert stat.S_ISFIFO((dst / "fifo").lstat().st_mode)
        assert (dst / "null").lstat().st_rdev == os.makedev(1, 3)
        dst_dir = (dst / "dir").stat()
        assert stat.S_IMODE(dst_dir.st_mode) == 0o750 and dst_dir.st_mtime_ns == 4_000_000_000
        # The copy is independent of its parent.
        g.write_text("changed")
        assert f.read_text() == "data"
    finally:
        run(sn.close())


def test_overlay_prepare_keeps_the_parent_root_owner(tmp_path: Path) -> None:
    root = tmp_path / "ov"
    check_supported(root)
    sn = OverlaySnapshotter(root)
    try:
        run(sn.prepare("a", ""))
        os.chown(sn.layer_dir("1"), 123, 456)
        run(sn.commit("c", "a"))
        run(sn.prepare("b", "c"))
        st = sn.layer_dir("2").stat()
        assert (st.st_uid, st.st_gid) == (123, 456)
    finally:
        run(sn.close())


def test_plugins_register_with_containerd_ids(tmp_path: Path) -> None:
    from pycontainerd.snapshots import native, overlay

    regs = {r.uri: r for r in plugin._REGISTRY}
    for mod, uri in (
        (overlay, "io.containerd.snapshotter.v1.overlayfs"),
        (native, "io.containerd.snapshotter.v1.native"),
    ):
        reg = regs[uri]
        assert reg.init is mod._init
        ctx = plugin.InitContext(
            registration=reg,
            root=tmp_path / uri,
            state=tmp_path / "state",
            config=plugin.default_config(reg),
            plugins=plugin.PluginSet(),
        )
        instance = run(plugin.initialise(reg, ctx))
        assert instance.ok, instance.error
        # As containerd lists them: the host platform; overlayfs exports its root.
        assert instance.platforms == [host_platform()]
        want = {"root": str(tmp_path / uri)} if mod is overlay else {}
        assert instance.exports == want
        assert (tmp_path / uri / "metadata.db").exists()
        run(instance.instance.close())


def test_overlay_upperdir_label(tmp_path: Path) -> None:
    root = tmp_path / "ov"
    check_supported(root)
    sn = OverlaySnapshotter(root, upperdir_label=True)
    try:
        run(sn.prepare("a", "", {"k": "v"}))
        upper = str(root / "snapshots" / "1" / "fs")
        assert dict(run(sn.stat("a")).labels) == {"k": "v", LABEL_UPPERDIR: upper}

        async def walked() -> list[Info]:
            return [i async for i in sn.walk()]

        assert dict(run(walked())[0].labels)[LABEL_UPPERDIR] == upper
        new = run(sn.update(Info(name="a", kind=Kind.ACTIVE, labels={"x": "y"}), ["labels.x"]))
        assert dict(new.labels) == {"k": "v", "x": "y", LABEL_UPPERDIR: upper}
    finally:
        run(sn.close())


@pytest.mark.interop
def test_mount_shapes_match_containerd(containerd: RunningDaemon, tmp_path: Path) -> None:
    """The same ``ctr snapshots`` calls against containerd give our shapes."""
    ctr = Cli("ctr", containerd.address, "shapes" + uuid.uuid4().hex[:8])
    for name, expected in (("overlayfs", OVERLAY_SHAPES), ("native", NATIVE_SHAPES)):
        base = str(containerd.root / f"io.containerd.snapshotter.v1.{name}" / "snapshots")
        s = ("snapshots", "--snapshotter", name)

        def create(
            verb: str, key: str, parent: str, s: tuple[str, ...] = s, base: str = base
        ) -> Shape:
            # --mounts prints them at once: nothing (not even GC) can intervene.
            out = json.loads(ctr(*s, verb, "--mounts", key, *([parent] if parent else [])).stdout)
            return [
                (
                    m["Type"],
                    m["Source"].replace(base, "R"),
                    tuple(o.replace(base, "R") for o in m["Options"]),
                )
                for m in out
            ]

        got = {
            "active, no parent": create("prepare", "a", ""),
            "view, no parent": create("view", "va", ""),
        }
        ctr(*s, "commit", "c1", "a")
        got["active on c1"] = create("prepare", "b", "c1")
        got["view of c1"] = create("view", "vb", "c1")
        ctr(*s, "commit", "c2", "b")
        got["view of c2"] = create("view", "vc", "c2")
        # Ids in containerd's store depend on its history: mask them.
        assert _mask_ids(got) == _mask_ids(expected)
        for key in ("vc", "vb", "va", "c2", "c1"):
            ctr(*s, "rm", key, ok=False)


def _mask_ids(shapes_by_case: dict[str, Shape]) -> dict[str, Shape]:
    def mask(text: str) -> str:
        return re.sub(r"R/\d+", "R/N", text)

    return {
        case: [(t, mask(src), tuple(mask(o) for o in opts)) for t, src, opts in shape]
        for case, shape in shapes_by_case.items()
    }


def test_usage_type() -> None:
    assert Usage(1, 2).add(Usage(3, 4)) == Usage(4, 6)


def test_concurrent_prepares_and_commits(sn: LocalSnapshotter) -> None:
    async def one(i: int) -> None:
        mounts = await sn.prepare(f"k{i}", "")
        await asyncio.to_thread(_write_one, mounts, i)
        await sn.commit(f"c{i}", f"k{i}")

    async def all_of_them() -> list[str]:
        await asyncio.gather(*(one(i) for i in range(16)))
        return [i.name async for i in sn.walk("kind==committed")]

    assert sorted(run(all_of_them())) == sorted(f"c{i}" for i in range(16))
    assert len(os.listdir(sn.snapshots_dir)) == 16


def _write_one(mounts: list[Mount], i: int) -> None:
    with ml.temp_mount(mounts) as root:
        (root / "f").write_text(str(i))


def test_temp_mount_unmounts_nested_mounts_and_leaves_nothing(tmp_path: Path) -> None:
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    (outer / "sub").mkdir(parents=True)
    inner.mkdir()
    (inner / "f").write_text("inner")
    mounts = [
        Mount("bind", str(outer), ("rbind", "rw")),
        Mount("bind", str(inner), ("rbind", "ro"), target="sub"),
    ]
    with ml.temp_mount(mounts, root=tmp_path / "mnt") as where:
        assert (where / "sub" / "f").read_text() == "inner"
        seen = where
    assert not seen.exists()
    assert str(seen) not in Path("/proc/self/mountinfo").read_text()


def _fs_flags(path: Path) -> int | None:
    """The directory's inode flags (``lsattr``), or None where the filesystem has none."""
    import fcntl
    import struct

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, 0x80086601, buf)  # FS_IOC_GETFLAGS
        return int(struct.unpack_from("=I", buf)[0])
    except OSError:
        return None
    finally:
        os.close(fd)


def test_snapshots_are_spread_over_block_groups(sn: LocalSnapshotter) -> None:
    """ext4 places each snapshot where its allocator spreads top-level trees
    (``chattr +T`` on ``snapshots/``), not beside the snapshots just removed."""
    from pycontainerd.snapshots._fs import FS_TOPDIR_FL, spread_subdirectories

    flags = _fs_flags(sn.snapshots_dir)
    probe = sn.root / "probe"
    probe.mkdir()
    if flags is None or not spread_subdirectories(probe):
        pytest.skip("the filesystem under the test's temp dir has no TOPDIR flag (not ext2/3/4)")
    assert flags & FS_TOPDIR_FL
    # Only the snapshots directory: a snapshot's own tree stays together.
    write_layer(sn, "k0", "", {"a": "0"})
    assert not (_fs_flags(sn.snapshot_dir("1")) or 0) & FS_TOPDIR_FL


def test_spreading_is_skipped_where_the_filesystem_has_no_such_flag() -> None:
    from pycontainerd.snapshots._fs import spread_subdirectories

    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    d = shm / f"pcd-spread-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    try:
        assert spread_subdirectories(d) is False  # tmpfs: no TOPDIR, no error
    finally:
        d.rmdir()
