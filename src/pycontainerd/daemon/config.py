"""The daemon's configuration: containerd's version-2 ``config.toml``.

The file is read with ``tomllib`` into frozen dataclasses; every problem
(bad TOML, a wrong type, an unknown version) raises :class:`ConfigError`
naming the file and the problem in one line.  ``dump()`` writes the same
structure back as TOML, so ``pycontainerd config default`` prints a file
that reads back to an identical config.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_ROOT",
    "DEFAULT_STATE",
    "Config",
    "ConfigError",
    "DebugConfig",
    "GRPCConfig",
    "MetricsConfig",
    "ProxyPlugin",
    "TTRPCConfig",
    "dump",
    "load",
    "parse",
]

DEFAULT_ROOT = "/var/lib/pycontainerd"
DEFAULT_STATE = "/run/pycontainerd"
DEFAULT_ADDRESS = "/run/pycontainerd/pycontainerd.sock"
DEFAULT_CONFIG_PATH = "/etc/pycontainerd/config.toml"
DEFAULT_MAX_MESSAGE_SIZE = 16 << 20
DEFAULT_TIMEOUTS = {
    "io.containerd.timeout.shim.cleanup": "5s",
    "io.containerd.timeout.shim.load": "5s",
    "io.containerd.timeout.shim.shutdown": "3s",
    "io.containerd.timeout.task.state": "2s",
}


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is one line for the operator."""


@dataclass(frozen=True, slots=True)
class GRPCConfig:
    address: str = DEFAULT_ADDRESS
    tcp_address: str = ""
    tcp_tls_ca: str = ""
    tcp_tls_cert: str = ""
    tcp_tls_key: str = ""
    uid: int = 0
    gid: int = 0
    max_recv_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_send_message_size: int = DEFAULT_MAX_MESSAGE_SIZE


@dataclass(frozen=True, slots=True)
class TTRPCConfig:
    address: str = ""
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True)
class DebugConfig:
    address: str = ""
    uid: int = 0
    gid: int = 0
    level: str = ""
    format: str = ""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    address: str = ""
    grpc_histogram: bool = False


@dataclass(frozen=True, slots=True)
class ProxyPlugin:
    """An external gRPC server providing a plugin (``[proxy_plugins.NAME]``)."""

    type: str = ""
    address: str = ""
    platform: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    version: int = 2
    root: str = DEFAULT_ROOT
    state: str = DEFAULT_STATE
    temp: str = ""
    plugin_dir: str = ""
    disabled_plugins: tuple[str, ...] = ()
    required_plugins: tuple[str, ...] = ()
    oom_score: int = 0
    imports: tuple[str, ...] = ()
    grpc: GRPCConfig = field(default_factory=GRPCConfig)
    ttrpc: TTRPCConfig = field(default_factory=TTRPCConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    timeouts: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    #: Raw ``[plugins."<uri>"]`` sections; each plugin decodes its own.
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    proxy_plugins: Mapping[str, ProxyPlugin] = field(default_factory=dict)

    def plugin_section(self, uri: str) -> Mapping[str, Any]:
        return self.plugins.get(uri, {})


# --- reading -----------------------------------------------------------------


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a TOML value against a dataclass field type, converting lists to tuples."""
    origin = getattr(hint, "__origin__", None)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected a boolean, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return decode(hint, value, where)
    return value


def decode(cls: type[Any], data: Mapping[str, Any], where: str = "") -> Any:
    """Build a dataclass from a TOML table; unknown keys are an error."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"{path}: unknown setting")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def parse(text: str, source: str = "<config>") -> Config:
    """Parse config text; errors name ``source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        return _from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _from_mapping(data: dict[str, Any]) -> Config:
    version = data.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version not in (1, 2):
        raise ConfigError(f"version: unsupported config version {version!r} (want 2)")
    plugins = data.pop("plugins", {})
    proxies = data.pop("proxy_plugins", {})
    timeouts = data.pop("timeouts", {})
    for unused in ("cgroup", "stream_processors"):
        data.pop(unused, None)
    if not isinstance(plugins, dict) or not all(isinstance(v, dict) for v in plugins.values()):
        raise ConfigError("plugins: expected a table of tables")
    if not isinstance(proxies, dict):
        raise ConfigError("proxy_plugins: expected a table of tables")
    if not isinstance(timeouts, dict) or not all(isinstance(v, str) for v in timeouts.values()):
        raise ConfigError("timeouts: expected a table of duration strings")
    base: Config = decode(Config, data)
    proxy_plugins = {}
    for name, table in proxies.items():
        if not isinstance(table, dict):
            raise ConfigError(f"proxy_plugins.{name}: expected a table")
        proxy = decode(ProxyPlugin, table, f"proxy_plugins.{name}")
        if not proxy.type or not proxy.address:
            raise ConfigError(f"proxy_plugins.{name}: type and address are required")
        proxy_plugins[name] = proxy
    return dataclasses.replace(
        base,
        version=2,
        plugins={k: dict(v) for k, v in plugins.items()},
        proxy_plugins=proxy_plugins,
        timeouts=dict(timeouts),
    )


def load(path: str | Path, *, missing_ok: bool = True) -> Config:
    """Read a config file; a missing file means the defaults, as in containerd."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        if missing_ok:
            return Config()
        raise ConfigError(f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    return parse(text, str(p))


# --- writing -----------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _string(k)


def _string(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{out}"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ConfigError(f"cannot write {v!r} as TOML")
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} as TOML")


def _table(lines: list[str], header: str, data: Mapping[str, Any], indent: str) -> None:
    lines.append("")
    lines.append(f"{indent}[{header}]")
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    for k, v in scalars.items():
        lines.append(f"{indent}  {_key(k)} = {_value(v)}")
    for k, v in tables.items():
        _table(lines, f"{header}.{_key(k)}", v, indent + "  ")


def dump(config: Config, plugin_defaults: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Render a config as TOML; ``plugin_defaults`` fill sections the config lacks."""
    lines: list[str] = []
    top = dataclasses.asdict(config)
    sections = ("grpc", "ttrpc", "debug", "metrics", "timeouts", "plugins", "proxy_plugins")
    for f in dataclasses.fields(Config):
        if f.name not in sections:
            lines.append(f"{f.name} = {_value(top[f.name])}")
    for name in ("grpc", "ttrpc", "debug", "metrics", "timeouts"):
        _table(lines, name, top[name], "")
    plugins: dict[str, Mapping[str, Any]] = dict(plugin_defaults or {})
    plugins.update(config.plugins)
    _table(lines, "plugins", {k: plugins[k] for k in sorted(plugins)}, "")
    proxies = {k: dataclasses.asdict(v) for k, v in config.proxy_plugins.items()}
    _table(lines, "proxy_plugins", proxies, "")
    return "\n".join(lines) + "\n"
