"""Containers, images and leases outlive the daemon: a clean restart and a SIGKILL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pycontainerd.client import Client
from pycontainerd.images import Descriptor
from pycontainerd.leases import Resource
from pycontainerd.oci import spec as oci
from tests.support import daemons, launch

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "c" * 64
N = 25


@pytest.fixture
def layout() -> Iterator[launch.Layout]:
    with daemons.temp_base("pcd-meta-") as base:
        yield launch.Layout(base)


def _write_everything(client: Client) -> None:
    for i in range(N):
        client.new_container(
            f"c{i}",
            labels={"i": str(i)},
            spec=oci.generate("default", f"c{i}", oci.with_process_args("sh")),
        )
        client.images.create(f"example.com/img:{i}", Descriptor("x/y", DIGEST, i + 1))
        lease = client.leases.create(f"l{i}", {"i": str(i)})
        client.leases.add_resource(lease.id, Resource(f"ing{i}", "ingests"))


def _assert_everything(client: Client) -> None:
    assert sorted(c.id for c in client.containers.list()) == sorted(f"c{i}" for i in range(N))
    assert client.containers.get("c7").labels == {"i": "7"}
    assert client.load_container("c3").spec()["process"]["args"] == ["sh"]
    assert len(client.images.list()) == N
    assert client.images.get("example.com/img:4").target.size == 5
    assert sorted(lease.id for lease in client.leases.list()) == sorted(f"l{i}" for i in range(N))
    assert client.leases.list_resources("l9") == [Resource("ing9", "ingests")]


def test_records_survive_a_restart(layout: launch.Layout) -> None:
    with launch.running(layout) as first, Client(first.address) as client:
        _write_everything(client)
    with launch.running(layout) as second, Client(second.address) as client:
        _assert_everything(client)


def test_every_acknowledged_write_survives_sigkill(layout: launch.Layout) -> None:
    d = launch.start(layout)
    try:
        with Client(d.address) as client:
            _write_everything(client)
    finally:
        d.process.kill()
        d.process.wait()
    with launch.running(layout) as again, Client(again.address) as client:
        _assert_everything(client)
