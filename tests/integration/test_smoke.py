import pytest

from pycontainerd.client import Client

pytestmark = pytest.mark.integration


def test_version_over_socket(daemon):
    with Client(daemon.address) as c:
        v = c.version()
        assert v.revision == "pycontainerd"
        assert c.is_serving()
