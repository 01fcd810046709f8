"""Issue 5's acceptance, with Debian's ``ctr`` against our daemon.

Images are built here from busybox-static: an OCI image-layout archive and
a legacy ``docker save`` archive.  Each flow imports one (which unpacks
it), lists it, finds its committed snapshot, mounts and unmounts its root
filesystem, exports it with every original blob intact, and removes it
with ``--sync`` until neither its blobs nor its snapshots are left on
disk.  The same flow runs against Debian's containerd, so a difference in
behaviour shows as a failure on one side only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycontainerd.images.identity import chain_id
from tests.integration._cli import Cli, table
from tests.support import daemons

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")
OVERLAY_DIR = "io.containerd.snapshotter.v1.overlayfs"
CONTENT_DIR = "io.containerd.content.v1.content"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BuiltImage:
    """An archive and what it must contain."""

    name: str
    archive: Path
    blobs: frozenset[str]  # every digest the archive carries
    diff_ids: tuple[str, ...]
    layers: tuple[str, ...]  # the layer blobs' digests, as stored


def _layer_tar() -> bytes:
    """A root filesystem: bin/busybox, bin/sh -> busybox, etc/hostname."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        hostname = b"acceptance\n"
        info = tarfile.TarInfo("etc/hostname")
        info.size, info.mode = len(hostname), 0o644
        tar.addfile(info, io.BytesIO(hostname))
    return buf.getvalue()


def _config(diff_id: str) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "test_images_ctr_acceptance"}],
        },
        sort_keys=True,
    ).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def build_oci_archive(path: Path, name: str, layer: bytes | None = None) -> BuiltImage:
    """An OCI image layout tar with one gzip layer (``layer``, an uncompressed
    tar; busybox by default), named by annotation."""
    layer = _layer_tar() if layer is None else layer
    return build_oci_archive_from_blob(path, name, gzip.compress(layer, mtime=0), _sha256(layer))


def build_oci_archive_from_blob(path: Path, name: str, blob: bytes, diff_id: str) -> BuiltImage:
    """As :func:`build_oci_archive`, for a gzip layer ``blob`` whose
    uncompressed digest is ``diff_id`` (a layer too large to hold uncompressed)."""
    config = _config(diff_id)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha256(blob),
                    "size": len(blob),
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _sha256(manifest),
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", index)
        for data in (blob, config, manifest):
            _add(tar, "blobs/sha256/" + _sha256(data).split(":")[1], data)
    digests = frozenset(_sha256(d) for d in (blob, config, manifest))
    return BuiltImage(name, path, digests, (diff_id,), (_sha256(blob),))


def build_docker_archive(path: Path, repo_tag: str) -> BuiltImage:
    """A legacy ``docker save`` tar: manifest.json, <id>.json, <id>/layer.tar."""
    layer = _layer_tar()
    diff_id = _sha256(layer)
    config = _config(diff_id)
    config_hex = _sha256(config).split(":")[1]
    layer_id = diff_id.split(":")[1]
    manifest = [
        {
            "Config": f"{config_hex}.json",
            "RepoTags": [repo_tag],
            "Layers": [f"{layer_id}/layer.tar"],
        }
    ]
    repo, tag = repo_tag.rsplit(":", 1)
    with tarfile.open(path, "w") as tar:
        _add(tar, "manifest.json", json.dumps(manifest).encode())
        _add(tar, "repositories", json.dumps({repo: {tag: layer_id}}).encode())
        _add(tar, f"{config_hex}.json", config)
        _add(tar, f"{layer_id}/layer.tar", layer)
    # The manifest is made at import; the config and the layer are the originals.
    return BuiltImage(
        f"docker.io/library/{repo_tag}",
        path,
        frozenset({_sha256(config), diff_id}),
        (diff_id,),
        (diff_id,),
    )


