"""Crafted hostile layers: applying them never changes anything outside the root.

Every escape test snapshots a sentinel directory next to the root (tree,
contents, modes, owners, xattrs) before and after the apply and requires them
equal, whatever the applier decided to do with the entry inside the root.
Runs as root: owners, device nodes and overlay's trusted xattrs need it.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pycontainerd import _openat, errdefs
from pycontainerd.archive import Whiteouts, apply_layer

pytestmark = pytest.mark.integration

Entry = tuple[tarfile.TarInfo, bytes]


def entry(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, **attrs: object) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def layer(*entries: Entry, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything observable about a tree, the tree root itself included."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for p in [Path(dirpath)] + [Path(dirpath, n) for n in dirnames + filenames]:
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                body: object = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                body = p.read_bytes()
            else:
                body = None
            xattrs = {
                k: os.getxattr(p, k, follow_symlinks=False)
                for k in os.listxattr(p, follow_symlinks=False)
            }
            out[str(p)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_ino,
                st.st_nlink,
                st.st_mtime_ns,
                body,
                xattrs,
            )
    return out


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): an empty target and a sentinel directory beside it."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"secret")
    os.chmod(outside / "secret", 0o600)
    (outside / "sub/x").write_bytes(b"x")
    root = tmp_path / "root"
    root.mkdir()
    return root, outside


def attempt(root: Path, data: bytes, **kw: object) -> None:
    """Apply, accepting a typed refusal: the outcome that matters is checked by the caller."""
    with contextlib.suppress(errdefs.ContainerdError):
        apply_layer(root, io.BytesIO(data), **kw)  # type: ignore[arg-type]


def _depth(p: Path) -> str:
    return "../" * (len(p.parts) + 3)


ESCAPES: dict[str, Callable[[Path, Path], bytes]] = {
    "dotdot-name": lambda root, out: layer(entry("../outside/secret", b"pwned", mode=0o777)),
    "deep-dotdot-name": lambda root, out: layer(entry(f"a/{_depth(root)}{out}/secret", b"pwned")),
    "absolute-name": lambda root, out: layer(entry(f"{out}/secret", b"pwned", mode=0o777)),
    "absolute-symlink-dir-then-file": lambda root, out: layer(
        entry("l", kind=tarfile.SYMTYPE, linkname=str(out)),
        entry("l/secret", b"pwned", mode=0o777),
        entry("l/sub/new", b"new"),
    ),
    "relative-symlink-climbing-then-file": lambda root, out: layer(
        entry("l", kind=tarfile.SYMTYPE, linkname=f"{_depth(root)}{out}"),
        entry("l/secret", b"pwned"),
        entry("l/sub/", kind=tarfile.DIRTYPE, mode=0o777),
    ),
    "symlink-chain-climbing": lambda root, out: layer(
        entry("a", kind=tarfile.SYMTYPE, linkname="b/../.."),
        entry("b/", kind=tarfile.DIRTYPE),
        entry("c", kind=tarfile.SYMTYPE, linkname=f"a/{_depth(root)}{out}"),
        entry("c/secret", b"pwned"),
    ),
    "hardlink-to-outside-absolute": lambda root, out: layer(
        entry("h", kind=tarfile.LNKTYPE, linkname=f"{out}/secret", mode=0o777)
    ),
    "hardlink-to-outside-dotdot": lambda root, out: layer(
        entry("h", kind=tarfile.LNKTYPE, linkname="../outside/secret", mode=0o777)
    ),
    "hardlink-through-symlink-dir": lambda root, out: layer(
        entry("l", kind=tarfile.SYMTYPE, linkname=str(out)),
        entry("h", kind=tarfile.LNKTYPE, linkname="l/secret", mode=0o777),
    ),
    "hardlink-to-symlink-to-outside-then-chmod": lambda root, out: layer(
        entry("s", kind=tarfile.SYMTYPE, linkname=f"{out}/secret"),
        entry("h", kind=tarfile.LNKTYPE, linkname="s", mode=0o777, uid=1234),
    ),
    "whiteout-dotdot": lambda root, out: layer(entry("../.wh.outside")),
    "whiteout-deep-dotdot": lambda root, out: layer(entry("a/../../.wh.outside")),
    "whiteout-through-symlink": lambda root, out: layer(
        entry("l", kind=tarfile.SYMTYPE, linkname=str(out)),
        entry("l/.wh.secret"),
        entry("l/.wh.sub"),
    ),
    "opaque-through-symlink": lambda root, out: layer(
        entry("l", kind=tarfile.SYMTYPE, linkname=str(out)), entry("l/.wh..wh..opq")
    ),
    "whiteout-name-climbing": lambda root, out: layer(
        entry("d/.wh.."), entry("d/.wh..."), entry(".wh...")
    ),
    "symlink-replaced-by-file": lambda root, out: layer(
        entry("v", kind=tarfile.SYMTYPE, linkname=f"{out}/secret"),
        entry("v", b"pwned", mode=0o4777, uid=1234),
    ),
    "symlink-replaced-by-dir": lambda root, out: layer(
        entry("v", kind=tarfile.SYMTYPE, linkname=str(out)),
        entry("v/", kind=tarfile.DIRTYPE, mode=0o777, uid=1234),
    ),
    "symlink-to-file-then-device-and-fifo-through-dir": lambda root, out: layer(
        entry("l", kind=tarfile.SYMTYPE, linkname=str(out)),
        entry("l/null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3),
        entry("l/fifo", kind=tarfile.FIFOTYPE),
    ),
    "symlink-then-xattr-entry-named-like-it": lambda root, out: layer(
        entry("s", kind=tarfile.SYMTYPE, linkname=f"{out}/secret"),
        entry(
            "s2", kind=tarfile.LNKTYPE, linkname="s", pax_headers={"SCHILY.xattr.user.evil": "1"}
        ),
    ),
    "pax-path-escaping": lambda root, out: layer(
        entry("benign", b"pwned", pax_headers={"path": f"../../{_depth(root)}{out}/secret"})
    ),
    "pax-linkpath-escaping": lambda root, out: layer(
        entry(
            "benign", kind=tarfile.LNKTYPE, pax_headers={"linkpath": f"{_depth(root)}{out}/secret"}
        )
    ),
    "gnu-long-name-escaping": lambda root, out: layer(
        entry(f"{'d/' * 60}{_depth(root) * 3}{out}/secret", b"pwned"), fmt=tarfile.GNU_FORMAT
    ),
    "gnu-long-link-escaping": lambda root, out: layer(
        entry("l", kind=tarfile.SYMTYPE, linkname="x" * 20 + "/" + f"{_depth(root) * 5}{out}"),
        entry("h", kind=tarfile.LNKTYPE, linkname=f"{'../' * 60}{out}/secret"),
        fmt=tarfile.GNU_FORMAT,
    ),
}


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of resolving paths in the root: the kernel's and our component walk."""
    if request.param == "walk":
        monkeypatch.setattr(_openat, "AVAILABLE", False)
    elif not _openat.AVAILABLE:
        pytest.skip("openat2 unavailable on this kernel")
    return str(request.param)


