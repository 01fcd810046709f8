"""A defect inside a service reaches the client as INTERNAL, naming no Python
type, and the daemon's log holds its traceback; the daemon keeps serving."""

from __future__ import annotations

import grpc
import pytest

from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from tests.support import daemons, launch

pytestmark = pytest.mark.integration

#: Run in the daemon before it starts: the local namespaces service's Get breaks.
FAULT = """
import pycontainerd.services.namespaces as local

def get(self, name):
    raise KeyError("secret-internal-detail")

local.NamespacesService.get = get
"""


def test_an_unexpected_exception_is_internal_and_logged() -> None:
    with daemons.pycontainerd(prelude=FAULT) as daemon:
        with grpc.insecure_channel(f"unix://{daemon.address}") as channel:
            stub = namespace_pb2_grpc.NamespacesStub(channel)
            with pytest.raises(grpc.RpcError) as excinfo:
                stub.Get(namespace_pb2.GetNamespaceRequest(name="default"), timeout=10)
            # Other methods of the same service still work.
            stub.List(namespace_pb2.ListNamespacesRequest(), timeout=10)
        error = excinfo.value
        assert error.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
        details = error.details()  # type: ignore[attr-defined]
        assert "KeyError" not in details and "secret-internal-detail" not in details
        assert "/containerd.services.namespaces.v1.Namespaces/Get" in details
        launch.assert_serving(daemon.address)
        logs = daemon.logs()
        assert "Traceback (most recent call last)" in logs
        assert "KeyError: 'secret-internal-detail'" in logs
