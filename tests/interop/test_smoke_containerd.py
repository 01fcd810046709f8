import pytest

from pycontainerd.client import Client

pytestmark = pytest.mark.interop


def test_client_against_containerd(containerd):
    with Client(containerd.address) as c:
        assert c.version().version.startswith("1.6")
