"""The runtime's pure parts: bundle paths, shim binary resolution, config."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from pycontainerd import errdefs, ttrpc
from pycontainerd.api.events import task_pb2
from pycontainerd.daemon.config import decode
from pycontainerd.events import Exchange
from pycontainerd.runtime import IO, State, Status
from pycontainerd.runtime.binary import Resolver, binary_name, socket_path
from pycontainerd.runtime.bundle import load_bundle, new_bundle
from pycontainerd.runtime.manager import (
    OUR_SHIM,
    SHIM_PUBLISH_RETRY_WINDOW,
    RuntimeConfig,
    TaskManager,
)
from pycontainerd.runtime.shim import from_status
from pycontainerd.typeurl import unmarshal_any

BAD_IDS = ["", "..", "../escape", "a/b", ".hidden", "x" * 77, "sp ace", "/abs"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bundle_ids_are_validated_before_any_path_is_made(tmp_path: Path, bad: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        new_bundle(tmp_path / "root", tmp_path / "state", "default", bad, b"{}")
    with pytest.raises(errdefs.InvalidArgument):
        load_bundle(tmp_path / "root", tmp_path / "state", "default", bad)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bundle_namespaces_are_validated_before_any_path_is_made(tmp_path: Path, bad: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        new_bundle(tmp_path / "root", tmp_path / "state", bad, "web", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_a_bundle_is_state_ns_id_with_spec_rootfs_and_work_link(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    bundle = new_bundle(root, state, "prod", "web", b'{"ociVersion": "1.0.2"}')
    assert bundle.path == state / "prod" / "web"
    assert (bundle.path / "config.json").read_bytes() == b'{"ociVersion": "1.0.2"}'
    assert bundle.rootfs.is_dir() and not any(bundle.rootfs.iterdir())
    assert os.readlink(bundle.path / "work") == str(root / "prod" / "web")
    assert stat.S_IMODE(bundle.path.stat().st_mode) == 0o700
    bundle.record_shim_binary("/usr/bin/containerd-shim-runc-v2")
    assert load_bundle(root, state, "prod", "web").shim_binary() == (
        "/usr/bin/containerd-shim-runc-v2"
    )
    with pytest.raises(errdefs.AlreadyExists):
        new_bundle(root, state, "prod", "web", None)
    bundle.delete()
    assert list((state / "prod").iterdir()) == []
    assert list((root / "prod").iterdir()) == []


def test_a_stale_work_directory_is_replaced(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    (root / "ns" / "t").mkdir(parents=True)
    (root / "ns" / "t" / "old").write_text("left by a task never deleted")
    bundle = new_bundle(root, state, "ns", "t", None)
    assert list(bundle.work.iterdir()) == []
    assert not (bundle.path / "config.json").exists()


@pytest.mark.parametrize(
    ("runtime", "binary"),
    [
        ("io.containerd.runc.v2", "containerd-shim-runc-v2"),
        ("io.containerd.pyrunc.v2", "containerd-shim-pyrunc-v2"),
        ("example.custom.v7", "containerd-shim-custom-v7"),
        ("runc.v1", "containerd-shim-runc-v1"),
        ("runc", ""),
        (".runc.v1", ""),
    ],
)
def test_binary_name_follows_containerd(runtime: str, binary: str) -> None:
    assert binary_name(runtime) == binary


def _shim(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_mapped_name_runs_its_shim_beside_the_daemon_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beside = _shim(tmp_path / "venv", OUR_SHIM)
    _shim(tmp_path / "path", OUR_SHIM)
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    resolver = Resolver(RuntimeConfig().shims(), beside=tmp_path / "venv")
    assert resolver.resolve("io.containerd.runc.v2") == str(beside)
    assert resolver.resolve("io.containerd.pyrunc.v2") == str(beside)


def test_a_mapped_name_may_name_any_shim_by_path(tmp_path: Path) -> None:
    go = _shim(tmp_path, "containerd-shim-runc-v2")
    resolver = Resolver({"io.containerd.runc.v2": str(go)}, beside=tmp_path / "none")
    assert resolver.resolve("io.containerd.runc.v2") == str(go)
    missing = Resolver({"x.y.v1": str(tmp_path / "absent")}, beside=tmp_path)
    with pytest.raises(errdefs.NotFound):
        missing.resolve("x.y.v1")
    relative = Resolver({"x.y.v1": "bin/shim"}, beside=tmp_path)
    with pytest.raises(errdefs.InvalidArgument):
        relative.resolve("x.y.v1")


def test_an_unmapped_name_resolves_as_containerd_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = _shim(tmp_path / "path", "containerd-shim-foo-v1")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    resolver = Resolver({}, beside=tmp_path / "venv")
    assert resolver.resolve("io.containerd.foo.v1") == str(on_path)
    beside = _shim(tmp_path / "venv", "containerd-shim-bar-v2")
    assert resolver.resolve("io.containerd.bar.v2") == str(beside)
    with pytest.raises(errdefs.NotFound, match="containerd-shim-nosuch-v1"):
        resolver.resolve("io.containerd.nosuch.v1")
    with pytest.raises(errdefs.InvalidArgument, match="invalid runtime name"):
        resolver.resolve("runc")
    with pytest.raises(errdefs.InvalidArgument):
        resolver.resolve("")


def test_an_absolute_runtime_is_its_own_shim(tmp_path: Path) -> None:
    shim = _shim(tmp_path, "my-shim")
    resolver = Resolver({}, beside=tmp_path)
    assert resolver.resolve(str(shim)) == str(shim)
    with pytest.raises(errdefs.NotFound):
        resolver.resolve(str(tmp_path / "absent"))


def test_runtime_config_adds_to_the_default_mapping() -> None:
    section = {"runtimes": {"io.containerd.runc.v2": {"shim": "/usr/bin/containerd-shim-runc-v2"}}}
    config = decode(RuntimeConfig, section)
    assert config.shims() == {
        "io.containerd.runc.v2": "/usr/bin/containerd-shim-runc-v2",
        "io.containerd.pyrunc.v2": OUR_SHIM,
    }
    assert RuntimeConfig().shims() == {
        "io.containerd.runc.v2": OUR_SHIM,
        "io.containerd.pyrunc.v2": OUR_SHIM,
    }


@pytest.mark.parametrize(
    "runtimes",
    [
        {"x.y.v1": "not a table"},
        {"x.y.v1": {"shim": ""}},
        {"x.y.v1": {"shim": 3}},
        {"x.y.v1": {"shim": "s", "typo": "t"}},
    ],
)
def test_a_malformed_runtime_mapping_is_refused(runtimes: dict[str, object]) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        RuntimeConfig(runtimes=runtimes).shims()  # type: ignore[arg-type]


def test_a_shims_address_is_a_file_with_the_scheme_and_abstract_without() -> None:
    assert socket_path("unix:///run/containerd/s/abc") == "/run/containerd/s/abc"
    assert socket_path("/containerd-shim/abc.sock") == "\0/containerd-shim/abc.sock"
    with pytest.raises(errdefs.Unknown):
        socket_path("")


@pytest.mark.parametrize(
    ("code", "message", "cls", "text"),
    [
        (5, "process does not exist e1: not found", errdefs.NotFound, "process does not exist e1"),
        (9, "container is paused: failed precondition", errdefs.FailedPrecondition,
         "container is paused"),
        (9, "busy: conflict", errdefs.Conflict, "busy"),
        (2, "runc did not terminate successfully", errdefs.Unknown,
         "runc did not terminate successfully"),
        (6, "", errdefs.AlreadyExists, "already exists"),
    ],
)  # fmt: skip
def test_a_shims_error_status_becomes_our_typed_error(
    code: int, message: str, cls: type[errdefs.ContainerdError], text: str
) -> None:
    err = from_status(ttrpc.StatusError(code, message))
    assert type(err) is cls
    assert err.message == text


# --- exits that happened while the daemon was down ---------------------------------------


async def _exits_seen(
    tmp_path: Path, exited_ago: float, shim_delivers: bool, listen: float
) -> list[int]:
    """Restore's report of a task found STOPPED that exited ``exited_ago``
    seconds ago: the exit statuses subscribers see in ``listen`` seconds."""

    exchange = Exchange()
    manager = TaskManager(
        tmp_path / "root",
        tmp_path / "state",
        resolver=Resolver({}),
        exchange=exchange,
        grpc_address="",
        ttrpc_address="",
        publish_binary="",
    )
    exited_at = time.time_ns() - int(exited_ago * 1e9)
    state = State("web", 42, Status.STOPPED, IO(), 7, exited_at)
    task = type("Task", (), {"namespace": "prod", "id": "web"})()
    seen: list[int] = []

    async def listen_all() -> None:
        async for env in exchange.subscribe(['topic=="/tasks/exit"']):
            seen.append(unmarshal_any(env.event).exit_status)

    listener = asyncio.ensure_future(listen_all())
    while exchange.subscriber_count == 0:
        await asyncio.sleep(0)
    await manager._report_exit_while_down(task, state)  # type: ignore[arg-type]
    if shim_delivers:
        event = task_pb2.TaskExit(container_id="web", id="web", pid=42, exit_status=7)
        await exchange.publish("/tasks/exit", event, namespace="prod")
    await asyncio.sleep(listen)
    listener.cancel()
    await manager.close()
    assert listen < SHIM_PUBLISH_RETRY_WINDOW
    return seen


def test_an_exit_long_ago_is_published_at_once(tmp_path: Path) -> None:

    assert asyncio.run(_exits_seen(tmp_path, 60, shim_delivers=False, listen=0.1)) == [7]


def test_an_exit_the_shim_still_delivers_is_not_published_again(tmp_path: Path) -> None:

    ago = SHIM_PUBLISH_RETRY_WINDOW - 0.5
    assert asyncio.run(_exits_seen(tmp_path, ago, shim_delivers=True, listen=1.0)) == [7]


def test_an_exit_the_shim_gave_up_on_is_published_after_its_retry_window(tmp_path: Path) -> None:

    ago = SHIM_PUBLISH_RETRY_WINDOW - 0.3
    assert asyncio.run(_exits_seen(tmp_path, ago, shim_delivers=False, listen=0.8)) == [7]
