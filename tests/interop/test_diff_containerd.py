"""Our diff client against Debian's containerd, and our daemon against it:
the same requests give the same descriptors, trees and errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client
from pycontainerd.diff import LABEL_UNCOMPRESSED, MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.interop


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(entries: Sequence[tuple[str, bytes | None]]) -> bytes:
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


LAYER = make_layer([("etc/", None), ("etc/hello", b"hello\n"), (".wh.gone", b""), ("top", b"t")])


@pytest.fixture(params=["containerd", "pycontainerd"])
def client(
    request: pytest.FixtureRequest, containerd: RunningDaemon, shared_daemon: RunningDaemon
) -> Iterator[Client]:
    """The same test against Debian's containerd and against ours."""
    daemon = containerd if request.param == "containerd" else shared_daemon
    with Client(daemon.address, f"interop-{uuid.uuid4().hex[:8]}") as c, c.lease():
        yield c


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    try:
        yield tmp_path
    finally:
        subprocess.run(["umount", "-R", "-l", str(tmp_path)], capture_output=True, check=False)


def bind(path: Path, mode: str = "rw") -> list[Mount]:
    return [Mount("bind", str(path), ("rbind", mode))]


def put(client: Client, blob: bytes) -> str:
    return client.content.write_blob(f"l-{sha(blob)}", blob, size=len(blob), expected=sha(blob))


def test_apply_gives_the_same_descriptor_and_tree(client: Client, tmp: Path) -> None:
    (tmp / "gone").write_text("x")
    blob = gzip.compress(LAYER)
    applied = client.diff.apply(
        Descriptor(MEDIA_TYPE_LAYER_GZIP, put(client, blob), len(blob)), bind(tmp)
    )
    assert applied == Descriptor(MEDIA_TYPE_LAYER, sha(LAYER), len(LAYER))
    assert sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")) == ["etc", "etc/hello", "top"]


def test_apply_errors_match(client: Client, tmp: Path) -> None:
    dgst = put(client, LAYER)
    with pytest.raises(errdefs.Unknown) as info:
        client.diff.apply(Descriptor("application/x-foo", dgst, len(LAYER)), bind(tmp))
    assert info.value.message == (
        "failed to get stream processor for application/x-foo: no processor for media-type"
    )
    with pytest.raises(errdefs.NotFound) as nf:
        client.diff.apply(Descriptor(MEDIA_TYPE_LAYER, sha(b"absent"), 6), bind(tmp))
    assert nf.value.message == (
        f"failed to get reader from content store: content digest {sha(b'absent')}"
    )


def test_diff_gives_the_same_changes_and_labels(client: Client, tmp: Path) -> None:
    lower, upper = tmp / "lower", tmp / "upper"
    for side in (lower, upper):
        (side / "d").mkdir(parents=True)
        (side / "same").write_text("s")
        os.utime(side / "same", ns=(10**9, 10**9))
        os.utime(side / "d", ns=(10**9, 10**9))
    (lower / "removed").write_text("r")
    (upper / "d" / "new").write_text("n")
    desc = client.diff.compare(bind(lower, "ro"), bind(upper, "ro"), labels={"k": "v"})
    assert desc.media_type == MEDIA_TYPE_LAYER_GZIP
    blob = client.content.read(desc.digest)
    tar = gzip.decompress(blob)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        assert sorted(tf.getnames()) == [".wh.removed", "d", "d/new"]
    assert dict(client.content.info(desc.digest).labels) == {"k": "v", LABEL_UNCOMPRESSED: sha(tar)}
    plain = client.diff.compare(bind(upper), bind(upper), media_type=MEDIA_TYPE_LAYER)
    assert (plain.digest, plain.size) == (sha(bytes(1024)), 1024)
    with pytest.raises(errdefs.NotImplemented) as info:
        client.diff.compare(bind(lower), bind(upper), media_type="application/x-foo")
    assert info.value.message == "unsupported diff media type: application/x-foo"


def test_a_diff_written_by_containerd_applies_on_ours(
    containerd: RunningDaemon, shared_daemon: RunningDaemon, tmp: Path
) -> None:
    src, target = tmp / "src", tmp / "target"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_bytes(os.urandom(100_000))
    os.symlink("a/b/f", src / "link")
    empty = tmp / "empty"
    empty.mkdir()
    target.mkdir()
    ns = f"interop-{uuid.uuid4().hex[:8]}"
    with Client(containerd.address, ns) as theirs, theirs.lease():
        desc = theirs.diff.compare(bind(empty, "ro"), bind(src, "ro"))
        blob = theirs.content.read(desc.digest)
        uncompressed = theirs.content.info(desc.digest).labels[LABEL_UNCOMPRESSED]
    with Client(shared_daemon.address, ns) as ours, ours.lease():
        put(ours, blob)
        applied = ours.diff.apply(desc, bind(target))
    assert applied.digest == uncompressed
    assert (target / "a" / "b" / "f").read_bytes() == (src / "a" / "b" / "f").read_bytes()
    assert os.readlink(target / "link") == "a/b/f"
