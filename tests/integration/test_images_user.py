"""An image's named ``USER`` resolved from its own /etc/passwd and /etc/group by
the client (``Image.spec_opts``) and by ``pyctr containers create``, as
containerd does it (compared with Debian's ctr on both daemons)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.oci import spec as oci
from tests.integration._cli import Cli
from tests.support import daemons

pytestmark = pytest.mark.integration

NAME = "docker.io/library/accounts:test"

PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:1001:\nwheel:x:10:root,app\naudio:x:29:app\n"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer() -> bytes:
    """/etc/passwd is a symlink climbing out of the root: containerd resolves it
    inside the image (to /usr/lib/passwd), never on the host."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("etc", "usr", "usr/lib"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in (("usr/lib/passwd", PASSWD), ("etc/group", GROUP)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("etc/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../usr/lib/passwd"
        tar.addfile(link)
    return buf.getvalue()


def _archive(path: Path) -> Path:
    layer = _layer()
    blob = gzip.compress(layer, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"], "User": "app"},
            "rootfs": {"type": "layers", "diff_ids": [_sha256(layer)]},
        }
    ).encode()
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
                    "annotations": {"io.containerd.image.name": NAME},
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index),
            *[("blobs/sha256/" + _sha256(d)[7:], d) for d in (blob, config, manifest)],
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _archive(tmp_path_factory.mktemp("accounts") / "oci.tar")


@pytest.fixture(params=["pycontainerd", "containerd"])
def daemon(request: pytest.FixtureRequest, archive: Path) -> Iterator[daemons.RunningDaemon]:
    start = daemons.pycontainerd if request.param == "pycontainerd" else daemons.containerd
    with start() as d:
        Cli("ctr", d.address, "users")("images", "import", str(archive))
        yield d


def _user(ctr: Cli, id: str) -> Any:
    return json.loads(ctr("containers", "info", id).stdout)["Spec"]["process"]["user"]


def test_pyctr_create_resolves_a_named_user_as_ctr_does(daemon: daemons.RunningDaemon) -> None:
    ctr = Cli("ctr", daemon.address, "users")
    pyctr = Cli("pyctr", daemon.address, "users")
    ctr("containers", "create", NAME, "by-ctr")
    pyctr("containers", "create", NAME, "by-pyctr")
    theirs = _user(ctr, "by-ctr")
    assert (theirs["uid"], theirs["gid"]) == (1000, 1001)
    assert _user(ctr, "by-pyctr") == theirs
    # The temporary view is gone: only the two containers' snapshots and the layer.
    keys = [row.split()[0] for row in ctr("snapshots", "ls").stdout.splitlines()[1:]]
    assert sorted(k for k in keys if not k.startswith("sha256:")) == ["by-ctr", "by-pyctr"]


def test_client_spec_opts_reads_the_image_accounts(daemon: daemons.RunningDaemon) -> None:
    from pycontainerd.client import AsyncClient, Client

    async def scenario() -> dict[str, Any]:
        async with AsyncClient(daemon.address, "users") as client:
            img = await client.get_image(NAME)
            with pytest.raises(errdefs.FailedPrecondition, match="not unpacked"):
                await img.spec_opts(snapshotter="native")
            await img.unpack("native")
            spec = oci.generate("users", "a", await img.spec_opts(snapshotter="native"))
            user: dict[str, Any] = spec["process"]["user"]
            return user

    user = asyncio.run(scenario())
    assert (user["uid"], user["gid"]) == (1000, 1001)
    assert set(user["additionalGids"]) >= {10, 29}
    with Client(daemon.address, "users") as client:
        img = client.get_image(NAME)
        spec = oci.generate("users", "s", img.spec_opts(snapshotter="native"))
        assert spec["process"]["user"] == user
        # Files handed in by the caller are used as they are, nothing mounted.
        root = oci.generate("users", "r", img.spec_opts(passwd="app:x:7:8::/:/bin/sh\n", group=""))
        assert (root["process"]["user"]["uid"], root["process"]["user"]["gid"]) == (7, 8)
