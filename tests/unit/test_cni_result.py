"""CNI results (every spec shape) and plugin errors as typed values."""

from __future__ import annotations

import ipaddress
import json

import pytest

from pycontainerd import cni, errdefs
from pycontainerd.cni.result import plugin_error

pytestmark = pytest.mark.unit

RESULT_1_0 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "00:11:22:33:44:55"},
        {"name": "eth0", "mac": "00:11:22:33:44:66", "sandbox": "/run/netns/x"},
    ],
    "ips": [
        {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
        {"address": "fd00::5/64", "interface": 1},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "10.9.0.0/16"}],
    "dns": {"nameservers": ["10.1.0.1"], "domain": "example", "search": ["a", "b"]},
}


def test_a_1_0_0_result_parses() -> None:
    result = cni.parse_result(RESULT_1_0, netns="/run/netns/x")
    assert result.cni_version == "1.0.0"
    assert result.ips == (
        ipaddress.IPv4Interface("10.1.0.5/24"),
        ipaddress.IPv6Interface("fd00::5/64"),
    )
    assert result.gateways == (ipaddress.IPv4Address("10.1.0.1"), None)
    assert [i.name for i in result.interfaces] == ["cni0", "eth0"]
    assert result.interfaces[1] == cni.Interface("eth0", "00:11:22:33:44:66", "/run/netns/x")
    assert result.routes == (
        cni.Route(ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv4Address("10.1.0.1")),
        cni.Route(ipaddress.IPv4Network("10.9.0.0/16")),
    )
    assert result.dns == cni.DNS(nameservers=("10.1.0.1",), domain="example", search=("a", "b"))
    assert result.netns == "/run/netns/x"
    assert result.raw == RESULT_1_0


def test_a_0_4_0_result_with_ip_versions_parses() -> None:
    doc = {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"version": "4", "address": "10.2.0.7/16", "interface": 0}],
    }
    assert cni.parse_result(doc).ips == (ipaddress.IPv4Interface("10.2.0.7/16"),)


def test_a_0_2_0_result_parses() -> None:
    doc = {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.3.0.2/24", "gateway": "10.3.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd01::2/64"},
    }
    result = cni.parse_result(doc)
    assert [str(ip) for ip in result.ips] == ["10.3.0.2/24", "fd01::2/64"]
    assert result.gateways[0] == ipaddress.IPv4Address("10.3.0.1")
    assert result.interfaces == ()


@pytest.mark.parametrize(
    "doc",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.300/24"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.3/24", "interface": 2}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.3/24", "interface": True}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.3/24", "gateway": "nope"}]},
        {"cniVersion": "1.0.0", "ips": "10.1.0.3/24"},
        {"cniVersion": "1.0.0", "interfaces": [{"name": 5}]},
        {"cniVersion": "1.0.0", "routes": [{"dst": "default"}]},
        {"cniVersion": "1.0.0", "dns": {"nameservers": "10.0.0.1"}},
        {"cniVersion": 1},
    ],
)
def test_a_malformed_result_is_invalid_argument(doc: dict[str, object]) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        cni.parse_result(doc)


def _error(code: int, msg: str = "boom", details: str = "") -> bytes:
    return json.dumps(
        {"cniVersion": "1.0.0", "code": code, "msg": msg, "details": details}
    ).encode()


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (1, errdefs.FailedPrecondition),
        (2, errdefs.InvalidArgument),
        (3, errdefs.NotFound),
        (4, errdefs.InvalidArgument),
        (5, errdefs.Unknown),
        (6, errdefs.InvalidArgument),
        (7, errdefs.InvalidArgument),
        (11, errdefs.Unavailable),
        (50, errdefs.Unavailable),
        (999, errdefs.Unknown),
    ],
)
def test_error_json_code_picks_the_class(code: int, cls: type[errdefs.ContainerdError]) -> None:
    exc = plugin_error("bridge", "ADD", 1, _error(code), b"")
    assert type(exc) is cls
    assert str(exc) == f"cni plugin bridge failed (ADD): boom (code {code})"


def test_error_json_details_join_the_message() -> None:
    exc = plugin_error("host-local", "ADD", 1, _error(7, "bad subnet", "10.0.0.0/33"), b"x")
    assert isinstance(exc, errdefs.InvalidArgument)
    assert str(exc) == "cni plugin host-local failed (ADD): bad subnet; 10.0.0.0/33 (code 7)"


def test_a_failure_without_error_json_says_its_stderr() -> None:
    exc = plugin_error("bridge", "DEL", 2, b"", b"panic: oops\n")
    assert type(exc) is errdefs.Unknown
    assert str(exc) == "cni plugin bridge failed (DEL): exit status 2: panic: oops"
    exc = plugin_error("bridge", "DEL", 2, b"not json", b"")
    assert str(exc) == "cni plugin bridge failed (DEL): exit status 2: not json"
