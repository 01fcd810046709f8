"""gRPC call metrics render as containerd's (go-grpc-prometheus) series."""

from __future__ import annotations

import grpc
import pytest

from pycontainerd.daemon.metrics_http import MetricsServer
from pycontainerd.metrics import GO_CODE_NAMES, Registry

pytestmark = pytest.mark.unit


def test_handled_calls_are_labelled_with_go_code_names_and_call_type() -> None:
    reg = Registry()
    reg.observe("/containerd.services.version.v1.Version/Version", "OK", 0.001)
    reg.observe("/containerd.services.version.v1.Version/Version", "OK", 0.002)
    reg.observe("/containerd.services.namespaces.v1.Namespaces/Get", "NOT_FOUND", 0.001)
    reg.observe("/containerd.services.events.v1.Events/Subscribe", "CANCELLED", 3, "server_stream")
    lines = reg.render().splitlines()
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Version",'
        'grpc_service="containerd.services.version.v1.Version",grpc_type="unary"} 2'
    ) in lines
    assert (
        'grpc_server_handled_total{grpc_code="NotFound",grpc_method="Get",'
        'grpc_service="containerd.services.namespaces.v1.Namespaces",grpc_type="unary"} 1'
    ) in lines
    assert (
        'grpc_server_handled_total{grpc_code="Canceled",grpc_method="Subscribe",'
        'grpc_service="containerd.services.events.v1.Events",grpc_type="server_stream"} 1'
    ) in lines


def test_every_grpc_status_code_has_its_go_name() -> None:
    assert {code.name for code in grpc.StatusCode} == set(GO_CODE_NAMES)
    assert GO_CODE_NAMES["FAILED_PRECONDITION"] == "FailedPrecondition"
    assert GO_CODE_NAMES["UNIMPLEMENTED"] == "Unimplemented"


def test_latency_histogram_is_cumulative() -> None:
    reg = Registry()
    for seconds in (0.0001, 0.003, 0.2, 30):
        reg.observe("/s.S/M", "OK", seconds)
    labels = 'grpc_method="M",grpc_service="s.S",grpc_type="unary"'
    lines = reg.render().splitlines()
    assert f'grpc_server_handling_seconds_bucket{{{labels},le="0.0005"}} 1' in lines
    assert f'grpc_server_handling_seconds_bucket{{{labels},le="0.005"}} 2' in lines
    assert f'grpc_server_handling_seconds_bucket{{{labels},le="10.0"}} 3' in lines
    assert f'grpc_server_handling_seconds_bucket{{{labels},le="+Inf"}} 4' in lines
    assert f"grpc_server_handling_seconds_count{{{labels}}} 4" in lines


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", "127.0.0.1:http", ":70000"])
def test_metrics_address_must_be_host_and_port(address: str) -> None:
    with pytest.raises(ValueError, match="want host:port"):
        MetricsServer(address)


@pytest.mark.parametrize("address", ["127.0.0.1:1338", ":9100", "[::1]:9100"])
def test_metrics_address_forms_accepted(address: str) -> None:
    MetricsServer(address)
