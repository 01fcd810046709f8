"""Registry hosts: containerd's ``hosts.toml`` configuration.

For a reference's domain (``docker.io``, ``127.0.0.1:5000``) the hosts to
talk to are read from ``<hosts_dir>/<domain>/hosts.toml``, or from
``<hosts_dir>/_default/hosts.toml`` when the domain has no directory::

    server = "https://registry.example.com"      # the upstream; default: the domain
    ca = "/etc/ssl/upstream.pem"                 # applies to the server
    skip_verify = false

    [host."https://mirror.example.com"]
      capabilities = ["pull", "resolve"]         # default: pull, resolve, push
      ca = ["ca.pem"]                            # relative to this directory
      skip_verify = true
      client = [["client.cert", "client.key"]]   # or "client.pem" (cert and key)
      override_path = false                      # true: the URL's path is the API root
      [host."https://mirror.example.com".header]
        x-custom = "value"                       # or ["several", "values"]

Mirrors are tried in the order the file lists them, then the server.  A
directory with no ``hosts.toml`` may hold Docker-style certificate files
(``*.crt`` CAs, ``*.cert`` + ``*.key`` client pairs), used for the server.
With no configuration at all, the server is the domain itself over HTTPS
(HTTP with ``plain_http``), and ``docker.io`` is ``registry-1.docker.io``.
A ``hosts.toml`` is read only up to :data:`MAX_HOSTS_FILE` bytes.
"""

from __future__ import annotations

import functools
import ssl
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pycontainerd import errdefs

__all__ = [
    "ALL_CAPABILITIES",
    "CAPABILITY_PULL",
    "CAPABILITY_PUSH",
    "CAPABILITY_RESOLVE",
    "DOCKER_HUB_HOST",
    "MAX_HOSTS_FILE",
    "RegistryHost",
    "configure_hosts",
    "filter_hosts",
]

CAPABILITY_PULL = "pull"
CAPABILITY_RESOLVE = "resolve"
CAPABILITY_PUSH = "push"
ALL_CAPABILITIES = frozenset({CAPABILITY_PULL, CAPABILITY_RESOLVE, CAPABILITY_PUSH})
#: Where ``docker.io`` references are served from.
DOCKER_HUB_HOST = "registry-1.docker.io"
#: Largest ``hosts.toml`` read.
MAX_HOSTS_FILE = 1 << 20


@dataclass(frozen=True, slots=True)
class RegistryHost:
    """One registry endpoint and how to reach it."""

    scheme: str  # "https" or "http"
    host: str  # host[:port]
    path: str = "/v2"  # the API root
    capabilities: frozenset[str] = ALL_CAPABILITIES
    ca_files: tuple[str, ...] = ()
    client_certs: tuple[tuple[str, str], ...] = ()  # (cert, key); key may be ""
    skip_verify: bool = False
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context for this host's settings (None for plain HTTP)."""
        if self.scheme != "https":
            return None
        context = ssl.create_default_context()
        try:
            for ca in self.ca_files:
                context.load_verify_locations(cafile=ca)
            for cert, key in self.client_certs:
                context.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise errdefs.InvalidArgument(f"TLS files for {self.host}: {exc}") from exc
        if self.skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _default_server(domain: str, plain_http: bool) -> tuple[str, str]:
    host = DOCKER_HUB_HOST if domain == "docker.io" else domain
    return ("http" if plain_http else "https"), host


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise errdefs.InvalidArgument(f"{what} must be a string or a list of strings")


