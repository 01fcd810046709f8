"""Images and leases through Debian's ``ctr`` and through ``pyctr``, against our daemon.

Image records are created through the API (pointing at a descriptor; the
blobs need not exist), then tagged, labelled, listed and removed by the CLIs.
"""

from __future__ import annotations

import re

import pytest

from pycontainerd.client import Client
from pycontainerd.images import Descriptor
from tests.integration._cli import Cli, table
from tests.support.daemons import RunningDaemon

pytestmark = [pytest.mark.integration, pytest.mark.interop]

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + "a" * 64
SOURCE = "docker.io/library/test:1"


@pytest.fixture(params=["ctr", "pyctr"])
def cli(request: pytest.FixtureRequest, daemon: RunningDaemon) -> Cli:
    return Cli(request.param, daemon.address)


@pytest.fixture
def image(daemon: RunningDaemon) -> str:
    with Client(daemon.address) as client:
        client.images.create(SOURCE, Descriptor(MANIFEST, DIGEST, 1234), {"l": "v"})
    return SOURCE


def test_images_tag_label_ls_rm(cli: Cli, image: str) -> None:
    assert cli("images", "tag", image, "example.com/t:2").stdout == "example.com/t:2\n"
    assert cli.error("images", "tag", image, "example.com/t:2") == (
        'image "example.com/t:2": already exists'
    )
    cli("images", "tag", "--force", image, "example.com/t:2")
    labels = cli("images", "label", "example.com/t:2", "q=1").stdout.strip()
    assert sorted(labels.split(",")) == ["l=v", "q=1"]
    assert cli("images", "label", "--replace-all", "example.com/t:2", "x=y").stdout.strip() == "x=y"

    rows = table(cli("images", "ls").stdout)
    assert rows[0] == ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]
    by_name = {r[0]: r for r in rows[1:]}
    assert set(by_name) == {image, "example.com/t:2"}
    assert by_name["example.com/t:2"][1:3] == [MANIFEST, DIGEST]
    assert by_name["example.com/t:2"][-1] == "x=y"
    assert cli("images", "ls", "-q", "labels.x==y").stdout == "example.com/t:2\n"

    out = cli("images", "rm", "example.com/t:2", "nope")
    assert out.stdout == "example.com/t:2\n"
    assert "nope: image not found" in out.stderr
    cli("images", "rm", "--sync", image)
    assert cli("images", "ls", "-q").stdout == ""


def test_leases_create_ls_rm(cli: Cli) -> None:
    generated = cli("leases", "create", "k=v").stdout.strip()
    assert re.fullmatch(r"\d+-[A-Za-z0-9_-]{4}", generated)
    assert cli("leases", "create", "--id", "mine", "--expires", "0").stdout == "mine\n"
    assert cli.error("leases", "create", "--id", "mine") == 'lease "mine": already exists'

    rows = table(cli("leases", "ls").stdout)
    assert rows[0] == ["ID", "CREATED", "AT", "LABELS"]
    by_id = {r[0]: r for r in rows[1:]}
    assert set(by_id) == {generated, "mine"}
    assert re.fullmatch(r"containerd\.io/gc\.expire=[0-9T:-]+Z,k=v", by_id[generated][2])
    assert by_id["mine"][2] == "-"  # no expiry label at all
    assert cli("leases", "ls", "-q", "labels.k==v").stdout == f"{generated}\n"

    assert cli("leases", "rm", "mine").stdout == "mine\n"
    assert cli.error("leases", "rm", "mine") == 'lease "mine": not found'
    cli("leases", "rm", "--sync", generated)
    assert cli("leases", "ls", "-q").stdout == ""


def test_client_lease_scope_carries_the_lease(daemon: RunningDaemon) -> None:
    from pycontainerd import leases

    with Client(daemon.address) as client:
        with client.lease() as lease:
            assert leases.current() == lease.id
            (listed,) = client.leases.list()
            assert listed.id == lease.id and leases.EXPIRE_LABEL in listed.labels
            client.leases.add_resource(lease.id, leases.Resource("k", "snapshots/overlayfs"))
            assert client.leases.list_resources(lease.id) == [
                leases.Resource("k", "snapshots/overlayfs")
            ]
        assert leases.current() is None
        assert client.leases.list() == []
