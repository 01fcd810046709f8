"""A layer that hard-links a device node or FIFO only a lower layer has: the
daemon refuses it without ever opening the node (issue 9, item 2).

Unpacking into overlay upperdirs serves a hardlink to a lower layer's file by
copying that file up.  The lower entry is first looked at through ``O_PATH``
(which opens nothing); a device node, whose open alone can act on the host,
or a FIFO is refused there.  An inotify watch on the node counts every real
open by any process and none made with ``O_PATH``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration.test_archive_crafted import entry, layer
from tests.support import daemons, launch
from tests.support.inotify import OpenWatch

pytestmark = pytest.mark.integration

#: Harmless to open, like /dev/null: what makes the test safe, not what it proves.
NODES = layer(
    entry("node-char", kind=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o600),
    entry("node-fifo", kind=tarfile.FIFOTYPE, mode=0o600),
)


def oci_archive(path: Path, name: str, layers: Sequence[bytes]) -> None:
    """An OCI image layout tar of uncompressed ``layers``, named ``name``."""
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
    desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
    }
    desc["platform"] = {"architecture": "amd64", "os": "linux"}
    files = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode(),
        **{f"blobs/sha256/{d[7:]}": data for d, data in blobs.items()},
    }
    with tarfile.open(path, "w") as tf:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def ctr_import(address: str, archive: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "-a", address, "images", "import", "--snapshotter", "overlayfs", str(archive)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def daemon() -> Iterator[daemons.RunningDaemon]:
    with daemons.pycontainerd(config=daemons.NO_GC_CONFIG) as d:
        yield d


@pytest.mark.parametrize("node", ["node-char", "node-fifo"])
def test_hardlink_to_a_lower_layers_node_is_refused_and_the_node_never_opened(
    daemon: daemons.RunningDaemon, tmp_path: Path, node: str
) -> None:
    assert shutil.which("ctr"), "Debian's ctr is not installed"
    base = tmp_path / "base.tar"
    oci_archive(base, f"docker.io/library/nodes:{node}", [NODES])
    result = ctr_import(daemon.address, base)
    assert result.returncode == 0, result.stderr
    snapshots = daemon.root / "io.containerd.snapshotter.v1.overlayfs/snapshots"
    planted = sorted(snapshots.glob(f"*/fs/{node}"))
    assert planted, "the lower layer's node is not on disk"

    linked = tmp_path / "linked.tar"
    link = layer(entry("link", kind=tarfile.LNKTYPE, linkname=node))
    oci_archive(linked, f"docker.io/library/linked:{node}", [NODES, link])
    with OpenWatch() as watch:
        for path in planted:
            watch.add(path)
        result = ctr_import(daemon.address, linked)
        opens = watch.opens()

    assert opens == 0, f"the daemon opened the lower layer's {node}"
    assert result.returncode != 0, "a hardlink to a lower layer's node was unpacked"
    assert "unknown" not in result.stderr.lower(), result.stderr
    assert daemon.process.poll() is None, daemon.logs()
    launch.assert_serving(daemon.address)