def _host_from(
    url: str,
    table: Mapping[str, Any],
    base: Path,
    *,
    plain_http: bool,
    skip_verify: bool,
    ca_files: tuple[str, ...],
    client_certs: tuple[tuple[str, str], ...],
) -> RegistryHost:
    if "://" not in url:
        url = ("http://" if plain_http else "https://") + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise errdefs.InvalidArgument(f"hosts.toml: invalid host {errdefs.q(url)}")
    path = parts.path.rstrip("/")
    if not table.get("override_path", False) and not path.endswith("/v2"):
        path += "/v2"
    caps_value = table.get("capabilities")
    capabilities = (
        frozenset(_strings(caps_value, "capabilities"))
        if caps_value is not None
        else ALL_CAPABILITIES
    )
    unknown = capabilities - ALL_CAPABILITIES
    if unknown:
        raise errdefs.InvalidArgument(f"hosts.toml: unknown capabilities {sorted(unknown)}")
    ca = [str(base / p) for p in _strings(table.get("ca", []), "ca")]
    clients: list[tuple[str, str]] = []
    client = table.get("client")
    if isinstance(client, str):
        clients.append((str(base / client), ""))
    elif isinstance(client, list):
        for entry in client:
            if isinstance(entry, str):
                clients.append((str(base / entry), ""))
            elif isinstance(entry, list) and len(entry) == 2:
                clients.append((str(base / entry[0]), str(base / entry[1])))
            else:
                raise errdefs.InvalidArgument("hosts.toml: client must be a path or [cert, key]")
    headers: dict[str, tuple[str, ...]] = {}
    header_table = table.get("header", {})
    if not isinstance(header_table, dict):
        raise errdefs.InvalidArgument("hosts.toml: header must be a table")
    for name, value in header_table.items():
        headers[name] = tuple(_strings(value, f"header {name}"))
    verify = table.get("skip_verify")
    return RegistryHost(
        scheme=parts.scheme,
        host=parts.netloc,
        path=path,
        capabilities=capabilities,
        ca_files=ca_files + tuple(ca),
        client_certs=client_certs + tuple(clients),
        skip_verify=bool(verify) if verify is not None else skip_verify,
        headers=headers,
    )


def _certificate_files(directory: Path) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Docker's certs.d layout: ``*.crt`` CAs, ``name.cert`` with ``name.key``."""
    cas = tuple(str(p) for p in sorted(directory.glob("*.crt")))
    pairs = tuple(
        (str(p), str(p.with_suffix(".key")))
        for p in sorted(directory.glob("*.cert"))
        if p.with_suffix(".key").exists()
    )
    return cas, pairs


def configure_hosts(
    domain: str,
    *,
    hosts_dir: str | Path | None = None,
    plain_http: bool = False,
    skip_verify: bool = False,
    ca_files: Sequence[str] = (),
    client_certs: Sequence[tuple[str, str]] = (),
) -> list[RegistryHost]:
    """The hosts for ``domain``, mirrors first, then the server.

    ``plain_http`` and ``skip_verify`` are the defaults for hosts the
    configuration does not say otherwise about (ctr's ``--plain-http`` and
    ``--skip-verify``).  ``ca_files`` and ``client_certs`` (ctr's
    ``--tlscacert``, ``--tlscert`` and ``--tlskey``) go to every host, before
    the ones its configuration names.
    """
    cas, clients = tuple(ca_files), tuple((cert, key) for cert, key in client_certs)
    scheme, server = _default_server(domain, plain_http)
    default = RegistryHost(
        scheme, server, ca_files=cas, client_certs=clients, skip_verify=skip_verify
    )
    if hosts_dir is None:
        return [default]
    root = Path(hosts_dir)
    directory = root / domain
    if not directory.is_dir():
        directory = root / "_default"
        if not directory.is_dir():
            return [default]
    config_file = directory / "hosts.toml"
    if not config_file.is_file():
        found_cas, pairs = _certificate_files(directory)
        return [
            RegistryHost(
                scheme,
                server,
                ca_files=cas + found_cas,
                client_certs=clients + pairs,
                skip_verify=skip_verify,
            )
        ]
    with config_file.open("rb") as f:
        raw = f.read(MAX_HOSTS_FILE + 1)
    if len(raw) > MAX_HOSTS_FILE:
        raise errdefs.InvalidArgument(f"{config_file}: larger than {MAX_HOSTS_FILE} bytes")
    try:
        config = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidArgument(f"{config_file}: {exc}") from exc
    host_from = functools.partial(
        _host_from,
        plain_http=plain_http,
        skip_verify=skip_verify,
        ca_files=cas,
        client_certs=clients,
    )
    hosts: list[RegistryHost] = []
    mirrors = config.get("host", {})
    if not isinstance(mirrors, dict):
        raise errdefs.InvalidArgument(f"{config_file}: host must be a table of tables")
    try:
        for url, table in mirrors.items():
            if not isinstance(table, dict):
                raise errdefs.InvalidArgument(f"host {errdefs.q(url)} must be a table")
            hosts.append(host_from(url, table, directory))
        server_url = config.get("server")
        if server_url is None:
            server_url = f"{scheme}://{server}"
        elif not isinstance(server_url, str):
            raise errdefs.InvalidArgument("server must be a string")
        hosts.append(host_from(server_url, config, directory))
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"{config_file}: {exc.message}") from exc
    return hosts


def filter_hosts(hosts: Sequence[RegistryHost], capability: str) -> list[RegistryHost]:
    """The hosts trusted with ``capability``, in order."""
    return [h for h in hosts if capability in h.capabilities]
