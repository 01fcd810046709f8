"""A CNI network: a task's network namespace wired by the plugins of a conflist.

``Network.load()`` reads the configuration containerd's ``ctr run --cni``
reads (the first file of ``/etc/cni/net.d`` in lexical order, through
go-cni's defaults).  ``setup(container_id, pid)``:

1. bind-mounts ``/proc/<pid>/ns/net`` onto ``<netns_dir>/pycontainerd-<id>``
   (so ``DEL`` still has a namespace after the task has died);
2. records the configuration in ``<cache_dir>/<id>.json`` (atomic: temp
   file, fsync, rename) before any plugin runs, so a crash midway still
   leaves what ``remove`` needs;
3. runs each plugin in order with ``CNI_COMMAND=ADD``: its object of the
   list on stdin plus ``name``, ``cniVersion``, the previous plugin's result
   as ``prevResult`` and, for the capabilities it declares, ``runtimeConfig``
   (``portMappings``); the environment has ``CNI_CONTAINERID``,
   ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_PATH`` and ``CNI_ARGS``;
4. caches the last result and returns it parsed.

A failed ``ADD`` is rolled back: ``DEL`` through every plugin in reverse,
the namespace unmounted, the cache removed; then the error is raised.
``remove(container_id)`` does the same for a set-up network, with the
cached configuration and (from CNI 0.4.0 on) the cached result as
``prevResult``; it does nothing when nothing is left, so it can be called
twice.  A plugin's ``DEL`` failing keeps the namespace and cache, so the
remove can be retried.

The container id given to the plugins is ``<namespace>-<id>`` when a
containerd namespace is given (ctr's ``FullID``), else the id; each part is
a validated identifier.

Bounds: each plugin run is killed after ``timeout`` seconds
(:data:`PLUGIN_TIMEOUT` by default) and may print at most
:data:`MAX_OUTPUT_SIZE` bytes; a cache file is read up to
:data:`MAX_CACHE_SIZE` bytes; configuration files are capped by
:mod:`pycontainerd.cni.config`.  Calls block; run them in a thread from
async code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycontainerd import errdefs, identifiers
from pycontainerd.cni import _netns, config
from pycontainerd.cni._invoke import find_plugin, run_plugin
from pycontainerd.cni.config import NetworkConfigList
from pycontainerd.cni.result import NetworkResult, decode_json_object, parse_result

__all__ = [
    "DEFAULT_BIN_DIRS",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_CONF_DIR",
    "DEFAULT_IFNAME",
    "DEFAULT_NETNS_DIR",
    "MAX_CACHE_SIZE",
    "MAX_OUTPUT_SIZE",
    "NETNS_PREFIX",
    "PLUGIN_TIMEOUT",
    "Network",
    "PortMapping",
]

log = logging.getLogger(__name__)

#: Where the network configuration is read from (as go-cni's default).
DEFAULT_CONF_DIR = "/etc/cni/net.d"
#: Where plugins are looked for, in order: Debian's containernetworking-plugins, then upstream's.
DEFAULT_BIN_DIRS: tuple[str, ...] = ("/usr/lib/cni", "/opt/cni/bin")
#: Where the named network namespaces are mounted (``ip netns`` lists them).
DEFAULT_NETNS_DIR = "/run/netns"
#: Where each container's configuration and result are kept for its DEL.
DEFAULT_CACHE_DIR = "/var/lib/cni/pycontainerd"
#: The interface made in the container.
DEFAULT_IFNAME = "eth0"
#: The prefix of a named network namespace: ``pycontainerd-<id>``.
NETNS_PREFIX = "pycontainerd-"

#: Seconds one plugin run may take before it is killed.
PLUGIN_TIMEOUT = 60.0
#: Bytes a plugin may print on stdout.
MAX_OUTPUT_SIZE = 1 << 20
#: Bytes of a cache file read (a configuration and a result, each capped at 1 MiB).
MAX_CACHE_SIZE = 4 << 20

_CACHE_KIND = "pycontainerd.cni.cache.v1"


@dataclass(frozen=True, slots=True)
class PortMapping:
    """A host port forwarded to the container (``portMappings`` capability)."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def to_json(self) -> dict[str, Any]:
        for port in (self.host_port, self.container_port):
            if not 0 < port < 65536:
                raise errdefs.InvalidArgument(f"invalid port {port}")
        if self.protocol not in ("tcp", "udp", "sctp"):
            raise errdefs.InvalidArgument(f"invalid protocol {errdefs.q(self.protocol)}")
        mapping: dict[str, Any] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            mapping["hostIP"] = self.host_ip
        return mapping


@dataclass(frozen=True, slots=True)
class _Cached:
    config: NetworkConfigList
    netns: str
    ifname: str
    runtime_config: Mapping[str, Any]
    args: tuple[tuple[str, str], ...]
    result: Mapping[str, Any] | None


