"""Namespaces as containerd keeps them, checked on both daemons side by side:
Get of a namespace that does not exist answers it with no labels (Docker
Engine reads its namespace so at start-up), setting a label creates the
namespace, and creating anything in a namespace creates it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pycontainerd.client import Client
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.interop


@pytest.fixture(params=["pycontainerd", "containerd"])
def address(request: pytest.FixtureRequest) -> Iterator[str]:
    fixture = "shared_daemon" if request.param == "pycontainerd" else "containerd"
    daemon: RunningDaemon = request.getfixturevalue(fixture)
    yield daemon.address


def _fresh() -> str:
    return f"ns-{uuid.uuid4().hex[:10]}"


def _names(client: Client) -> set[str]:
    return {ns.name for ns in client.namespaces.list()}


def test_get_of_a_missing_namespace_answers_it_with_no_labels(address: str) -> None:
    name = _fresh()
    with Client(address, "default", timeout=10) as client:
        got = client.namespaces.get(name)
        assert (got.name, dict(got.labels)) == (name, {})
        assert name not in _names(client)  # answering it did not create it


def test_setting_a_label_creates_the_namespace(address: str) -> None:
    name = _fresh()
    with Client(address, "default", timeout=10) as client:
        client.namespaces.set_labels(name, {"team": "infra"})
        assert name in _names(client)
        assert dict(client.namespaces.get(name).labels) == {"team": "infra"}
        client.namespaces.delete(name)


def test_creating_an_object_creates_its_namespace(address: str) -> None:
    name = _fresh()
    with Client(address, name, timeout=10) as client:
        lease = client.leases.create()
        assert name in _names(client)
        client.leases.delete(lease.id)
        client.namespaces.delete(name)
