"""The service facade's own logic, over a fake client: request checks, the
stop sequence (signal, wait, SIGKILL or TaskStopTimeout), the task filter,
label filters, and the delegation of networking to a CNI network."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs, filters
from pycontainerd.client._sync.task import ExitStatus, ProcessRecord, Status
from pycontainerd.client._sync.task import ProcessStatus as ClientStatus
from pycontainerd.service import (
    DEFAULT_NAMESPACE,
    DEFAULT_SOCKET_PATH,
    MAX_EXEC_ARGS,
    CreateContainerRequest,
    DefaultService,
    ExecTaskRequest,
    ProcessStatus,
    TaskInfo,
    TaskStopTimeout,
)
from pycontainerd.service._types import check_timeout, label_filter

pytestmark = pytest.mark.unit


class FakeTask:
    """A task whose status follows a script: it stops after ``runs_for``
    status looks once signalled with a signal in ``stops_on``."""

    def __init__(self, *, stops_on: set[int], runs_for: int = 0, stopped: bool = False) -> None:
        self.stops_on = stops_on
        self.runs_for = runs_for
        self.stopped = stopped
        self.code = 0 if stopped else -1
        self.kills: list[tuple[int | str, bool]] = []
        self.looks = 0
        self.io = None
        self.pid = 42

    def status(self) -> Status:
        self.looks += 1
        if not self.stopped and self.code >= 0 and self.looks > self.runs_for:
            self.stopped = True
        if self.stopped:
            return Status(ClientStatus.STOPPED, self.code)
        return Status(ClientStatus.RUNNING)

    def kill(self, sig: int | str, *, all: bool = False) -> None:
        self.kills.append((sig, all))
        if sig in self.stops_on:
            self.code = 128 + int(sig)
            self.looks = 0

    def wait(self) -> ExitStatus:
        assert self.code >= 0, "waited on a task that will never exit"
        self.stopped = True
        return ExitStatus(self.code)


@dataclass
class FakeContainer:
    task_: FakeTask

    def task(self) -> FakeTask:
        return self.task_


@dataclass
class FakeTasks:
    records: list[ProcessRecord] = field(default_factory=list)

    def list(self, filter: str = "") -> list[ProcessRecord]:
        assert filter == ""  # the filter is applied by the facade
        return self.records


@dataclass
class FakeClient:
    task: FakeTask | None = None
    namespace: str = "default"
    tasks: FakeTasks = field(default_factory=FakeTasks)

    def load_container(self, id: str) -> FakeContainer:
        if self.task is None:
            raise errdefs.NotFound(f"container {errdefs.q(id)}")
        return FakeContainer(self.task)


def service_over(task: FakeTask | None = None, **kwargs: Any) -> DefaultService:
    return DefaultService(FakeClient(task), **kwargs)  # type: ignore[arg-type]


# --- stop_task ---------------------------------------------------------------------------


def test_stop_returns_the_exit_status_once_the_signal_ends_the_task() -> None:
    task = FakeTask(stops_on={signal.SIGTERM}, runs_for=2)
    assert service_over(task).stop_task("web", timeout=5) == 128 + signal.SIGTERM
    assert task.kills == [(signal.SIGTERM, False)]


def test_stop_of_a_task_that_outlives_its_timeout_raises_task_stop_timeout() -> None:
    task = FakeTask(stops_on={signal.SIGKILL})
    with pytest.raises(TaskStopTimeout) as raised:
        service_over(task).stop_task("web", timeout=0.05)
    assert task.kills == [(signal.SIGTERM, False)]  # no SIGKILL without force
    assert raised.value.code == errdefs.DeadlineExceeded.code
    assert 'task "web" in namespace "default"' in str(raised.value)


def test_forced_stop_kills_every_process_of_the_task_after_the_timeout() -> None:
    task = FakeTask(stops_on={signal.SIGKILL})
    assert service_over(task).stop_task("web", timeout=0.05, force=True) == 137
    assert task.kills == [(signal.SIGTERM, False), (signal.SIGKILL, True)]


def test_stop_sends_the_signal_it_is_given() -> None:
    task = FakeTask(stops_on={signal.SIGINT})
    assert service_over(task).stop_task("web", signal=signal.SIGINT, timeout=5) == 130
    assert task.kills == [(signal.SIGINT, False)]


def test_stop_of_a_stopped_task_sends_nothing() -> None:
    task = FakeTask(stops_on=set(), stopped=True)
    assert service_over(task).stop_task("web") == 0
    assert task.kills == []


def test_stop_of_a_missing_task_is_not_found() -> None:
    with pytest.raises(errdefs.NotFound):
        service_over(None).stop_task("web")


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), 1e9, True, "5"])
def test_stop_refuses_a_bad_timeout_before_it_signals(timeout: Any) -> None:
    task = FakeTask(stops_on={signal.SIGTERM})
    with pytest.raises(errdefs.InvalidArgument):
        service_over(task).stop_task("web", timeout=timeout)
    assert task.kills == []


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x" * 77, "-lead"])
def test_task_calls_refuse_a_bad_container_id(bad: str) -> None:
    service = service_over(FakeTask(stops_on=set()))
    for call in (service.stop_task, service.delete_task, service.get_task, service.start_task):
        with pytest.raises(errdefs.InvalidArgument):
            call(bad)


# --- list_tasks --------------------------------------------------------------------------


def test_list_tasks_filters_on_the_task_info_fields() -> None:
    client = FakeClient()
    client.tasks.records = [
        ProcessRecord("", "web", 10, ClientStatus.RUNNING),
        ProcessRecord("", "db", 11, ClientStatus.STOPPED, exit_status=3),
    ]
    service = DefaultService(client)  # type: ignore[arg-type]
    assert service.list_tasks() == [
        TaskInfo("web", "web", 10, ProcessStatus.RUNNING),
        TaskInfo("db", "db", 11, ProcessStatus.STOPPED, 3),
    ]
    assert [t.id for t in service.list_tasks("status==stopped")] == ["db"]
    assert [t.id for t in service.list_tasks("pid==10")] == ["web"]
    assert [t.id for t in service.list_tasks("exit_status==3,id~=^d")] == ["db"]
    with pytest.raises(errdefs.InvalidArgument):
        service.list_tasks("status==")


# --- requests ----------------------------------------------------------------------------


def test_create_container_request_checks_its_fields() -> None:
    request = CreateContainerRequest("web", "docker.io/library/busybox:latest")
    assert (request.snapshot_id, request.snapshotter, dict(request.labels)) == ("", "", {})
    for bad in ({"id": "a b"}, {"id": ""}, {"id": "web", "snapshot_id": "x/y"}):
        with pytest.raises(errdefs.InvalidArgument):
            CreateContainerRequest(**bad)  # type: ignore[arg-type]
    with pytest.raises(errdefs.InvalidArgument):
        CreateContainerRequest("web", spec_opts=["not callable"])  # type: ignore[list-item]


def test_exec_request_checks_its_fields() -> None:
    ExecTaskRequest(["sh", "-c", "true"], env=["A=1"], workdir="/tmp", stdout=io.BytesIO())
    for bad in (
        {"args": []},
        {"args": "sh"},
        {"args": ["a\0b"]},
        {"args": ["sh"], "workdir": "relative"},
        {"args": ["x"] * (MAX_EXEC_ARGS + 1)},
        {"args": ["sh"], "env": [1]},
    ):
        with pytest.raises(errdefs.InvalidArgument):
            ExecTaskRequest(**bad)  # type: ignore[arg-type]


def test_streaming_exec_takes_no_streams_of_the_caller() -> None:
    service = service_over(FakeTask(stops_on=set()))
    with pytest.raises(errdefs.InvalidArgument):
        service.exec_task_streaming("web", ExecTaskRequest(["cat"], stdin=b"x"))


def test_label_filter_quotes_any_key_and_value() -> None:
    text = label_filter("com.example/app name", 'a "quoted", value')
    assert text == 'labels."com.example/app name"=="a \\"quoted\\", value"'
    selected = filters.parse_all([text])
    labels = {"labels": {"com.example/app name": 'a "quoted", value'}}
    assert selected.match(filters.adapt_mapping(labels))
    assert not selected.match(filters.adapt_mapping({"labels": {"com.example/app name": "a"}}))
    with pytest.raises(errdefs.InvalidArgument):
        label_filter("", "x")


def test_check_timeout_accepts_positive_finite_seconds() -> None:
    assert check_timeout(1) == 1.0
    assert check_timeout(0.25) == 0.25


def test_defaults_are_our_socket_and_containerds_namespace() -> None:
    assert DEFAULT_SOCKET_PATH == "/run/pycontainerd/pycontainerd.sock"
    assert DEFAULT_NAMESPACE == "default"


def test_start_task_refuses_a_terminal_or_fifo_dir_without_stdio() -> None:
    service = service_over(FakeTask(stops_on=set()))
    with pytest.raises(errdefs.InvalidArgument):
        service.start_task("web", terminal=True)
    with pytest.raises(errdefs.InvalidArgument):
        service.start_task("web", fifo_dir="/tmp/fifo")


# --- networking --------------------------------------------------------------------------


@dataclass
class FakeNetwork:
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def setup(self, container_id: str, pid: int, *, namespace: str | None = None) -> str:
        self.calls.append(("setup", container_id, str(pid), str(namespace)))
        return "result"

    def remove(self, container_id: str, *, namespace: str | None = None) -> None:
        self.calls.append(("remove", container_id, str(namespace)))


@pytest.fixture
def network() -> Iterator[FakeNetwork]:
    yield FakeNetwork()


def test_networking_goes_to_the_network_under_the_namespaced_id(network: FakeNetwork) -> None:
    service = service_over(None, network=network)
    task = TaskInfo("web", "web", 1234, ProcessStatus.RUNNING)
    assert service.setup_network(task, "web") == "result"  # type: ignore[comparison-overlap]
    service.remove_network(task, "web")
    service.remove_network(None, "web")
    assert network.calls == [
        ("setup", "web", "1234", "default"),
        ("remove", "web", "default"),
        ("remove", "web", "default"),
    ]


def test_setup_network_needs_a_started_task(network: FakeNetwork) -> None:
    service = service_over(None, network=network)
    with pytest.raises(errdefs.FailedPrecondition):
        service.setup_network(TaskInfo("web", "web", 0, ProcessStatus.CREATED), "web")
    with pytest.raises(errdefs.InvalidArgument):
        service.setup_network(TaskInfo("web", "web", 1, ProcessStatus.RUNNING), "../web")
    assert network.calls == []


def test_resolve_conf_source_is_cnis(tmp_path: Path) -> None:
    from pycontainerd import cni

    assert service_over(None).resolve_conf_source(tmp_path) == cni.resolve_conf_source(tmp_path)