@pytest.fixture(scope="module", params=["pycontainerd", "containerd"])
def target(request: pytest.FixtureRequest) -> Iterator[tuple[Cli, daemons.RunningDaemon]]:
    """Debian's ctr against our daemon, and against containerd as the reference."""
    start = daemons.pycontainerd if request.param == "pycontainerd" else daemons.containerd
    with start() as d:
        yield Cli("ctr", d.address, "accept"), d


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltImage]:
    base = tmp_path_factory.mktemp("archives")
    return {
        "oci": build_oci_archive(base / "oci.tar", "docker.io/library/accept:oci"),
        "docker": build_docker_archive(base / "docker.tar", "accept:docker"),
    }


def _blob_files(d: daemons.RunningDaemon) -> set[str]:
    blobs = d.root / CONTENT_DIR / "blobs" / "sha256"
    return {"sha256:" + p.name for p in blobs.iterdir()} if blobs.exists() else set()


def _snapshot_dirs(d: daemons.RunningDaemon) -> list[str]:
    snaps = d.root / OVERLAY_DIR / "snapshots"
    return sorted(os.listdir(snaps)) if snaps.exists() else []


def _archive_blobs(path: Path) -> dict[str, str]:
    """``blobs/sha256/<hex>`` members of an OCI archive, name -> digest of the bytes."""
    found = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("blobs/sha256/"):
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                found["sha256:" + member.name.rsplit("/", 1)[1]] = _sha256(data)
    return found


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_import_mount_export_and_remove(
    target: tuple[Cli, daemons.RunningDaemon],
    archives: dict[str, BuiltImage],
    kind: str,
    tmp_path: Path,
) -> None:
    ctr, d = target
    image = archives[kind]
    top = chain_id(list(image.diff_ids))

    out = ctr("images", "import", str(image.archive)).stdout
    assert f"unpacking {image.name} (sha256:" in out and out.rstrip().endswith("done"), out

    rows = table(ctr("images", "ls").stdout)
    assert rows[0][:3] == ["REF", "TYPE", "DIGEST"]
    assert image.name in [r[0] for r in rows[1:]]

    snaps = table(ctr("snapshots", "ls").stdout)
    assert [top, "Committed"] in [[r[0], r[-1]] for r in snaps[1:]], snaps
    check = table(ctr("images", "check").stdout)
    assert [r[-1] for r in check[1:] if r[0] == image.name] == ["true"]

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = ctr("images", "mount", image.name, str(mnt)).stdout.split()
    assert out == [top, str(mnt)]
    try:
        assert (mnt / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
        assert os.readlink(mnt / "bin" / "sh") == "busybox"
        assert (mnt / "etc" / "hostname").read_text() == "acceptance\n"
    finally:
        assert ctr("images", "unmount", "--rm", str(mnt)).stdout.strip() == str(mnt)
    assert not (mnt / "bin").exists()

    exported = tmp_path / "export.tar"
    ctr("images", "export", str(exported), image.name)
    blobs = _archive_blobs(exported)
    assert all(name == digest for name, digest in blobs.items()), blobs
    # Every original blob is exported with its digest (a docker-save layer
    # stays uncompressed, exactly as it came).
    assert image.blobs <= set(blobs), (image.blobs, blobs)

    held = set(blobs)
    assert held <= _blob_files(d)
    ctr("images", "rm", "--sync", image.name)
    assert not held & _blob_files(d)
    assert table(ctr("snapshots", "ls").stdout)[1:] == []
    assert _snapshot_dirs(d) == []


def test_image_from_rootfs_is_listed_and_unpacked(
    target: tuple[Cli, daemons.RunningDaemon], tmp_path: Path
) -> None:
    ctr, d = target
    pyctr = Cli("pyctr", d.address, "accept")
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    os.symlink("busybox", rootfs / "bin" / "sh")
    name = "docker.io/library/fromrootfs:latest"
    pyctr("images", "import", "--from-rootfs", str(rootfs), name)
    assert name in ctr("images", "ls", "-q").stdout.split()
    check = table(ctr("images", "check", f"name=={name}").stdout)
    assert check[1][0] == name and check[1][-1] == "true", check
    assert "complete" in check[1][3]
    ctr("images", "rm", "--sync", name)
    assert table(ctr("snapshots", "ls").stdout)[1:] == []