@pytest.mark.parametrize("mode", list(Whiteouts))
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_crafted_layer_changes_nothing_outside_the_root(
    sandbox: tuple[Path, Path], case: str, mode: Whiteouts, resolver: str
) -> None:
    root, outside = sandbox
    before = snapshot(outside)
    attempt(root, ESCAPES[case](root, outside), whiteouts=mode)
    assert snapshot(outside) == before


def test_dotdot_and_absolute_names_land_inside_the_root(sandbox: tuple[Path, Path]) -> None:
    root, outside = sandbox
    apply_layer(root, io.BytesIO(layer(entry("../../x", b"1"), entry(f"{outside}/y", b"2"))))
    assert (root / "x").read_bytes() == b"1"
    assert (root / str(outside).lstrip("/") / "y").read_bytes() == b"2"


def test_file_through_absolute_symlink_lands_in_the_roots_copy(
    sandbox: tuple[Path, Path], resolver: str
) -> None:
    root, outside = sandbox
    apply_layer(root, io.BytesIO(ESCAPES["absolute-symlink-dir-then-file"](root, outside)))
    scoped = root / str(outside).lstrip("/")
    assert (scoped / "secret").read_bytes() == b"pwned"
    assert (scoped / "sub/new").read_bytes() == b"new"


def test_hardlink_to_absolute_path_links_the_roots_own_file(
    sandbox: tuple[Path, Path], resolver: str
) -> None:
    root, _ = sandbox
    (root / "etc").mkdir()
    (root / "etc/passwd").write_bytes(b"root:x:0:0")
    apply_layer(root, io.BytesIO(layer(entry("h", kind=tarfile.LNKTYPE, linkname="/etc/passwd"))))
    assert (root / "h").stat().st_ino == (root / "etc/passwd").stat().st_ino


