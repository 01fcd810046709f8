"""The plugin registry: how the daemon's parts declare themselves and start.

Like containerd, every part of the daemon (a store, a snapshotter, a gRPC
service) is a plugin with a type and an id (``io.containerd.grpc.v1`` /
``namespaces``), a list of plugin types it needs, an optional config section
and an init function.  The daemon initialises them in dependency order; a
plugin that cannot run on this host raises :class:`SkipPlugin` and is
recorded as skipped, one that fails is recorded with its error, and neither
stops the daemon unless the plugin is listed in ``required_plugins``.

This module is a shared primitive (core stores register themselves here), so
it sits beside ``errdefs`` rather than inside ``daemon/``, which only drives it.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycontainerd import errdefs

__all__ = [
    "InitContext",
    "Plugin",
    "PluginSet",
    "PluginType",
    "Registration",
    "SkipPlugin",
    "register",
    "registrations",
]


class PluginType(enum.StrEnum):
    """containerd's plugin type strings."""

    CONTENT = "io.containerd.content.v1"
    SNAPSHOT = "io.containerd.snapshotter.v1"
    METADATA = "io.containerd.metadata.v1"
    GC = "io.containerd.gc.v1"
    DIFF = "io.containerd.differ.v1"
    EVENT = "io.containerd.event.v1"
    LEASE = "io.containerd.lease.v1"
    SERVICE = "io.containerd.service.v1"
    GRPC = "io.containerd.grpc.v1"
    TTRPC = "io.containerd.ttrpc.v1"
    RUNTIME_V2 = "io.containerd.runtime.v2"
    INTERNAL = "io.containerd.internal.v1"
    STREAMING = "io.containerd.streaming.v1"
    TRANSFER = "io.containerd.transfer.v1"


class SkipPlugin(Exception):
    """Raised by an init function when the plugin cannot run on this host.

    The message is recorded with the suffix ``skip plugin``, which is what
    ``ctr plugins ls`` looks for to print ``skip`` rather than ``error``.
    """


InitFunc = Callable[["InitContext"], Any]


@dataclass(frozen=True, slots=True)
class Registration:
    """What a plugin declares about itself before anything runs."""

    # (``type`` shadows the builtin inside this class body; config's type is
    # spelled ``builtins.type`` below.)

    type: str
    id: str
    init: InitFunc
    requires: tuple[str, ...] = ()
    #: A dataclass type holding the plugin's settings; its defaults are what
    #: ``pycontainerd config default`` prints under ``[plugins."<uri>"]``.
    config: builtins.type[Any] | None = None

    @property
    def uri(self) -> str:
        return f"{self.type}.{self.id}"


@dataclass(slots=True)
class Plugin:
    """One initialised (or failed, or skipped) plugin, as introspection shows it."""

    registration: Registration
    instance: Any = None
    error: BaseException | None = None
    exports: dict[str, str] = field(default_factory=dict)
    platforms: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        return isinstance(self.error, SkipPlugin)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class InitContext:
    """Everything a plugin's init function may use."""

    registration: Registration
    root: Path
    state: Path
    config: Any
    plugins: PluginSet
    grpc_address: str = ""
    ttrpc_address: str = ""
    #: The daemon's event exchange (``pycontainerd.events.Exchange``).
    events: Any = None
    exports: dict[str, str] = field(default_factory=dict)
    platforms: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)

    def get(self, plugin_type: str) -> Any:
        """The first initialised instance of a type this plugin requires."""
        return self.plugins.get(plugin_type)


class PluginSet:
    """The plugins in the order they were initialised."""

    def __init__(self) -> None:
        self._plugins: list[Plugin] = []

    def add(self, plugin: Plugin) -> None:
        self._plugins.append(plugin)

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self._plugins)

    def __len__(self) -> int:
        return len(self._plugins)

    def get(self, plugin_type: str) -> Any:
        for p in self._plugins:
            if p.registration.type == plugin_type and p.ok:
                return p.instance
        raise errdefs.NotFound(f"no plugins registered for {plugin_type}")

    def get_by_id(self, plugin_type: str, plugin_id: str) -> Any:
        for p in self._plugins:
            if p.registration.type == plugin_type and p.registration.id == plugin_id:
                if p.error is not None:
                    raise errdefs.FailedPrecondition(
                        f"plugin {p.registration.uri} failed to load: {p.error}"
                    )
                return p.instance
        raise errdefs.NotFound(f"plugin {plugin_type}.{plugin_id}")

    def instances(self, plugin_type: str) -> dict[str, Any]:
        """Every healthy instance of a type, by id."""
        return {
            p.registration.id: p.instance
            for p in self._plugins
            if p.registration.type == plugin_type and p.ok
        }


_REGISTRY: list[Registration] = []


def register(registration: Registration) -> Registration:
    """Add a plugin to the global registry; ids are unique within a type."""
    for r in _REGISTRY:
        if r.uri == registration.uri:
            raise errdefs.AlreadyExists(f"plugin {registration.uri}")
    _REGISTRY.append(registration)
    return registration


def registrations(disabled: frozenset[str] = frozenset()) -> list[Registration]:
    """Registrations in dependency order, leaving out disabled URIs.

    A plugin comes after every registration of each type it requires
    (``"*"`` means after everything else), keeping registration order
    otherwise, as containerd's graph does.
    """
    regs = [r for r in _REGISTRY if r.uri not in disabled]
    ordered: list[Registration] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(r: Registration) -> None:
        if r.uri in placed:
            return
        if r.uri in visiting:
            raise errdefs.FailedPrecondition(f"plugin {r.uri}: dependency cycle")
        visiting.add(r.uri)
        for req in r.requires:
            for dep in regs:
                if dep is r or dep.uri in placed:
                    continue
                if req == "*" or dep.type == req:
                    if req == "*" and "*" in dep.requires:
                        continue
                    place(dep)
        visiting.discard(r.uri)
        placed.add(r.uri)
        ordered.append(r)

    for r in regs:
        place(r)
    return ordered


async def initialise(registration: Registration, ctx: InitContext) -> Plugin:
    """Run one init function and record its outcome; never raises."""
    plugin = Plugin(registration=registration)
    try:
        result = registration.init(ctx)
        if inspect.isawaitable(result):
            result = await result
        plugin.instance = result
    except Exception as exc:  # recorded and shown by introspection
        plugin.error = exc
    plugin.exports = dict(ctx.exports)
    plugin.platforms = list(ctx.platforms)
    plugin.capabilities = list(ctx.capabilities)
    return plugin


def default_config(registration: Registration) -> Any:
    """A fresh instance of the plugin's config dataclass, or None."""
    if registration.config is None:
        return None
    return registration.config()


def config_fields(obj: Any) -> dict[str, Any]:
    """A plugin config as a plain mapping (for printing the default config)."""
    if obj is None:
        return {}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return dict(obj)


async def close_instance(instance: Any) -> None:
    """Close a plugin instance if it has ``close()``/``aclose()``."""
    for name in ("aclose", "close"):
        fn: Callable[[], Any] | None = getattr(instance, name, None)
        if fn is not None:
            res = fn()
            if isinstance(res, Awaitable):
                await res
            return