class Network:
    """One CNI network (a conflist) and where its per-container state lives."""

    def __init__(
        self,
        network_config: NetworkConfigList,
        bin_dirs: Iterable[str] = DEFAULT_BIN_DIRS,
        *,
        netns_dir: str | os.PathLike[str] = DEFAULT_NETNS_DIR,
        cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
        ifname: str = DEFAULT_IFNAME,
        timeout: float = PLUGIN_TIMEOUT,
    ) -> None:
        if not ifname or "/" in ifname or len(ifname) > 15:
            raise errdefs.InvalidArgument(f"invalid interface name {errdefs.q(ifname)}")
        self.config = network_config
        self.bin_dirs = tuple(bin_dirs)
        self.netns_dir = Path(netns_dir)
        self.cache_dir = Path(cache_dir)
        self.ifname = ifname
        self.timeout = timeout

    @classmethod
    def load(
        cls,
        conf_dir: str | os.PathLike[str] = DEFAULT_CONF_DIR,
        bin_dirs: Iterable[str] = DEFAULT_BIN_DIRS,
        *,
        netns_dir: str | os.PathLike[str] = DEFAULT_NETNS_DIR,
        cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
        ifname: str = DEFAULT_IFNAME,
        timeout: float = PLUGIN_TIMEOUT,
    ) -> Network:
        """The network of the first configuration file in ``conf_dir`` (lexical order)."""
        return cls(
            config.load_dir(conf_dir),
            bin_dirs,
            netns_dir=netns_dir,
            cache_dir=cache_dir,
            ifname=ifname,
            timeout=timeout,
        )

    @property
    def name(self) -> str:
        return self.config.name

    # -- paths ------------------------------------------------------------

    @staticmethod
    def full_id(container_id: str, namespace: str | None = None) -> str:
        """The id the plugins see: ``<namespace>-<id>`` (ctr's FullID), validated."""
        identifiers.validate(container_id)
        if namespace is None:
            return container_id
        identifiers.validate(namespace)
        return f"{namespace}-{container_id}"

    def netns_path(self, container_id: str, *, namespace: str | None = None) -> Path:
        return self.netns_dir / f"{NETNS_PREFIX}{self.full_id(container_id, namespace)}"

    def _cache_path(self, full_id: str) -> Path:
        return self.cache_dir / f"{full_id}.json"

    # -- the operations ---------------------------------------------------

    def setup(
        self,
        container_id: str,
        pid: int,
        *,
        namespace: str | None = None,
        port_mappings: Sequence[PortMapping] = (),
        args: Mapping[str, str] | None = None,
    ) -> NetworkResult:
        """Give the network namespace of ``pid`` an interface on this network.

        ``args`` become ``CNI_ARGS`` (``K=V;K=V``); ``port_mappings`` go to
        the plugins that declare the ``portMappings`` capability.
        """
        full_id = self.full_id(container_id, namespace)
        netns = self.netns_dir / f"{NETNS_PREFIX}{full_id}"
        cni_args = _cni_args(args or {})
        runtime_config: dict[str, Any] = {}
        if port_mappings:
            runtime_config["portMappings"] = [m.to_json() for m in port_mappings]
        _netns.create(netns, pid)
        state = _Cached(
            config=self.config,
            netns=str(netns),
            ifname=self.ifname,
            runtime_config=runtime_config,
            args=cni_args,
            result=None,
        )
        result: dict[str, Any] | None = None
        try:
            self._write_cache(full_id, state)
            for plugin in self.config.plugins:
                output = self._exec(plugin, "ADD", full_id, state, result)
                if output.strip():
                    result = decode_json_object(output, f"cni plugin {plugin.type} (ADD)")
            if result is None:
                raise errdefs.InvalidArgument(
                    f"network {errdefs.q(self.name)}: the plugins returned no result"
                )
            parsed = parse_result(result, netns=str(netns))
            self._write_cache(full_id, _replace_result(state, result))
        except BaseException:
            try:
                self._delete(full_id, _replace_result(state, result), netns)
            except Exception:
                log.exception("cni: rolling back the network of %s", full_id)
            raise
        log.debug("cni: %s on network %s: %s", full_id, self.name, [str(ip) for ip in parsed.ips])
        return parsed

    def remove(self, container_id: str, *, namespace: str | None = None) -> None:
        """Undo :meth:`setup`: every plugin's DEL in reverse, the namespace and cache gone.

        Nothing to do (and no error) when the container has no network here.
        """
        full_id = self.full_id(container_id, namespace)
        netns = self.netns_dir / f"{NETNS_PREFIX}{full_id}"
        state = self._read_cache(full_id)
        if state is None:
            if not netns.exists():
                return
            state = _Cached(self.config, str(netns), self.ifname, {}, (), None)
        self._delete(full_id, state, netns)

    def check(self, container_id: str, *, namespace: str | None = None) -> None:
        """Run every plugin's CHECK (CNI 0.4.0 and later, unless ``disableCheck``)."""
        full_id = self.full_id(container_id, namespace)
        state = self._read_cache(full_id)
        if state is None or state.result is None:
            raise errdefs.NotFound(
                f"container {errdefs.q(full_id)} on network {errdefs.q(self.name)}: not found"
            )
        if state.config.version < (0, 4, 0) or state.config.disable_check:
            return
        for plugin in state.config.plugins:
            self._exec(plugin, "CHECK", full_id, state, state.result)

    # -- internals --------------------------------------------------------

    def _delete(self, full_id: str, state: _Cached, netns: Path) -> None:
        prev = state.result if state.config.version >= (0, 4, 0) else None
        for plugin in reversed(state.config.plugins):
            self._exec(plugin, "DEL", full_id, state, prev)
        _netns.remove(netns)
        with contextlib.suppress(FileNotFoundError):
            self._cache_path(full_id).unlink()

    def _exec(
        self,
        plugin: config.PluginConfig,
        command: str,
        full_id: str,
        state: _Cached,
        prev_result: Mapping[str, Any] | None,
    ) -> bytes:
        path = find_plugin(plugin.type, self.bin_dirs)
        conf = dict(plugin.raw)
        conf["name"] = state.config.name
        conf["cniVersion"] = state.config.cni_version
        if prev_result is not None:
            conf["prevResult"] = prev_result
        runtime = {k: v for k, v in state.runtime_config.items() if k in plugin.capabilities}
        if runtime:
            conf["runtimeConfig"] = runtime
        netns = Path(state.netns)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update(
            CNI_COMMAND=command,
            CNI_CONTAINERID=full_id,
            # A DEL after the namespace went (a crash between unmount and
            # the cache's removal) passes none, as the spec allows.
            CNI_NETNS=str(netns) if command == "ADD" or _netns.is_mounted(netns) else "",
            CNI_IFNAME=state.ifname,
            CNI_PATH=os.pathsep.join(self.bin_dirs),
            CNI_ARGS=";".join(f"{k}={v}" for k, v in state.args),
        )
        return run_plugin(
            path,
            kind=plugin.type,
            command=command,
            env=env,
            stdin=json.dumps(conf).encode(),
            timeout=self.timeout,
            max_output=MAX_OUTPUT_SIZE,
        )

    def _write_cache(self, full_id: str, state: _Cached) -> None:
        document = {
            "kind": _CACHE_KIND,
            "containerId": full_id,
            "ifName": state.ifname,
            "netns": state.netns,
            "config": dict(state.config.raw),
            "runtimeConfig": dict(state.runtime_config),
            "args": [list(pair) for pair in state.args],
            "result": state.result,
        }
        _atomic_write(self._cache_path(full_id), json.dumps(document).encode())

    def _read_cache(self, full_id: str) -> _Cached | None:
        path = self._cache_path(full_id)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_CACHE_SIZE + 1)
        except FileNotFoundError:
            return None
        try:
            if len(data) > MAX_CACHE_SIZE:
                raise errdefs.InvalidArgument(f"larger than {MAX_CACHE_SIZE} bytes")
            document = decode_json_object(data, str(path))
            if document.get("kind") != _CACHE_KIND:
                raise errdefs.InvalidArgument(f"not a {_CACHE_KIND} document")
            network_config = config.parse_conflist(json.dumps(document["config"]))
            result = document.get("result")
            return _Cached(
                config=network_config,
                netns=str(document["netns"]),
                ifname=str(document["ifName"]),
                runtime_config=dict(document.get("runtimeConfig") or {}),
                args=tuple((str(k), str(v)) for k, v in document.get("args") or ()),
                result=result if isinstance(result, dict) else None,
            )
        except (errdefs.ContainerdError, KeyError, TypeError, ValueError) as exc:
            # The cache is ours to clean up: a damaged one must not keep the
            # container's network from being removed with today's config.
            log.warning("cni: ignoring damaged cache %s: %s", path, exc)
            return None


def _replace_result(state: _Cached, result: Mapping[str, Any] | None) -> _Cached:
    return _Cached(
        state.config, state.netns, state.ifname, state.runtime_config, state.args, result
    )


def _cni_args(args: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``CNI_ARGS`` pairs, checked: ``;`` separates pairs and ``=`` a key from its value."""
    for key, value in args.items():
        if not key or any(c in key for c in ";=\0"):
            raise errdefs.InvalidArgument(f"invalid CNI_ARGS key {errdefs.q(key)}")
        if any(c in value for c in ";\0"):
            raise errdefs.InvalidArgument(f"invalid CNI_ARGS value {errdefs.q(value)}")
    return tuple(args.items())


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: temp file, fsync, rename, fsync the directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