def test_hardlink_to_host_only_file_is_refused(sandbox: tuple[Path, Path]) -> None:
    root, outside = sandbox
    with pytest.raises(errdefs.InvalidArgument, match="not found"):
        apply_layer(root, io.BytesIO(ESCAPES["hardlink-to-outside-absolute"](root, outside)))
    assert not (root / "h").exists()


def test_symlink_replaced_by_file_becomes_a_file(sandbox: tuple[Path, Path]) -> None:
    root, outside = sandbox
    apply_layer(root, io.BytesIO(ESCAPES["symlink-replaced-by-file"](root, outside)))
    st = (root / "v").lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o4777 and st.st_uid == 1234
    assert (outside / "secret").read_bytes() == b"secret"


def test_preexisting_symlink_in_root_is_replaced_not_written_through(
    sandbox: tuple[Path, Path],
) -> None:
    """A lower layer's symlink to the host is replaced by the next layer's file."""
    root, outside = sandbox
    (root / "etc").mkdir()
    (root / "etc/shadow").symlink_to(outside / "secret")
    before = snapshot(outside)
    apply_layer(root, io.BytesIO(layer(entry("etc/shadow", b"new", mode=0o640))))
    assert snapshot(outside) == before
    assert (root / "etc/shadow").read_bytes() == b"new"


# -- positive behaviour that needs root --------------------------------------------


def test_owners_devices_fifos(sandbox: tuple[Path, Path]) -> None:
    root, _ = sandbox
    apply_layer(
        root,
        io.BytesIO(
            layer(
                entry("d/", kind=tarfile.DIRTYPE, uid=1000, gid=1001, mode=0o2775),
                entry("d/f", b"1", uid=65534, gid=65534, mode=0o4711),
                entry("d/l", kind=tarfile.SYMTYPE, linkname="f", uid=7, gid=8),
                entry("dev/null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
                entry("dev/loop0", kind=tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660, gid=6),
                entry("p", kind=tarfile.FIFOTYPE, mode=0o600, uid=5),
            )
        ),
    )
    d = (root / "d").stat()
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode)) == (1000, 1001, 0o2775)
    f = (root / "d/f").stat()
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (65534, 65534, 0o4711)
    lnk = (root / "d/l").lstat()
    assert (lnk.st_uid, lnk.st_gid) == (7, 8)
    null = (root / "dev/null").lstat()
    assert (
        stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    )
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = (root / "dev/loop0").lstat()
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), loop.st_gid) == (7, 6)
    assert (root / "p").lstat().st_uid == 5


