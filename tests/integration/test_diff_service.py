"""The diff service on a real daemon: layers applied onto real directories and
real overlay mounts, diffs of real trees written into content, bad requests
refused with typed errors while the daemon keeps serving.  The client tests
run over the socket and over the in-process channel of a daemon embedded in
this process."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import zstandard

from pycontainerd import errdefs, leases
from pycontainerd import mount as mountlib
from pycontainerd.client import Client
from pycontainerd.daemon.embedded import EmbeddedDaemon
from pycontainerd.diff import (
    LABEL_UNCOMPRESSED,
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_ZSTD,
)
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount
from tests.support import inprocess
from tests.support.daemons import VENV_BIN, RunningDaemon

pytestmark = pytest.mark.integration


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(entries: Sequence[tuple[str, bytes | None]]) -> bytes:
    """A tar: (name, data) is a file, (name/, None) a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name.rstrip("/"))
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


LAYER = make_layer([("etc/", None), ("etc/hello", b"hello\n"), ("bin/", None)])


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedDaemon]:
    """Our daemon in this process, serving from a thread of its own."""
    with inprocess.in_thread() as daemon:
        yield daemon


@pytest.fixture(params=["socket", "inprocess"])
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    """A client in a fresh namespace, under a lease so nothing is collected
    mid-test: of the daemon process over its socket, or of the daemon in this
    process over its in-process channel."""
    namespace = f"diff-{uuid.uuid4().hex[:8]}"
    if request.param == "socket":
        c = Client(request.getfixturevalue("shared_daemon").address, namespace)
    else:
        daemon: EmbeddedDaemon = request.getfixturevalue("embedded")
        c = Client(str(daemon.server.address), namespace, channel=daemon.channel())
    with c, c.lease():
        yield c


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    try:
        yield tmp_path
    finally:
        subprocess.run(["umount", "-R", "-l", str(tmp_path)], capture_output=True, check=False)


def put(client: Client, blob: bytes) -> str:
    return client.content.write_blob(f"layer-{sha(blob)}", blob, size=len(blob), expected=sha(blob))


def bind(path: Path, *opts: str) -> list[Mount]:
    return [Mount("bind", str(path), ("rbind", *(opts or ("rw",))))]


def test_apply_gzip_layer_onto_a_bind_mount(client: Client, tmp: Path) -> None:
    blob = gzip.compress(LAYER)
    dgst = put(client, blob)
    applied = client.diff.apply(Descriptor(MEDIA_TYPE_LAYER_GZIP, dgst, len(blob)), bind(tmp))
    assert applied == Descriptor(MEDIA_TYPE_LAYER, sha(LAYER), len(LAYER))
    assert (tmp / "etc" / "hello").read_bytes() == b"hello\n"
    assert (tmp / "bin").is_dir()


def test_apply_onto_an_overlay_writes_its_upper_dir(client: Client, tmp: Path) -> None:
    lower, upper, work, merged = (tmp / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "gone").write_text("x")
    (lower / "kept").write_text("k")
    layer = make_layer([(".wh.gone", b""), ("new", b"n")])
    blob = zstandard.ZstdCompressor().compress(layer)
    dgst = put(client, blob)
    overlay = Mount(
        "overlay", "overlay", (f"workdir={work}", f"upperdir={upper}", f"lowerdir={lower}")
    )
    applied = client.diff.apply(Descriptor(MEDIA_TYPE_LAYER_ZSTD, dgst, len(blob)), [overlay])
    assert applied.digest == sha(layer)
    st = os.lstat(upper / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    mountlib.mount_all([overlay], merged)
    try:
        assert sorted(p.name for p in merged.iterdir()) == ["kept", "new"]
    finally:
        mountlib.unmount(merged)


def test_apply_onto_several_mounts_goes_through_a_temp_mount(client: Client, tmp: Path) -> None:
    root = tmp / "root"
    root.mkdir()
    (root / "old").write_text("o")
    layer = make_layer([(".wh.old", b""), ("top", b"t")])
    dgst = put(client, layer)
    # Stacked on one target: the bind mount on top is where the layer lands.
    mounts = [Mount("tmpfs", "tmpfs", ("size=1m",)), *bind(root)]
    client.diff.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, len(layer)), mounts)
    assert sorted(p.name for p in root.iterdir()) == ["top"]
    assert not any(p.name.startswith(".wh.") for p in root.iterdir())


def test_bad_applies_get_typed_errors_and_the_daemon_keeps_serving(
    client: Client, tmp: Path
) -> None:
    dgst = put(client, LAYER)
    desc = Descriptor(MEDIA_TYPE_LAYER, dgst, len(LAYER))
    with pytest.raises(errdefs.Unknown, match="no processor for media-type"):
        client.diff.apply(Descriptor("application/x-foo", dgst, len(LAYER)), bind(tmp))
    with pytest.raises(errdefs.NotFound, match="failed to get reader from content store"):
        client.diff.apply(Descriptor(MEDIA_TYPE_LAYER, sha(b"absent"), 6), bind(tmp))
    with pytest.raises(errdefs.InvalidArgument, match="descriptor size 1 "):
        client.diff.apply(Descriptor(MEDIA_TYPE_LAYER, dgst, 1), bind(tmp))
    with pytest.raises(errdefs.InvalidArgument, match="read-only"):
        client.diff.apply(desc, bind(tmp, "rbind", "ro"))
    garbage = gzip.compress(b"this is not a tar archive" * 40)
    with pytest.raises(errdefs.ContainerdError):
        client.diff.apply(
            Descriptor(MEDIA_TYPE_LAYER_GZIP, put(client, garbage), len(garbage)), bind(tmp)
        )
    with pytest.raises(errdefs.NotImplemented, match="unsupported diff media type"):
        client.diff.compare(bind(tmp), bind(tmp), media_type="application/x-foo")
    assert list(tmp.iterdir()) == []
    assert client.diff.apply(desc, bind(tmp)).digest == sha(LAYER)


