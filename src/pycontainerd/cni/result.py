"""What CNI plugins print: results and errors, parsed into typed values.

A result (``ADD``'s output) comes in the spec's two shapes: from 0.3.0 on,
``{"cniVersion", "interfaces": [{"name", "mac", "sandbox"}], "ips":
[{"address": "10.1.0.5/24", "gateway", "interface": INDEX}], "routes":
[{"dst", "gw"}], "dns": {...}}`` (0.3.x and 0.4.0 add a ``version`` to each
ip, 1.0.0 drops it); before 0.3.0, ``{"ip4": {"ip", "gateway", "routes"},
"ip6": {...}, "dns"}``.  An error is ``{"cniVersion", "code", "msg",
"details"}`` on stdout with a non-zero exit; its code picks the errdefs
class (:func:`plugin_error`).

Plugin output is size-capped before it gets here (``MAX_OUTPUT_SIZE`` of
:mod:`pycontainerd.cni.network`), so these parsers see bounded input.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycontainerd import errdefs

__all__ = [
    "DNS",
    "Interface",
    "NetworkResult",
    "Route",
    "decode_json_object",
    "parse_result",
    "plugin_error",
]

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Interface:
    """An interface a plugin made or configured; ``sandbox`` is the netns
    path for one inside the container, empty for one on the host."""

    name: str
    mac: str = ""
    sandbox: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None


@dataclass(frozen=True, slots=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkResult:
    """The result of a network's ``ADD``: the last plugin's output."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    #: Each address with its prefix (``10.1.0.5/24``).
    ips: tuple[IPInterface, ...] = ()
    #: The gateway of each entry of ``ips`` (``None`` where there is none).
    gateways: tuple[IPAddress | None, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = DNS()
    #: The network namespace file the container's interfaces live in.
    netns: str = ""
    #: The result as the plugin printed it (what the next plugin gets as ``prevResult``).
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


def decode_json_object(data: bytes, what: str) -> dict[str, Any]:
    """``data`` as a JSON object, or ``InvalidArgument`` naming ``what``."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidArgument(f"{what}: invalid JSON output: {exc}") from exc
    if not isinstance(value, dict):
        raise errdefs.InvalidArgument(f"{what}: output is not a JSON object")
    return value


def _str(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errdefs.InvalidArgument(f"{what}: not a string")
    return value


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise errdefs.InvalidArgument(f"{what}: not a list")
    return value


def _object(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errdefs.InvalidArgument(f"{what}: not an object")
    return value


def _interface_address(value: object, what: str) -> IPInterface:
    text = _str(value, what)
    try:
        return ipaddress.ip_interface(text)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"{what}: invalid address {errdefs.q(text)}") from exc


def _address(value: object, what: str) -> IPAddress | None:
    text = _str(value, what)
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"{what}: invalid address {errdefs.q(text)}") from exc


def _route(value: object, what: str) -> Route:
    obj = _object(value, what)
    dst = _str(obj.get("dst"), f"{what}.dst")
    try:
        network = ipaddress.ip_network(dst, strict=False)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"{what}: invalid destination {errdefs.q(dst)}") from exc
    return Route(dst=network, gw=_address(obj.get("gw"), f"{what}.gw"))


def _dns(value: object, what: str) -> DNS:
    obj = _object(value, what)

    def strings(key: str) -> tuple[str, ...]:
        return tuple(_str(item, f"{what}.{key}") for item in _list(obj.get(key), f"{what}.{key}"))

    return DNS(
        nameservers=strings("nameservers"),
        domain=_str(obj.get("domain"), f"{what}.domain"),
        search=strings("search"),
        options=strings("options"),
    )


def parse_result(value: Mapping[str, Any], *, netns: str = "") -> NetworkResult:
    """A plugin's ``ADD`` result (any spec version) as a :class:`NetworkResult`."""
    version = _str(value.get("cniVersion"), "result cniVersion")
    interfaces: list[Interface] = []
    ips: list[IPInterface] = []
    gateways: list[IPAddress | None] = []
    routes: list[Route] = []
    if "ip4" in value or "ip6" in value:  # the 0.1.0 and 0.2.0 shape
        for key in ("ip4", "ip6"):
            if value.get(key) is None:
                continue
            config = _object(value[key], f"result {key}")
            ips.append(_interface_address(config.get("ip"), f"result {key}.ip"))
            gateways.append(_address(config.get("gateway"), f"result {key}.gateway"))
            routes += (
                _route(r, f"result {key}.routes")
                for r in _list(config.get("routes"), f"result {key}.routes")
            )
    else:
        for index, item in enumerate(_list(value.get("interfaces"), "result interfaces")):
            obj = _object(item, f"result interfaces[{index}]")
            interfaces.append(
                Interface(
                    name=_str(obj.get("name"), f"result interfaces[{index}].name"),
                    mac=_str(obj.get("mac"), f"result interfaces[{index}].mac"),
                    sandbox=_str(obj.get("sandbox"), f"result interfaces[{index}].sandbox"),
                )
            )
        for index, item in enumerate(_list(value.get("ips"), "result ips")):
            what = f"result ips[{index}]"
            obj = _object(item, what)
            ips.append(_interface_address(obj.get("address"), f"{what}.address"))
            gateways.append(_address(obj.get("gateway"), f"{what}.gateway"))
            link = obj.get("interface")
            if link is not None and (
                not isinstance(link, int)
                or isinstance(link, bool)
                or not 0 <= link < len(interfaces)
            ):
                raise errdefs.InvalidArgument(f"{what}.interface: no interface {link!r}")
        routes += (_route(r, "result routes") for r in _list(value.get("routes"), "result routes"))
    return NetworkResult(
        cni_version=version,
        interfaces=tuple(interfaces),
        ips=tuple(ips),
        gateways=tuple(gateways),
        routes=tuple(routes),
        dns=_dns(value.get("dns"), "result dns"),
        netns=netns,
        raw=value,
    )


#: The spec's well-known error codes and the errdefs class each becomes.
#: 1 incompatible CNI version, 2 unsupported field, 3 container unknown,
#: 4 invalid environment variables, 5 I/O failure, 6 decoding failure,
#: 7 invalid network config, 11 try again later; 50 and 51 (STATUS, 1.1):
#: the plugin is not available / has limited connectivity.  Others (100 and
#: up are the plugin's own) are Unknown.
_CODES: dict[int, type[errdefs.ContainerdError]] = {
    1: errdefs.FailedPrecondition,
    2: errdefs.InvalidArgument,
    3: errdefs.NotFound,
    4: errdefs.InvalidArgument,
    5: errdefs.Unknown,
    6: errdefs.InvalidArgument,
    7: errdefs.InvalidArgument,
    11: errdefs.Unavailable,
    50: errdefs.Unavailable,
    51: errdefs.Unavailable,
}


def plugin_error(
    plugin: str, command: str, exit_code: int, stdout: bytes, stderr: bytes
) -> errdefs.ContainerdError:
    """The typed error for a plugin that exited ``exit_code`` (non-zero).

    The spec's error object on stdout gives the class and message; without
    one, the message is the tail of stderr (or stdout) and the class Unknown.
    """
    what = f"cni plugin {plugin} failed ({command})"
    value: object = None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        value = json.loads(stdout)
    if isinstance(value, dict) and isinstance(value.get("code"), int):
        code: int = value["code"]
        msg = value.get("msg")
        details = value.get("details")
        text = msg if isinstance(msg, str) and msg else "no message"
        if isinstance(details, str) and details:
            text = f"{text}; {details}"
        return _CODES.get(code, errdefs.Unknown)(f"{what}: {text} (code {code})")
    tail = (stderr or stdout).decode("utf-8", "replace").strip()[-1000:]
    return errdefs.Unknown(f"{what}: exit status {exit_code}" + (f": {tail}" if tail else ""))
