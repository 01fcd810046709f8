"""The restart monitor's passes over fake local services: what it changes,
what it leaves alone, and that one container's failure stops nothing else."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from pycontainerd import errdefs, namespaces
from pycontainerd.api.events import task_pb2
from pycontainerd.containers import Container
from pycontainerd.events import Exchange
from pycontainerd.metadata.namespaces import Namespace
from pycontainerd.mount import Mount
from pycontainerd.restart import COUNT_LABEL, LOG_URI_LABEL, POLICY_LABEL, STATUS_LABEL
from pycontainerd.runtime import IO, Exit, State, Status
from pycontainerd.services import restart as restart_service
from pycontainerd.services.restart import RestartMonitor

pytestmark = pytest.mark.unit

NS = "prod"


@dataclass
class Record:
    id: str
    labels: Mapping[str, str]


@dataclass
class World:
    """Containers and tasks of one namespace, and every call made on them."""

    containers: dict[str, Container] = field(default_factory=dict)
    tasks: dict[str, State] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    #: Container id -> the error its task's create raises.
    create_fails: dict[str, Exception] = field(default_factory=dict)
    start_fails: set[str] = field(default_factory=set)

    def add(self, id: str, labels: Mapping[str, str], task: Status | None = None) -> None:
        self.containers[id] = Container(
            id=id, labels=dict(labels), snapshotter="overlayfs", snapshot_key=id
        )
        if task is not None:
            self.tasks[id] = State(id, 100, task, IO(), 0, 0)

    def ops(self, id: str) -> list[str]:
        return [call[0] for call in self.calls if call[1] == id]


class FakeNamespaces:
    async def list(self) -> Sequence[Namespace]:
        return [Namespace(NS), Namespace("empty")]


class FakeContainers:
    def __init__(self, world: World) -> None:
        self.world = world

    async def list_raw(self, *filters: str) -> Sequence[Record]:
        assert filters == ('labels."containerd.io/restart.status"',)
        if namespaces.required() != NS:
            return []
        return [
            Record(c.id, c.labels)
            for c in self.world.containers.values()
            if STATUS_LABEL in c.labels
        ]

    def get(self, id: str) -> Container:
        return self.world.containers[id]

    async def update(self, container: Container, *paths: str) -> Container:
        assert paths == (f"labels.{COUNT_LABEL}",)
        current = self.world.containers[container.id]
        labels = {**current.labels, **container.labels}
        self.world.containers[container.id] = Container(
            id=current.id,
            labels=labels,
            snapshotter=current.snapshotter,
            snapshot_key=current.snapshot_key,
        )
        self.world.calls.append(("update", container.id, dict(container.labels)))
        return self.world.containers[container.id]


class FakeTasks:
    def __init__(self, world: World) -> None:
        self.world = world

    def _state(self, id: str) -> State:
        assert namespaces.required() == NS
        try:
            return self.world.tasks[id]
        except KeyError:
            raise errdefs.NotFound(f"task {id} not found") from None

    async def get(self, id: str, exec_id: str = "") -> State:
        return self._state(id)

    async def create(self, id: str, *, rootfs: Sequence[Mount] = (), io: IO | None = None) -> int:
        self.world.calls.append(("create", id, tuple(rootfs), io))
        if id in self.world.create_fails:
            raise self.world.create_fails[id]
        if id in self.world.tasks:
            raise errdefs.AlreadyExists(f"task {id}")
        self.world.tasks[id] = State(id, 200, Status.CREATED, io or IO(), 0, 0)
        return 200

    async def start(self, id: str, exec_id: str = "") -> int:
        self.world.calls.append(("start", id))
        if id in self.world.start_fails:
            raise errdefs.FailedPrecondition("exec: no such file")
        state = self._state(id)
        self.world.tasks[id] = State(id, state.pid, Status.RUNNING, state.io, 0, 0)
        return state.pid

    async def delete(self, id: str) -> Exit:
        self.world.calls.append(("delete", id))
        state = self._state(id)
        del self.world.tasks[id]
        return Exit(state.pid, state.exit_status, 0)

    async def kill(self, id: str, sig: int, *, exec_id: str = "", all: bool = False) -> None:
        self.world.calls.append(("kill", id, sig, all))
        state = self._state(id)
        self.world.tasks[id] = State(id, state.pid, Status.STOPPED, state.io, 137, 1)

    async def wait(self, id: str, exec_id: str = "") -> Exit:
        while self._state(id).status != Status.STOPPED:
            await asyncio.sleep(0.001)
        self.world.calls.append(("wait", id))
        return Exit(self._state(id).pid, 137, 1)


class FakeSnapshots:
    async def mounts(self, snapshotter: str, key: str) -> list[Mount]:
        return [Mount(type="overlay", source="overlay", options=(f"{snapshotter}:{key}",))]


def _monitor(
    world: World,
    interval: float = 60,
    exchange: Exchange | None = None,
    tasks: FakeTasks | None = None,
) -> RestartMonitor:
    return RestartMonitor(
        namespaces=cast(Any, FakeNamespaces()),
        containers=cast(Any, FakeContainers(world)),
        tasks=cast(Any, tasks or FakeTasks(world)),
        snapshots=cast(Any, FakeSnapshots()),
        exchange=exchange,
        interval=interval,
    )


def _sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body on a fresh loop (no async pytest plugin here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture
def world() -> Iterator[World]:
    yield World()


def running(**extra: str) -> dict[str, str]:
    return {STATUS_LABEL: "running", **extra}


@_sync
async def test_missing_and_stopped_tasks_are_started_and_the_others_left_alone(
    world: World,
) -> None:
    world.add("none", running(**{LOG_URI_LABEL: "file:///var/log/none.log"}))
    world.add("stopped", running(**{COUNT_LABEL: "4"}), Status.STOPPED)
    world.add("unknown", running(), Status.UNKNOWN)
    for status in (Status.RUNNING, Status.CREATED, Status.PAUSED, Status.PAUSING):
        world.add(f"is-{status.name.lower()}", running(), status)
    world.add("unlabelled", {}, Status.STOPPED)
    world.add("other-status", {STATUS_LABEL: "paused"}, Status.STOPPED)
    await _monitor(world).reconcile()

    uri = "file:///var/log/none.log"
    mounts = (Mount(type="overlay", source="overlay", options=("overlayfs:none",)),)
    assert world.ops("none") == ["update", "create", "start"]
    assert ("create", "none", mounts, IO(stdout=uri, stderr=uri)) in world.calls
    assert world.ops("stopped") == ["delete", "update", "create", "start"]
    assert world.containers["stopped"].labels[COUNT_LABEL] == "5"
    assert world.containers["none"].labels[COUNT_LABEL] == "1"
    assert world.ops("unknown") == ["delete", "update", "create", "start"]
    for id in ("is-running", "is-created", "is-paused", "is-pausing", "unlabelled", "other-status"):
        assert world.ops(id) == [], id
    assert world.tasks["stopped"].status == Status.RUNNING


@_sync
async def test_a_running_task_labelled_stopped_is_killed_waited_for_and_deleted(
    world: World,
) -> None:
    world.add("web", {STATUS_LABEL: "stopped"}, Status.RUNNING)
    world.add("gone", {STATUS_LABEL: "stopped"})
    world.add("done", {STATUS_LABEL: "stopped"}, Status.STOPPED)
    await _monitor(world).reconcile()
    assert world.ops("web") == ["kill", "wait", "delete"]
    assert ("kill", "web", signal.SIGKILL, True) in world.calls
    assert "web" not in world.tasks
    assert world.ops("gone") == [] and world.ops("done") == []


@_sync
async def test_one_failing_container_is_logged_and_the_others_still_start(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.add("bad", running())
    world.add("no-start", running())
    world.add("bad-uri", running(**{LOG_URI_LABEL: "syslog:///dev/log"}))
    world.add("bad-policy", running(**{POLICY_LABEL: "sometimes"}))
    world.add("good", running())
    world.create_fails["bad"] = errdefs.InvalidArgument("no such image")
    world.start_fails.add("no-start")
    with caplog.at_level(logging.INFO, logger=restart_service.__name__):
        await _monitor(world).reconcile()
    assert world.tasks["good"].status == Status.RUNNING
    # A failed start leaves no created task behind (containerd's would stay).
    assert world.ops("no-start") == ["update", "create", "start", "delete"]
    assert "no-start" not in world.tasks
    assert world.ops("bad-uri") == [] and world.ops("bad-policy") == []
    errors = {
        getattr(r, "id", ""): r.getMessage() for r in caplog.records if r.levelname == "ERROR"
    }
    assert errors.keys() == {"bad", "no-start", "bad-uri", "bad-policy"}
    assert "no such image" in errors["bad"]
    assert "sometimes" in errors["bad-policy"]


@_sync
async def test_a_task_the_monitor_started_is_not_started_again_within_the_interval(
    world: World,
) -> None:
    world.add("crashy", running())
    monitor = _monitor(world, interval=0.3)
    await monitor.reconcile()
    world.tasks["crashy"] = State("crashy", 200, Status.STOPPED, IO(), 1, 1)
    await monitor.reconcile()
    assert world.ops("crashy").count("start") == 1
    await asyncio.sleep(0.35)
    await monitor.reconcile()
    assert world.ops("crashy").count("start") == 2


@_sync
async def test_a_pass_applies_at_most_its_bound_of_changes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restart_service, "MAX_CHANGES_PER_PASS", 3)
    for n in range(5):
        world.add(f"c{n}", running())
    monitor = _monitor(world)
    await monitor.reconcile()
    assert sum(1 for id in world.tasks if world.tasks[id].status == Status.RUNNING) == 3
    await monitor.reconcile()
    assert len(world.tasks) == 5


@_sync
async def test_a_task_exit_wakes_the_monitor_before_its_interval(world: World) -> None:
    exchange = Exchange()
    monitor = _monitor(world, interval=60, exchange=exchange)
    monitor.start()
    try:
        while monitor.passes < 1 or exchange.subscriber_count < 1:
            await asyncio.sleep(0.01)
        world.add("web", running())
        await exchange.publish("/tasks/exit", task_pb2.TaskExit(container_id="other"), namespace=NS)
        async with asyncio.timeout(2):
            while "web" not in world.tasks:
                await asyncio.sleep(0.01)
        assert monitor.passes == 2
    finally:
        await monitor.aclose()
    assert exchange.subscriber_count == 0


@_sync
async def test_closing_waits_for_a_pass_in_progress(world: World) -> None:
    world.add("slow", running())
    gate = asyncio.Event()
    tasks = FakeTasks(world)
    original = tasks.start

    async def slow_start(id: str, exec_id: str = "") -> int:
        gate.set()
        await asyncio.sleep(0.1)
        return await original(id, exec_id)

    tasks.start = slow_start  # type: ignore[method-assign]
    monitor = _monitor(world, tasks=tasks)
    monitor.start()
    await gate.wait()
    await monitor.aclose()
    assert world.tasks["slow"].status == Status.RUNNING


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10.0), ("200ms", 0.2), ("1m30s", 90.0), ("0", 10.0)]
)
def test_the_interval_is_a_go_duration_and_zero_is_the_default(text: str, seconds: float) -> None:
    assert restart_service.parse_interval(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "10", "-1s", ""])
def test_a_bad_interval_fails_the_plugin(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        restart_service.parse_interval(text)
