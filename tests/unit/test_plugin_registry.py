"""The plugin registry: dependency order, disabled plugins, and how skipped and
failed plugins are recorded without stopping the ones after them.

The registry is module-global (built-ins register on import), so every test
that registers plugins runs against an isolated, empty registry: built-ins
are imported first (so no import lands in the isolated list), then
``plugin._REGISTRY`` is swapped for a fresh list and restored afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycontainerd import errdefs, plugin
from pycontainerd.daemon import builtins
from pycontainerd.daemon.config import Config, GRPCConfig
from pycontainerd.daemon.server import Server, StartupError
from pycontainerd.services.introspection import plugin_info
from pycontainerd.wire import introspection as introspection_wire

pytestmark = pytest.mark.unit


@contextlib.contextmanager
def isolated_registry() -> Iterator[None]:
    builtins.load()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plugin, "_REGISTRY", [])
        yield


@pytest.fixture
def registry() -> Iterator[None]:
    with isolated_registry():
        yield


def reg(
    type_: str, id_: str, *, requires: tuple[str, ...] = (), init: Any = None
) -> plugin.Registration:
    return plugin.register(
        plugin.Registration(
            type=type_, id=id_, requires=requires, init=init or (lambda ctx: f"{type_}.{id_}")
        )
    )


def uris(regs: list[plugin.Registration]) -> list[str]:
    return [r.uri for r in regs]


# --- the isolation itself -----------------------------------------------------


def test_isolated_registry_leaves_builtin_registrations_alone() -> None:
    builtins.load()
    before = plugin.registrations()
    assert "io.containerd.grpc.v1.version" in uris(before)
    with isolated_registry():
        reg("test.v1", "only")
        assert uris(plugin.registrations()) == ["test.v1.only"]
    assert plugin.registrations() == before


def test_builtin_introspection_starts_after_every_other_builtin() -> None:
    builtins.load()
    ordered = plugin.registrations()
    assert ordered[-1].uri == "io.containerd.grpc.v1.introspection"
    # namespaces needs the metadata plugin, registered in another module
    names = uris(ordered)
    assert names.index("io.containerd.metadata.v1.sqlite") < names.index(
        "io.containerd.grpc.v1.namespaces"
    )


# --- ordering ---------------------------------------------------------------------


def test_registration_order_is_kept_without_requirements(registry: None) -> None:
    reg("t.c", "3")
    reg("t.a", "1")
    reg("t.b", "2")
    assert uris(plugin.registrations()) == ["t.c.3", "t.a.1", "t.b.2"]


def test_plugin_starts_after_every_plugin_of_a_type_it_requires(registry: None) -> None:
    reg("svc", "api", requires=("store",))
    reg("other", "x")
    reg("store", "one")
    reg("store", "two")
    order = uris(plugin.registrations())
    assert order.index("svc.api") > order.index("store.one")
    assert order.index("svc.api") > order.index("store.two")
    assert order == ["store.one", "store.two", "svc.api", "other.x"]


def test_requirements_are_followed_transitively(registry: None) -> None:
    reg("grpc", "svc", requires=("service",))
    reg("service", "local", requires=("metadata",))
    reg("metadata", "db")
    assert uris(plugin.registrations()) == ["metadata.db", "service.local", "grpc.svc"]


def test_star_requirement_starts_after_everything_else(registry: None) -> None:
    reg("grpc", "introspection", requires=("*",))
    reg("grpc", "late", requires=("*",))
    reg("a", "1")
    reg("b", "2", requires=("a",))
    reg("c", "3")
    assert uris(plugin.registrations()) == [
        "a.1",
        "b.2",
        "c.3",
        "grpc.introspection",
        "grpc.late",
    ]


def test_disabled_plugins_are_left_out(registry: None) -> None:
    reg("a", "1")
    reg("a", "2")
    reg("b", "1", requires=("a",))
    assert uris(plugin.registrations(frozenset({"a.2"}))) == ["a.1", "b.1"]
    assert uris(plugin.registrations(frozenset({"a.1", "a.2", "b.1"}))) == []


def test_registering_the_same_uri_twice_is_rejected(registry: None) -> None:
    reg("a", "1")
    with pytest.raises(errdefs.AlreadyExists, match=r"plugin a\.1"):
        reg("a", "1")
    reg("b", "1")  # same id, other type: fine


def test_dependency_cycle_is_reported(registry: None) -> None:
    reg("a", "1", requires=("b",))
    reg("b", "1", requires=("a",))
    with pytest.raises(errdefs.FailedPrecondition, match="dependency cycle"):
        plugin.registrations()


# --- start-up: skipped and failed plugins -----------------------------------------


@contextlib.contextmanager
def short_base() -> Iterator[Path]:
    """A short directory: the socket path must fit in 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="pcd-unit-", dir="/tmp") as d:
        yield Path(d)


def start_and_stop(base: Path, **config: Any) -> plugin.PluginSet:
    """Start a daemon in-process with the registered plugins, then stop it."""
    server = Server(
        Config(
            root=str(base / "root"),
            state=str(base / "state"),
            grpc=GRPCConfig(address=str(base / "p.sock")),
            **config,
        )
    )

    async def run() -> None:
        try:
            await server.start()
        finally:
            await server.stop(grace=0)

    asyncio.run(run())
    return server.plugins