def test_capability_xattr_applied_and_trusted_ignored(sandbox: tuple[Path, Path]) -> None:
    root, _ = sandbox
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12)  # vfs cap v2: cap_net_bind_service
    info, data = entry("ping", b"ELF", mode=0o755)
    info.pax_headers = {
        "SCHILY.xattr.security.capability": cap.decode("latin-1"),
        "SCHILY.xattr.trusted.overlay.opaque": "y",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="latin-1") as tf:
        info.size = 3
        tf.addfile(info, io.BytesIO(data))
    apply_layer(root, io.BytesIO(buf.getvalue()))
    assert os.getxattr(root / "ping", "security.capability") == cap
    assert "trusted.overlay.opaque" not in os.listxattr(root / "ping")


def test_overlay_whiteouts_become_char_devices_and_opaque_xattrs(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    data = layer(
        entry("etc/", kind=tarfile.DIRTYPE),
        entry("etc/.wh.passwd", uid=3, gid=4),
        entry("var/", kind=tarfile.DIRTYPE),
        entry("var/.wh..wh..opq"),
        entry("var/new", b"n"),
    )
    apply_layer(upper, io.BytesIO(data), whiteouts=Whiteouts.OVERLAY)
    wh = (upper / "etc/passwd").lstat()
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0 and (wh.st_uid, wh.st_gid) == (3, 4)
    assert os.getxattr(upper / "var", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(upper / "var")) == ["new"]
    assert not (upper / "etc/.wh.passwd").exists()


def test_overlay_layers_mount_as_the_merged_view(tmp_path: Path) -> None:
    """Two layers applied as overlay upperdirs give the same view a plain apply gives."""
    l1, l2, plain, work, merged = (tmp_path / n for n in ("l1", "l2", "plain", "work", "merged"))
    for d in (l1, l2, plain, work, merged):
        d.mkdir()
    first = layer(
        entry("a/", kind=tarfile.DIRTYPE),
        entry("a/x", b"x"),
        entry("a/y", b"y"),
        entry("b/z", b"z"),
    )
    second = layer(entry("a/.wh..wh..opq"), entry("a/w", b"w"), entry("b/.wh.z"), entry("c", b"c"))
    apply_layer(l1, io.BytesIO(first), whiteouts=Whiteouts.OVERLAY)
    apply_layer(l2, io.BytesIO(second), whiteouts=Whiteouts.OVERLAY, parents=[l1])
    for data in (first, second):
        apply_layer(plain, io.BytesIO(data))
    opts = f"lowerdir={l2}:{l1},upperdir={tmp_path / 'up'},workdir={work}"
    (tmp_path / "up").mkdir()
    rc = os.system(f"mount -t overlay overlay -o {opts} {merged}")
    if rc != 0:
        pytest.skip("overlay mount unavailable")
    try:
        view = sorted(str(p.relative_to(merged)) for p in merged.rglob("*"))
    finally:
        os.system(f"umount {merged}")
    assert view == sorted(str(p.relative_to(plain)) for p in plain.rglob("*"))
    assert view == ["a", "a/w", "b", "c"]


def test_missing_parents_copy_metadata_from_parent_layers(tmp_path: Path, resolver: str) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "usr/bin").mkdir(parents=True)
    os.chown(lower / "usr/bin", 12, 34)
    os.chmod(lower / "usr/bin", 0o750)
    upper.mkdir()
    apply_layer(
        upper,
        io.BytesIO(layer(entry("usr/bin/tool", b"t"))),
        whiteouts=Whiteouts.OVERLAY,
        parents=[lower],
    )
    st = (upper / "usr/bin").stat()
    # The times are copied too, but adding "tool" moves the mtime on, as with containerd.
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (12, 34, 0o750)


