"""CNI network configuration: a conflist (or a single conf) read and checked.

A network configuration list is the JSON document the CNI spec defines:
``{"cniVersion", "name", "disableCheck"?, "plugins": [{"type", ...}, ...]}``.
A single network configuration (a ``.conf`` file: one plugin's object with a
``name`` and a ``cniVersion``) becomes a list of that one plugin, as libcni
does.  :func:`load_dir` picks the file containerd's ``ctr run --cni`` picks:
the first ``*.conf``, ``*.conflist`` or ``*.json`` in lexical order; an
invalid first file is an error, never skipped.

Bounds: a configuration file is read up to :data:`MAX_CONFIG_SIZE` bytes, a
list holds at most :data:`MAX_PLUGINS` plugins.  Names are checked before
they become a path: a plugin ``type`` must be a bare file name, a network
``name`` matches the spec's pattern.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycontainerd import errdefs

__all__ = [
    "CONFIG_EXTENSIONS",
    "MAX_CONFIG_SIZE",
    "MAX_PLUGINS",
    "NetworkConfigList",
    "PluginConfig",
    "load_dir",
    "load_file",
    "parse_conf",
    "parse_conflist",
    "parse_version",
]

#: Largest configuration file read, in bytes.
MAX_CONFIG_SIZE = 1 << 20
#: Most plugins a list may chain.
MAX_PLUGINS = 32
#: The file names libcni reads from a configuration directory.
CONFIG_EXTENSIONS = (".conf", ".conflist", ".json")

# The spec's network name: an alphanumeric, then alphanumerics, '_', '.', '-'.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def parse_version(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` as ``(1, 0, 0)``; anything else is ``InvalidArgument``."""
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise errdefs.InvalidArgument(f"invalid CNI version {errdefs.q(version)}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """One plugin of a list: its ``type`` (the binary's name) and its whole object."""

    type: str
    raw: Mapping[str, Any] = field(compare=False)

    @property
    def capabilities(self) -> frozenset[str]:
        """The runtime capabilities the plugin asks for (``{"portMappings": true}``)."""
        caps = self.raw.get("capabilities")
        if not isinstance(caps, dict):
            return frozenset()
        return frozenset(name for name, enabled in caps.items() if enabled is True)


@dataclass(frozen=True, slots=True)
class NetworkConfigList:
    """A network: its name, CNI version and the plugins run in order."""

    name: str
    cni_version: str
    plugins: tuple[PluginConfig, ...]
    disable_check: bool = False
    #: The list as a JSON object (a single conf wrapped as a list), for the cache.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: Where it was read from ("" when parsed from bytes).
    source: str = ""

    @property
    def version(self) -> tuple[int, int, int]:
        return parse_version(self.cni_version)


def _decode(data: bytes | str, what: str) -> dict[str, Any]:
    if len(data) > MAX_CONFIG_SIZE:
        raise errdefs.InvalidArgument(f"{what}: larger than {MAX_CONFIG_SIZE} bytes")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidArgument(f"{what}: invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise errdefs.InvalidArgument(f"{what}: not a JSON object")
    return value


def _plugin(value: object, what: str) -> PluginConfig:
    if not isinstance(value, dict):
        raise errdefs.InvalidArgument(f"{what}: a plugin is not a JSON object")
    kind = value.get("type")
    if not isinstance(kind, str) or not kind:
        raise errdefs.InvalidArgument(f"{what}: a plugin has no type")
    # The type names a binary looked up in the plugin directories: a path
    # would run whatever it points at.
    if "/" in kind or "\0" in kind or kind in (".", ".."):
        raise errdefs.InvalidArgument(f"{what}: invalid plugin type {errdefs.q(kind)}")
    return PluginConfig(type=kind, raw=value)


def _header(value: Mapping[str, Any], what: str) -> tuple[str, str]:
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise errdefs.InvalidArgument(f"{what}: no network name")
    if _NAME_RE.fullmatch(name) is None:
        raise errdefs.InvalidArgument(f"{what}: invalid network name {errdefs.q(name)}")
    version = value.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise errdefs.InvalidArgument(f"{what}: no cniVersion")
    parse_version(version)
    return name, version


def parse_conflist(data: bytes | str, *, source: str = "") -> NetworkConfigList:
    """A ``.conflist`` document, checked."""
    what = source or "network configuration list"
    value = _decode(data, what)
    name, version = _header(value, what)
    plugins = value.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise errdefs.InvalidArgument(f"{what}: no plugins")
    if len(plugins) > MAX_PLUGINS:
        raise errdefs.InvalidArgument(f"{what}: more than {MAX_PLUGINS} plugins")
    disable_check = value.get("disableCheck", False)
    if not isinstance(disable_check, bool):
        raise errdefs.InvalidArgument(f"{what}: disableCheck is not a boolean")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=tuple(_plugin(plugin, what) for plugin in plugins),
        disable_check=disable_check,
        raw=value,
        source=source,
    )


def parse_conf(data: bytes | str, *, source: str = "") -> NetworkConfigList:
    """A single plugin's ``.conf`` document, as a list of that plugin."""
    what = source or "network configuration"
    value = _decode(data, what)
    name, version = _header(value, what)
    plugin = _plugin(value, what)
    raw = {"cniVersion": version, "name": name, "plugins": [value]}
    return NetworkConfigList(
        name=name, cni_version=version, plugins=(plugin,), raw=raw, source=source
    )


def load_file(path: str | os.PathLike[str]) -> NetworkConfigList:
    """The configuration in ``path`` (a list when it ends in ``.conflist``)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_SIZE + 1)
    except FileNotFoundError as exc:
        raise errdefs.NotFound(f"CNI configuration {errdefs.q(str(path))}: not found") from exc
    except OSError as exc:
        raise errdefs.InvalidArgument(f"CNI configuration {errdefs.q(str(path))}: {exc}") from exc
    if path.suffix == ".conflist":
        return parse_conflist(data, source=str(path))
    return parse_conf(data, source=str(path))


def load_dir(conf_dir: str | os.PathLike[str]) -> NetworkConfigList:
    """The first configuration of ``conf_dir`` in lexical order, as go-cni's default."""
    directory = Path(conf_dir)
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(directory)
            if entry.name.endswith(CONFIG_EXTENSIONS) and entry.is_file()
        )
    except FileNotFoundError as exc:
        raise errdefs.NotFound(
            f"CNI configuration directory {errdefs.q(str(directory))}: not found"
        ) from exc
    except OSError as exc:
        raise errdefs.InvalidArgument(
            f"CNI configuration directory {errdefs.q(str(directory))}: {exc}"
        ) from exc
    if not names:
        raise errdefs.NotFound(
            f"no network config found in {directory}: cni plugin not initialized"
        )
    return load_file(directory / names[0])