def by_uri(plugins: plugin.PluginSet) -> dict[str, plugin.Plugin]:
    return {p.registration.uri: p for p in plugins}


def test_skipped_plugin_is_recorded_with_status_skip(registry: None) -> None:
    def skip(ctx: plugin.InitContext) -> None:
        raise plugin.SkipPlugin("no overlay support on this host")

    reg("snap", "overlayfs", init=skip)
    reg("snap", "native")
    with short_base() as base:
        plugins = by_uri(start_and_stop(base))

    skipped = plugins["snap.overlayfs"]
    assert skipped.skipped and not skipped.ok
    info = plugin_info(skipped)
    assert info.status == "skip"
    assert info.init_err is not None
    assert info.init_err.message == "no overlay support on this host: skip plugin"
    # what a client (ctr plugins ls) decodes from the wire says the same
    assert introspection_wire.from_pb(introspection_wire.to_pb(info)).status == "skip"
    assert plugins["snap.native"].ok
    assert plugin_info(plugins["snap.native"]).status == "ok"


def test_failed_plugin_is_recorded_as_error_and_later_plugins_still_start(
    registry: None,
) -> None:
    started: list[str] = []

    def broken(ctx: plugin.InitContext) -> None:
        raise RuntimeError("disk on fire")

    def not_ready(ctx: plugin.InitContext) -> None:
        raise errdefs.FailedPrecondition("backend not configured")

    def record(name: str) -> Any:
        def init(ctx: plugin.InitContext) -> str:
            started.append(name)
            return name

        return init

    reg("a", "first", init=record("a.first"))
    reg("a", "broken", init=broken)
    reg("a", "not-ready", init=not_ready)
    reg("b", "after", init=record("b.after"))
    with short_base() as base:
        plugins = by_uri(start_and_stop(base))

    assert started == ["a.first", "b.after"]
    broken_info = plugin_info(plugins["a.broken"])
    assert broken_info.status == "error"
    assert broken_info.init_err is not None
    assert broken_info.init_err.code == grpc.StatusCode.UNKNOWN.value[0]
    assert "disk on fire" in broken_info.init_err.message
    typed = plugin_info(plugins["a.not-ready"])
    assert typed.status == "error"
    assert typed.init_err is not None
    assert typed.init_err.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert typed.init_err.message == "backend not configured: failed precondition"
    assert plugins["b.after"].ok and plugins["b.after"].instance == "b.after"


def test_plugin_gets_the_instance_of_the_type_it_requires(registry: None) -> None:
    seen: dict[str, Any] = {}

    def consumer(ctx: plugin.InitContext) -> str:
        seen["store"] = ctx.get("store")
        seen["root"] = ctx.root
        ctx.exports["root"] = str(ctx.root)
        return "consumer"

    reg("svc", "consumer", requires=("store",), init=consumer)
    reg("store", "mem", init=lambda ctx: {"kind": "mem"})
    with short_base() as base:
        plugins = by_uri(start_and_stop(base))
        assert seen["root"] == base / "root" / "svc.consumer"

    assert seen["store"] == {"kind": "mem"}
    assert plugin_info(plugins["svc.consumer"]).exports == {"root": str(seen["root"])}


def test_async_init_functions_are_awaited(registry: None) -> None:
    async def init(ctx: plugin.InitContext) -> str:
        await asyncio.sleep(0)
        return "ready"

    reg("a", "async", init=init)
    with short_base() as base:
        plugins = by_uri(start_and_stop(base))
    assert plugins["a.async"].instance == "ready"


def test_disabled_plugin_is_not_started(registry: None) -> None:
    started: list[str] = []
    reg("a", "off", init=lambda ctx: started.append("off"))
    reg("a", "on", init=lambda ctx: started.append("on"))
    with short_base() as base:
        plugins = by_uri(start_and_stop(base, disabled_plugins=("a.off",)))
    assert started == ["on"]
    assert list(plugins) == ["a.on"]


def test_required_plugin_that_fails_stops_start_up(registry: None) -> None:
    def broken(ctx: plugin.InitContext) -> None:
        raise RuntimeError("no")

    reg("a", "broken", init=broken)
    with short_base() as base, pytest.raises(StartupError) as excinfo:
        start_and_stop(base, required_plugins=("a.broken",))
    assert str(excinfo.value) == "required plugins failed to load: a.broken"


def test_plugins_are_closed_in_reverse_start_order(registry: None) -> None:
    closed: list[str] = []

    class Closeable:
        def __init__(self, name: str) -> None:
            self.name = name

        async def aclose(self) -> None:
            closed.append(self.name)

    reg("b", "later", requires=("a",), init=lambda ctx: Closeable("b.later"))
    reg("a", "first", init=lambda ctx: Closeable("a.first"))
    with short_base() as base:
        start_and_stop(base)
    assert closed == ["b.later", "a.first"]