def test_overlay_hardlink_to_a_lower_file_copies_it_up(tmp_path: Path, resolver: str) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "bin").mkdir(parents=True)
    (lower / "bin/busybox").write_bytes(b"BB")
    os.chmod(lower / "bin/busybox", 0o4755)
    upper.mkdir()
    data = layer(entry("bin/sh", kind=tarfile.LNKTYPE, linkname="bin/busybox", mode=0o4755))
    apply_layer(upper, io.BytesIO(data), whiteouts=Whiteouts.OVERLAY, parents=[lower])
    assert (upper / "bin/sh").read_bytes() == b"BB"
    assert (upper / "bin/sh").stat().st_ino == (upper / "bin/busybox").stat().st_ino
    assert (lower / "bin/busybox").stat().st_nlink == 1


# -- the same layers through Debian's containerd ---------------------------------------

_CAP = (b"\x01\x00\x00\x02\x00\x04\x00\x00" + bytes(12)).decode("latin-1")
PARITY_LAYERS = [
    lambda: layer(
        entry("etc/", kind=tarfile.DIRTYPE),
        entry("etc/hosts", b"127.0.0.1"),
        entry("usr/bin/", kind=tarfile.DIRTYPE, mode=0o750, uid=3, gid=4),
        entry("usr/bin/busybox", b"BB", mode=0o4755),
        entry("usr/bin/sh", kind=tarfile.LNKTYPE, linkname="usr/bin/busybox"),
        entry("bin", kind=tarfile.SYMTYPE, linkname="usr/bin"),
        entry("bin/viasym", b"v"),
        entry("../escape", b"e"),
        entry("/abs/file", b"a"),
        entry("a/../../b/c", b"c"),
        entry("home/u/", kind=tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000),
        entry("fifo", kind=tarfile.FIFOTYPE, mode=0o600),
        entry("dev/null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("lnk", kind=tarfile.SYMTYPE, linkname="/etc"),
        entry("lnk/through", b"t"),
        entry("dang", kind=tarfile.SYMTYPE, linkname="/nonexist/dir"),
        entry("dang/file", b"d"),
        entry(
            "ping",
            b"P",
            pax_headers={
                "SCHILY.xattr.security.capability": _CAP,
                "SCHILY.xattr.user.k": "v",
                "SCHILY.xattr.trusted.x": "y",
            },
        ),
        entry("var/a/b", b"b"),
        entry("var/keep", b"k"),
        entry("s", kind=tarfile.SYMTYPE, linkname="/etc/hosts"),
        entry("hl2", kind=tarfile.LNKTYPE, linkname="/etc/../etc/hosts"),
        entry("./", kind=tarfile.DIRTYPE, mode=0o700),
        entry("deep/x/y/z", b"z", uid=5),
    ),
    lambda: layer(
        entry("etc/.wh.hosts"),
        entry("var/", kind=tarfile.DIRTYPE),
        entry("var/.wh..wh..opq"),
        entry("var/new", b"n"),
        entry("s", b"now a file", mode=0o600),
        entry(".wh.fifo"),
        entry("deep/x/.wh.y"),
        entry("newparent/under/file", b"f"),
        entry("usr/bin/more", b"m"),
        entry("home/u/f", b"x", uid=1000),
    ),
    lambda: layer(
        entry("l", kind=tarfile.SYMTYPE, linkname="/tmp/outside"),
        entry("l/f", b"f"),
        entry("rel", kind=tarfile.SYMTYPE, linkname="../../../../../x/y"),
        entry("rel/f", b"r"),
        entry("dirlnk", kind=tarfile.SYMTYPE, linkname="usr"),
        entry("dirlnk/", kind=tarfile.DIRTYPE, mode=0o711),
        entry("bin/.wh.more"),
        entry("benign", b"p", pax_headers={"path": "../../../paxed"}),
        entry("chain", kind=tarfile.SYMTYPE, linkname="deep/../.."),
        entry("chain/cf", b"cf"),
        entry("s2", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
        entry("hsym", kind=tarfile.LNKTYPE, linkname="s2", mode=0o777),
    ),
]


def _oci_archive(layers: list[bytes], path: Path) -> None:
    import hashlib
    import json

    blobs: dict[str, bytes] = {}

    def add(data: bytes, media_type: str) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    diff_ids = ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]
    config = {"architecture": "amd64", "os": "linux", "config": {}}
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": add(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [add(data, "application/vnd.oci.image.layer.v1.tar") for data in layers],
    }
    desc = add(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    desc["annotations"] = {"org.opencontainers.image.ref.name": "parity:latest"}
    with tarfile.open(path, "w") as tf:
        files = {
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode(),
            **{f"blobs/sha256/{d[7:]}": data for d, data in blobs.items()},
        }
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    """What a snapshot holds; whiteout devices' and directories' times vary by run."""
    out: dict[str, tuple[object, ...]] = {}
    for key, value in snapshot(root).items():
        mode, uid, gid, _ino, nlink, mtime, body, xattrs = value
        assert isinstance(mode, int)
        st = Path(key).lstat()
        if stat.S_ISDIR(mode) or (stat.S_ISCHR(mode) and st.st_rdev == 0):
            mtime = None
        out[str(Path(key).relative_to(root))] = (
            mode,
            uid,
            gid,
            st.st_rdev,
            nlink,
            mtime,
            body,
            xattrs,
        )
    return out


@pytest.mark.interop
def test_layers_apply_exactly_as_containerd_applies_them(tmp_path: Path) -> None:
    """Native (REMOVE) and overlayfs (OVERLAY upperdirs) results equal containerd 1.6's."""
    import shutil
    import subprocess

    from tests.support import daemons

    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("Debian's containerd is not installed")
    layers = [make() for make in PARITY_LAYERS]
    _oci_archive(layers, tmp_path / "image.tar")
    with daemons.containerd() as ctd:
        for snapshotter in ("native", "overlayfs"):
            argv = ["ctr", "-a", ctd.address, "-n", snapshotter, "images", "import"]
            subprocess.run(
                [*argv, "--snapshotter", snapshotter, str(tmp_path / "image.tar")],
                check=True,
                capture_output=True,
            )
        native = ctd.root / "io.containerd.snapshotter.v1.native/snapshots"
        theirs_full = _tree(native / max(os.listdir(native), key=int))
        overlay = ctd.root / "io.containerd.snapshotter.v1.overlayfs/snapshots"
        theirs_uppers = [_tree(overlay / i / "fs") for i in sorted(os.listdir(overlay), key=int)]
    full = tmp_path / "full"
    full.mkdir()
    uppers: list[Path] = []
    for i, data in enumerate(layers):
        apply_layer(full, io.BytesIO(data))
        upper = tmp_path / f"upper{i}"
        upper.mkdir()
        apply_layer(upper, io.BytesIO(data), whiteouts=Whiteouts.OVERLAY, parents=uppers[::-1])
        uppers.append(upper)
    assert _tree(full) == theirs_full
    assert [_tree(u) for u in uppers] == theirs_uppers


def _whiteout_times_masked(data: bytes) -> bytes:
    """containerd stamps whiteouts with the current time; ours carry the epoch."""
    out = bytearray(data)
    for i in range(0, len(out), 512):
        name = bytes(out[i : i + 100])
        if b"/.wh." in name or name.startswith(b".wh."):
            out[i + 136 : i + 156] = bytes(20)
    return bytes(out)


@pytest.mark.interop
def test_walking_diff_is_byte_for_byte_containerds(tmp_path: Path) -> None:
    """``ctr snapshots diff`` on the native snapshotter and write_diff give the same tar."""
    import shutil
    import subprocess

    from pycontainerd.archive import write_diff
    from tests.support import daemons

    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("Debian's containerd is not installed")
    with daemons.containerd() as ctd:

        def ctr(*args: str) -> bytes:
            argv = ["ctr", "-a", ctd.address, "-n", "diff", "snapshots", "--snapshotter", "native"]
            return subprocess.run([*argv, *args], check=True, capture_output=True).stdout

        snaps = ctd.root / "io.containerd.snapshotter.v1.native/snapshots"
        ctr("prepare", "base", "")
        base = snaps / max(os.listdir(snaps), key=int)
        for d in ("etc/conf.d", "gone/deep", "bin", "keep/sub", "todir"):
            (base / d).mkdir(parents=True, exist_ok=True)
        (base / "etc/hosts").write_text("127.0.0.1\n")
        (base / "etc/conf.d/a").write_text("a")
        (base / "gone/deep/f").write_text("f")
        (base / "bin/sh").write_bytes(b"ELF")
        os.link(base / "bin/sh", base / "bin/ash")
        (base / "ln").symlink_to("etc/hosts")
        (base / "tofile").write_text("x")
        (base / "keep/sub/x").write_text("x")
        ctr("commit", "base-c", "base")
        ctr("prepare", "top", "base-c")
        top = snaps / max(os.listdir(snaps), key=int)
        (top / "etc/hosts").write_text("10.0.0.1\n")
        (top / "etc/new").write_text("new")
        shutil.rmtree(top / "gone")
        os.unlink(top / "etc/conf.d/a")
        os.chmod(top / "etc/conf.d", 0o700)
        os.unlink(top / "ln")
        (top / "ln").symlink_to("elsewhere")
        shutil.rmtree(top / "todir")
        (top / "todir").write_text("now a file")
        os.unlink(top / "tofile")
        (top / "tofile/inner").mkdir(parents=True)
        os.mkfifo(top / "fifo")
        os.mknod(top / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (top / "bin/sh").write_bytes(b"ELF2")
        os.link(top / "keep/sub/x", top / "xlink")
        os.chown(top / "etc/new", 1000, 1001)
        os.setxattr(top / "etc/new", "security.capability", _CAP.encode("latin-1"))
        os.setxattr(top / "etc/new", "user.not-carried", b"1")
        deep = top / ("long/" * 30)
        deep.mkdir(parents=True)
        (deep / "file").write_text("l")
        theirs = ctr("diff", "--media-type", "application/vnd.oci.image.layer.v1.tar", "top")
        buf = io.BytesIO()
        write_diff(base, top, buf)
    assert _whiteout_times_masked(buf.getvalue()) == _whiteout_times_masked(theirs)


def test_overlay_copy_up_goes_where_the_lower_file_really_is(tmp_path: Path, resolver: str) -> None:
    """A lower ``bin -> usr/bin`` symlink is not shadowed by a new ``bin`` directory."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "usr/bin").mkdir(parents=True)
    (lower / "usr/bin/busybox").write_bytes(b"BB")
    (lower / "bin").symlink_to("usr/bin")
    upper.mkdir()
    data = layer(entry("usr/bin/sh", kind=tarfile.LNKTYPE, linkname="bin/busybox"))
    apply_layer(upper, io.BytesIO(data), whiteouts=Whiteouts.OVERLAY, parents=[lower])
    assert not (upper / "bin").exists()
    assert (upper / "usr/bin/sh").stat().st_ino == (upper / "usr/bin/busybox").stat().st_ino


def test_parent_metadata_never_comes_from_outside_the_lower_layer(
    sandbox: tuple[Path, Path], resolver: str
) -> None:
    """A lower layer's symlink to a host directory does not lend it the host's owner."""
    upper, outside = sandbox
    os.chown(outside / "sub", 4242, 4242)
    os.chmod(outside / "sub", 0o701)
    lower = upper.parent / "lower"
    lower.mkdir()
    (lower / "etc").symlink_to(outside)
    before = snapshot(outside)
    data = layer(entry("etc/sub/x", b"x"))
    apply_layer(upper, io.BytesIO(data), whiteouts=Whiteouts.OVERLAY, parents=[lower])
    st = (upper / "etc/sub").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert snapshot(outside) == before
