"""``[metrics] address``: Prometheus text at /v1/metrics, labelled as containerd
labels it (go-grpc-prometheus), counting the calls clients make."""

from __future__ import annotations

import http.client
import re
import socket
from collections.abc import Iterator

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client
from tests.support import daemons, launch

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def metrics_daemon() -> Iterator[tuple[daemons.RunningDaemon, int]]:
    port = free_port()
    config = f'version = 2\n[metrics]\n  address = "127.0.0.1:{port}"\n'
    with daemons.pycontainerd(config=config) as d:
        yield d, port


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


def handled(text: str, service: str, method: str, code: str) -> int:
    """The value of one grpc_server_handled_total series (0 if absent)."""
    pattern = re.compile(
        r"^grpc_server_handled_total\{"
        rf'grpc_code="{code}",grpc_method="{method}",grpc_service="{re.escape(service)}",'
        r'grpc_type="unary"\} (\d+)$',
        re.MULTILINE,
    )
    match = pattern.search(text)
    return int(match.group(1)) if match else 0


VERSION_SERVICE = "containerd.services.version.v1.Version"
NAMESPACES_SERVICE = "containerd.services.namespaces.v1.Namespaces"


def test_metrics_count_the_calls_made_with_their_status_codes(
    metrics_daemon: tuple[daemons.RunningDaemon, int],
) -> None:
    d, port = metrics_daemon
    _, _, before = get(port, "/v1/metrics")
    with Client(d.address) as client:
        for _ in range(3):
            client.version()
        with pytest.raises(errdefs.NotFound):
            client.namespaces.delete("no-such-namespace")

    status, content_type, text = get(port, "/v1/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "# TYPE grpc_server_handled_total counter" in text
    ok_before = handled(before, VERSION_SERVICE, "Version", "OK")
    assert handled(text, VERSION_SERVICE, "Version", "OK") == ok_before + 3
    missing_before = handled(before, NAMESPACES_SERVICE, "Delete", "NotFound")
    assert handled(text, NAMESPACES_SERVICE, "Delete", "NotFound") == missing_before + 1


def test_metrics_record_latency_per_method(
    metrics_daemon: tuple[daemons.RunningDaemon, int],
) -> None:
    d, port = metrics_daemon
    with Client(d.address) as client:
        client.version()
    text = get(port, "/v1/metrics")[2]
    labels = f'grpc_method="Version",grpc_service="{VERSION_SERVICE}",grpc_type="unary"'
    assert re.search(rf"^grpc_server_handling_seconds_count\{{{labels}\}} [1-9]", text, re.M)
    assert f'grpc_server_handling_seconds_bucket{{{labels},le="+Inf"}}' in text


def test_metrics_text_is_well_formed_prometheus_exposition(
    metrics_daemon: tuple[daemons.RunningDaemon, int],
) -> None:
    text = get(metrics_daemon[1], "/v1/metrics")[2]
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-z_]+="[^"]*",?)*\})? [0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line


@pytest.mark.parametrize(("path", "method", "status"), [
    ("/nope", "GET", 404),
    ("/v1/metrics", "POST", 405),
])  # fmt: skip
def test_metrics_endpoint_refuses_other_requests_and_keeps_serving(
    metrics_daemon: tuple[daemons.RunningDaemon, int], path: str, method: str, status: int
) -> None:
    d, port = metrics_daemon
    assert get(port, path, method)[0] == status
    assert get(port, "/v1/metrics")[0] == 200
    launch.assert_serving(d.address)


def test_garbage_on_the_metrics_port_does_not_hurt_the_daemon(
    metrics_daemon: tuple[daemons.RunningDaemon, int],
) -> None:
    d, port = metrics_daemon
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x00\xff garbage\r\n\r\n")
        s.recv(4096)
    assert get(port, "/v1/metrics")[0] == 200
    launch.assert_serving(d.address)