def _trees(tmp: Path) -> tuple[Path, Path]:
    lower, upper = tmp / "lower", tmp / "upper"
    for side in (lower, upper):
        (side / "dir").mkdir(parents=True)
        (side / "same").write_text("s")
        os.utime(side / "same", ns=(10**9, 10**9))
        os.utime(side / "dir", ns=(10**9, 10**9))
    (lower / "removed").write_text("r")
    (upper / "dir" / "added").write_text("a")
    os.symlink("same", upper / "link")
    return lower, upper


def test_diff_of_two_bind_mounts_is_a_gzip_layer_with_labels(client: Client, tmp: Path) -> None:
    lower, upper = _trees(tmp)
    desc = client.diff.compare(bind(lower, "ro"), bind(upper, "ro"), labels={"app": "x"})
    assert desc.media_type == MEDIA_TYPE_LAYER_GZIP
    blob = client.content.read(desc.digest)
    assert (sha(blob), len(blob)) == (desc.digest, desc.size)
    tar = gzip.decompress(blob)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert sorted(members) == [".wh.removed", "dir", "dir/added", "link"]
        assert members["link"].issym() and members["link"].linkname == "same"
        added = tf.extractfile("dir/added")
        assert added is not None and added.read() == b"a"
    labels = client.content.info(desc.digest).labels
    assert dict(labels) == {"app": "x", LABEL_UNCOMPRESSED: sha(tar)}
    lease_id = leases.current()
    assert lease_id is not None
    resources = client.leases.list_resources(lease_id)
    assert leases.Resource(id=desc.digest, type="content") in resources


def test_diff_then_apply_reproduces_the_upper_tree(client: Client, tmp: Path) -> None:
    lower, upper = _trees(tmp)
    target = tmp / "target"
    subprocess.run(["cp", "-a", f"{lower}/.", str(target)], check=True)
    desc = client.diff.compare(
        bind(lower), bind(upper), media_type=MEDIA_TYPE_LAYER_ZSTD, ref="my-diff"
    )
    assert desc.media_type == MEDIA_TYPE_LAYER_ZSTD
    client.diff.apply(desc, bind(target))
    listing = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    assert listing == sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
    assert (target / "dir" / "added").read_text() == "a"
    assert os.readlink(target / "link") == "same"


def test_diff_of_an_overlay_against_its_lower(client: Client, tmp: Path) -> None:
    lower, upper, work = (tmp / n for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "base").write_text("b")
    (upper / "extra").write_text("e")
    overlay = Mount(
        "overlay", "overlay", (f"workdir={work}", f"upperdir={upper}", f"lowerdir={lower}")
    )
    desc = client.diff.compare(bind(lower), [overlay], media_type=MEDIA_TYPE_LAYER)
    tar = client.content.read(desc.digest)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        assert tf.getnames() == ["extra"]
    assert LABEL_UNCOMPRESSED not in client.content.info(desc.digest).labels
    # Both sides were mounted read-only: nothing new appeared in the upper dir.
    assert sorted(p.name for p in upper.iterdir()) == ["extra"]


def test_plugins_list_the_differ_and_both_services(shared_daemon: RunningDaemon) -> None:
    out = subprocess.run(
        ["ctr", "-a", shared_daemon.address, "plugins", "ls"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()[1:]}
    assert rows[("io.containerd.differ.v1", "walking")][-1] == "ok"
    assert rows[("io.containerd.differ.v1", "walking")][0].startswith("linux/")
    assert rows[("io.containerd.service.v1", "diff-service")][-1] == "ok"
    assert rows[("io.containerd.grpc.v1", "diff")][-1] == "ok"


def test_config_default_has_the_diff_service_section() -> None:
    out = subprocess.run(
        [str(VENV_BIN / "pycontainerd"), "config", "default"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert '[plugins."io.containerd.service.v1.diff-service"]\n    default = ["walking"]' in out


def test_layers_stack_in_overlay_snapshots(client: Client, tmp: Path) -> None:
    """The unpack sequence: apply into a prepared snapshot, commit, repeat on top."""
    sn = client.snapshot_service("overlayfs")
    first = gzip.compress(make_layer([("etc/", None), ("etc/hello", b"h"), ("etc/x", b"x")]))
    second = gzip.compress(make_layer([("etc/.wh.hello", b""), ("new", b"n")]))
    for blob in (first, second):
        put(client, blob)
    client.diff.apply(
        Descriptor(MEDIA_TYPE_LAYER_GZIP, sha(first), len(first)), sn.prepare("k1", "")
    )
    sn.commit("l1", "k1")
    mounts = sn.prepare("k2", "l1")
    assert [m.type for m in mounts] == ["overlay"]  # the upperdir fast path
    client.diff.apply(Descriptor(MEDIA_TYPE_LAYER_GZIP, sha(second), len(second)), mounts)

    # ctr drives Diff through its own views and lease, and prints the blob.
    ctr = ["ctr", "-a", client.address, "-n", client.namespace, "snapshots"]
    out = subprocess.run([*ctr, "diff", "k2"], capture_output=True, check=True, timeout=30).stdout
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(out))) as tf:
        assert sorted(tf.getnames()) == ["etc", "etc/.wh.hello", "new"]

    sn.commit("l2", "k2")
    merged = tmp / "merged"
    merged.mkdir()
    mountlib.mount_all(sn.view("v", "l2"), merged)
    try:
        assert sorted(str(p.relative_to(merged)) for p in merged.rglob("*")) == [
            "etc",
            "etc/x",
            "new",
        ]
    finally:
        mountlib.unmount(merged)
