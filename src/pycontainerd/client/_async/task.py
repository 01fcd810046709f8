"""Tasks and processes over the tasks service: what runs in a container.

``await container.new_task(io_creator)`` creates the container's task (its
init process, created but not started), ``await container.task()`` loads
the one that runs.  An :class:`AsyncTask` starts, waits, signals, pauses,
execs more :class:`AsyncProcess` es, and is deleted once stopped, as
containerd's Go client does (``client/task.go``, ``client/process.go``).

``wait()`` asks the daemon's ``Wait``, which answers when the process exits
(at once if it already has), with an :class:`ExitStatus`: the code and the
time.  To wait and start at the same time, as ctr does, start the wait
first: ``exited = asyncio.ensure_future(task.wait()); await task.start()``.

The IO (:mod:`pycontainerd.cio`) is made when the process is created and
closed when it is deleted, after its output has been copied out.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import enum
import json
import signal as signals
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2

from pycontainerd import cio, errdefs
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from pycontainerd.api.types import descriptor_pb2
from pycontainerd.api.types.task import task_pb2
from pycontainerd.client._streams import AsyncOffload
from pycontainerd.mount import Mount
from pycontainerd.wire import mounts as mounts_wire
from pycontainerd.wire._time import from_timestamp

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from pycontainerd.client._async.client import AsyncClient, _Call
    from pycontainerd.client._async.containers import AsyncContainer

__all__ = [
    "PROCESS_SPEC_TYPE_URL",
    "RESOURCES_SPEC_TYPE_URL",
    "UNKNOWN_EXIT_STATUS",
    "AsyncProcess",
    "AsyncTask",
    "AsyncTasks",
    "ExitStatus",
    "Metric",
    "ProcessInfo",
    "ProcessRecord",
    "ProcessStatus",
    "Status",
]

#: The exit code reported when the real one could not be learned (containerd's).
UNKNOWN_EXIT_STATUS = 255

#: An exec's OCI process spec travels as JSON under this type URL.
PROCESS_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
#: And an update's Linux resources under this one.
RESOURCES_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


class ProcessStatus(enum.StrEnum):
    """A process's state, in the Go client's words."""

    UNKNOWN = "unknown"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    PAUSING = "pausing"

    @classmethod
    def from_pb(cls, value: int) -> ProcessStatus:
        name = task_pb2.Status.Name(value) if value in task_pb2.Status.values() else "UNKNOWN"
        return cls(name.lower())


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended: its code and when (``None`` if unknown)."""

    code: int
    exited_at: dt.datetime | None = None

    @classmethod
    def from_pb(cls, code: int, exited_at: Any) -> ExitStatus:
        when = from_timestamp(exited_at) if exited_at.seconds or exited_at.nanos else None
        return cls(code, when)


@dataclass(frozen=True, slots=True)
class Status:
    """A process's state and, once stopped, its exit code."""

    status: ProcessStatus
    exit_status: int = 0
    exited_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A process of a task, as ``ListPids`` reports it (``info``: runtime-specific)."""

    pid: int
    info: any_pb2.Any | None = None


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A task or exec as the tasks service describes it (``Get``, ``List``)."""

    container_id: str
    id: str
    pid: int
    status: ProcessStatus
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    exit_status: int = 0
    exited_at: dt.datetime | None = None

    @classmethod
    def from_pb(cls, msg: task_pb2.Process) -> ProcessRecord:
        return cls(
            container_id=msg.container_id,
            id=msg.id,
            pid=msg.pid,
            status=ProcessStatus.from_pb(msg.status),
            stdin=msg.stdin,
            stdout=msg.stdout,
            stderr=msg.stderr,
            terminal=msg.terminal,
            exit_status=msg.exit_status,
            exited_at=ExitStatus.from_pb(0, msg.exited_at).exited_at,
        )

    @property
    def io_config(self) -> cio.Config:
        return cio.Config(self.stdin, self.stdout, self.stderr, self.terminal)


@dataclass(frozen=True, slots=True)
class Metric:
    """One data point of a task's metrics; ``data`` is runtime-specific
    (cgroup v1 or v2 statistics for runc)."""

    id: str
    timestamp: dt.datetime
    data: any_pb2.Any
    #: The timestamp's nanoseconds within its second (a datetime keeps microseconds).
    timestamp_nanos: int = 0


