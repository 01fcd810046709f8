"""Our client and spec generator against Debian's containerd: the same records."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client
from pycontainerd.images import Descriptor
from pycontainerd.leases import Resource
from pycontainerd.oci import spec as oci
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.interop


def test_default_spec_matches_ctr_create_on_containerd(
    containerd: RunningDaemon, tmp_path: Path
) -> None:
    ctr = shutil.which("ctr")
    assert ctr is not None
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    base = [ctr, "-a", containerd.address, "-n", "spec-check"]
    subprocess.run([*base, "c", "create", "--rootfs", str(rootfs), "web", "sh"], check=True)
    try:
        out = subprocess.run(
            [*base, "c", "info", "--spec", "web"], check=True, capture_output=True, text=True
        ).stdout
    finally:
        subprocess.run([*base, "c", "rm", "web"], check=False)
    ours = oci.generate(
        "spec-check", "web", oci.with_root_path(str(rootfs)), oci.with_process_args("sh")
    )
    assert json.loads(out) == ours


def test_client_records_round_trip_on_containerd(containerd: RunningDaemon) -> None:
    with Client(containerd.address, "records-check") as client:
        c = client.new_container(
            "web", labels={"a": "b"}, spec=oci.generate("records-check", "web")
        )
        try:
            assert c.set_labels({"x": "1", "a": ""}) == {"x": "1"}
            assert [r.id for r in client.containers.list("labels.x==1")] == ["web"]
            with pytest.raises(errdefs.AlreadyExists):
                client.new_container("web", spec=oci.generate("records-check", "web"))
        finally:
            c.delete()
        image = client.images.create("ex/a:1", Descriptor("x/y", "sha256:" + "e" * 64, 3))
        assert client.images.set_labels(image.name, {"k": "v"}).labels == {"k": "v"}
        client.images.delete(image.name, sync=True)
        with client.lease() as lease:
            client.leases.add_resource(lease.id, Resource("ing", "ingests"))
            assert client.leases.list_resources(lease.id) == [Resource("ing", "ingests")]
        assert lease.id not in [x.id for x in client.leases.list()]