def _signal_number(sig: int | str) -> int:
    if isinstance(sig, int):
        return int(sig)
    name = sig.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(signals.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise errdefs.InvalidArgument(f"unknown signal {errdefs.q(sig)}") from None


def _process_spec_any(spec: Mapping[str, Any]) -> any_pb2.Any:
    value = json.dumps(spec, separators=(",", ":"), ensure_ascii=False).encode()
    return any_pb2.Any(type_url=PROCESS_SPEC_TYPE_URL, value=value)


class AsyncTasks:
    """``client.tasks``: the tasks service itself (the records, not a handle)."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self.stub = tasks_pb2_grpc.TasksStub(call.channel)

    async def unary(self, method: str, request: Message) -> Any:
        return await self._call.unary(getattr(self.stub, method), request)

    async def get(self, container_id: str, exec_id: str = "") -> ProcessRecord:
        req = tasks_pb2.GetRequest(container_id=container_id, exec_id=exec_id)
        return ProcessRecord.from_pb((await self.unary("Get", req)).process)

    async def list(self, filter: str = "") -> builtins.list[ProcessRecord]:
        resp = await self.unary("List", tasks_pb2.ListTasksRequest(filter=filter))
        return [ProcessRecord.from_pb(t) for t in resp.tasks]

    async def metrics(self, *filters: str) -> builtins.list[Metric]:
        resp = await self.unary("Metrics", tasks_pb2.MetricsRequest(filters=list(filters)))
        return [
            Metric(m.id, from_timestamp(m.timestamp), m.data, m.timestamp.nanos)
            for m in resp.metrics
        ]


class AsyncProcess:
    """A process of a task: the task's init (see :class:`AsyncTask`) or an exec."""

    def __init__(
        self, task: AsyncTask | None, id: str, io: cio.IO | None, pid: int = 0
    ) -> None:
        self._task = task
        self._exec_id = id
        self._io = io
        self._pid = pid

    @property
    def _service(self) -> AsyncTasks:
        assert self._task is not None
        return self._task._service

    @property
    def _container_id(self) -> str:
        assert self._task is not None
        return self._task.id

    @property
    def id(self) -> str:
        return self._exec_id

    @property
    def pid(self) -> int:
        """The process id on the host (0 until known)."""
        return self._pid

    @property
    def io(self) -> cio.IO | None:
        return self._io

    def __repr__(self) -> str:
        return f"<Process {self.id!r} of {self._container_id!r} pid={self._pid}>"

    async def _close_io_after_failure(self) -> None:
        if self._io is not None:
            self._io.cancel()
            await AsyncOffload.run(self._io.wait)
            self._io.close()

    async def start(self) -> int:
        """Start the process; returns its pid."""
        req = tasks_pb2.StartRequest(container_id=self._container_id, exec_id=self._exec_id)
        try:
            resp = await self._service.unary("Start", req)
        except errdefs.ContainerdError:
            await self._close_io_after_failure()
            raise
        self._pid = resp.pid
        return self._pid

    async def kill(self, sig: int | str = signals.SIGTERM, *, all: bool = False) -> None:
        """Send ``sig`` (a number or a name: ``SIGKILL``, ``KILL``, ``9``);
        ``all`` signals every process of the task."""
        req = tasks_pb2.KillRequest(
            container_id=self._container_id,
            exec_id=self._exec_id,
            signal=_signal_number(sig),
            all=all,
        )
        await self._service.unary("Kill", req)

    async def wait(self) -> ExitStatus:
        """Block until the process exits (at once if it has); its exit status."""
        req = tasks_pb2.WaitRequest(container_id=self._container_id, exec_id=self._exec_id)
        resp = await self._service.unary("Wait", req)
        return ExitStatus.from_pb(resp.exit_status, resp.exited_at)

    async def close_io(self, *, stdin: bool = True) -> None:
        """Close the process's stdin (the shim's end), so that it reads EOF."""
        req = tasks_pb2.CloseIORequest(
            container_id=self._container_id, exec_id=self._exec_id, stdin=stdin
        )
        await self._service.unary("CloseIO", req)

    async def resize(self, width: int, height: int) -> None:
        """Resize the process's pty (it must have one)."""
        req = tasks_pb2.ResizePtyRequest(
            container_id=self._container_id, exec_id=self._exec_id, width=width, height=height
        )
        await self._service.unary("ResizePty", req)

    async def status(self) -> Status:
        record = await self._service.get(self._container_id, self._exec_id)
        return Status(record.status, record.exit_status, record.exited_at)

    async def _kill_and_wait(self) -> None:
        """containerd's ``WithProcessKill``: SIGKILL everything, wait for the exit."""
        try:
            await self.kill(signals.SIGKILL, all=True)
        except errdefs.FailedPrecondition:
            return  # already stopped
        except errdefs.NotFound:
            pass  # may still have killed it; the wait says
        await self.wait()

    async def delete(self, *, force: bool = False) -> ExitStatus:
        """Delete the stopped process (``force`` kills it first); its exit status.

        Its output is copied out before the daemon forgets it, and the IO
        closed after: a process deleted too early loses no output.
        """
        if force:
            await self._kill_and_wait()
        status = await self.status()
        if status.status not in (ProcessStatus.CREATED, ProcessStatus.STOPPED,
                                 ProcessStatus.UNKNOWN):
            raise errdefs.FailedPrecondition(
                f"process must be stopped before deletion: {status.status}"
            )
        if self._io is not None:
            self._io.cancel()
            await AsyncOffload.run(self._io.wait)
        req = tasks_pb2.DeleteProcessRequest(
            container_id=self._container_id, exec_id=self._exec_id
        )
        resp = await self._service.unary("DeleteProcess", req)
        if self._io is not None:
            self._io.close()
        return ExitStatus.from_pb(resp.exit_status, resp.exited_at)


class AsyncTask(AsyncProcess):
    """A container's task: its init process, and the way to the others."""

    def __init__(
        self,
        client: AsyncClient,
        container_id: str,
        io: cio.IO | None,
        pid: int = 0,
    ) -> None:
        super().__init__(None, "", io, pid)
        self._client = client
        self._id = container_id
        self._service_handle = client.tasks

    @property
    def _service(self) -> AsyncTasks:
        return self._service_handle

    @property
    def _container_id(self) -> str:
        return self._id

    @property
    def id(self) -> str:
        """The task's id: its container's."""
        return self._id

    def __repr__(self) -> str:
        return f"<Task {self._id!r} pid={self._pid}>"

    async def delete(self, *, force: bool = False) -> ExitStatus:
        """Delete the stopped task (``force`` kills it first); its exit status."""
        if force:
            await self._kill_and_wait()
        status = await self.status()
        if status.status not in (ProcessStatus.CREATED, ProcessStatus.STOPPED,
                                 ProcessStatus.UNKNOWN):
            raise errdefs.FailedPrecondition(
                f"task must be stopped before deletion: {status.status}"
            )
        if self._io is not None:
            # Cancel only gives up on FIFOs the shim never opened; the copies of
            # those it did run to their end, so no output is lost.
            self._io.cancel()
            await AsyncOffload.run(self._io.wait)
        req = tasks_pb2.DeleteTaskRequest(container_id=self._id)
        resp = await self._service.unary("Delete", req)
        if self._io is not None:
            self._io.close()
        return ExitStatus.from_pb(resp.exit_status, resp.exited_at)

    async def pause(self) -> None:
        await self._service.unary("Pause", tasks_pb2.PauseTaskRequest(container_id=self._id))

    async def resume(self) -> None:
        await self._service.unary("Resume", tasks_pb2.ResumeTaskRequest(container_id=self._id))

    async def pids(self) -> builtins.list[ProcessInfo]:
        """The processes of the task, by host pid."""
        req = tasks_pb2.ListPidsRequest(container_id=self._id)
        resp = await self._service.unary("ListPids", req)
        return [
            ProcessInfo(p.pid, p.info if p.HasField("info") else None) for p in resp.processes
        ]

    async def metrics(self) -> Metric:
        """One data point of the task's metrics (cgroup statistics for runc)."""
        found = await self._service.metrics(f"id=={self._id}")
        if not found:
            raise errdefs.NotFound(f"no metrics received for task {errdefs.q(self._id)}")
        return found[0]

    async def update(
        self,
        *,
        resources: Mapping[str, Any] | any_pb2.Any | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Change the running task's resources (an OCI ``LinuxResources``
        mapping: ``{"memory": {"limit": 1 << 28}}``) and annotations."""
        req = tasks_pb2.UpdateTaskRequest(
            container_id=self._id, annotations=dict(annotations or {})
        )
        if isinstance(resources, any_pb2.Any):
            req.resources.CopyFrom(resources)
        elif resources is not None:
            value = json.dumps(dict(resources), separators=(",", ":")).encode()
            req.resources.CopyFrom(any_pb2.Any(type_url=RESOURCES_SPEC_TYPE_URL, value=value))
        await self._service.unary("Update", req)

    async def exec(
        self, id: str, spec: Mapping[str, Any], io_creator: cio.Creator
    ) -> AsyncProcess:
        """Create (not start) another process in the task, with the OCI process
        ``spec`` (``args``, ``env``, ``cwd``...; usually the container spec's
        ``process`` changed) and IO from ``io_creator``."""
        if not id:
            raise errdefs.InvalidArgument("exec id must not be empty")
        io = io_creator(id)
        cfg = io.config
        req = tasks_pb2.ExecProcessRequest(
            container_id=self._id,
            exec_id=id,
            terminal=cfg.terminal,
            stdin=cfg.stdin,
            stdout=cfg.stdout,
            stderr=cfg.stderr,
            spec=_process_spec_any(spec),
        )
        process = AsyncProcess(self, id, io)
        try:
            await self._service.unary("Exec", req)
        except BaseException:
            await process._close_io_after_failure()
            raise
        return process

    async def load_process(self, id: str, io_attach: cio.Attach | None = None) -> AsyncProcess:
        """An exec of this task that exists, optionally reattached to its IO."""
        record = await self._service.get(self._id, id)
        io = _attach(record, io_attach)
        return AsyncProcess(self, id, io, record.pid)

    async def checkpoint(
        self, *, parent: str = "", options: Message | None = None
    ) -> builtins.list[descriptor_pb2.Descriptor]:
        """Checkpoint the task (runc: with CRIU); the descriptors of the
        checkpoint data the daemon stored, as the Checkpoint call answers.

        ``options`` is the runtime's (``CheckpointOptions`` for runc: ``exit``
        to stop the task after, ``image_path``...).  Making an image of them
        is the caller's: ``pyctr containers checkpoint`` does.
        """
        from pycontainerd import typeurl

        req = tasks_pb2.CheckpointTaskRequest(container_id=self._id, parent_checkpoint=parent)
        if options is not None:
            req.options.CopyFrom(typeurl.marshal_any(options))
        resp = await self._service.unary("Checkpoint", req)
        return list(resp.descriptors)


def _attach(record: ProcessRecord, io_attach: cio.Attach | None) -> cio.IO | None:
    if io_attach is None or record.status == ProcessStatus.UNKNOWN:
        return None
    return io_attach(cio.load_fifos(record.io_config))


async def new_task(
    client: AsyncClient,
    container: AsyncContainer,
    io_creator: cio.Creator,
    *,
    options: Message | any_pb2.Any | None = None,
    rootfs: Sequence[Mount] = (),
    checkpoint: descriptor_pb2.Descriptor | None = None,
    runtime_path: str = "",
) -> AsyncTask:
    """``container.new_task``: see :meth:`AsyncContainer.new_task`."""
    from pycontainerd import typeurl

    record = await container.info()
    req = tasks_pb2.CreateTaskRequest(container_id=container.id, runtime_path=runtime_path)
    if record.snapshot_key:
        if not record.snapshotter:
            raise errdefs.InvalidArgument(
                "unable to resolve rootfs mounts without snapshotter on container"
            )
        mounts = await client.snapshot_service(record.snapshotter).mounts(record.snapshot_key)
        req.rootfs.extend(mounts_wire.list_to_pb(mounts))
    req.rootfs.extend(mounts_wire.list_to_pb(rootfs))
    if options is not None:
        req.options.CopyFrom(
            options if isinstance(options, any_pb2.Any) else typeurl.marshal_any(options)
        )
    if checkpoint is not None:
        req.checkpoint.CopyFrom(checkpoint)
    io = io_creator(container.id)
    cfg = io.config
    req.stdin, req.stdout, req.stderr = cfg.stdin, cfg.stdout, cfg.stderr
    req.terminal = cfg.terminal
    task = AsyncTask(client, container.id, io)
    try:
        resp = await client.tasks.unary("Create", req)
    except BaseException:
        with contextlib.suppress(Exception):
            await task._close_io_after_failure()
        raise
    task._pid = resp.pid
    return task


async def load_task(
    client: AsyncClient, container: AsyncContainer, io_attach: cio.Attach | None = None
) -> AsyncTask:
    """``container.task``: see :meth:`AsyncContainer.task`."""
    try:
        record = await client.tasks.get(container.id)
    except errdefs.NotFound as exc:
        raise errdefs.NotFound(f"no running task found: {exc}") from exc
    return AsyncTask(client, container.id, _attach(record, io_attach), record.pid)
