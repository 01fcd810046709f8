"""A client of the supervised daemon for one :class:`Backend` (libcontainerd's client).

It creates and runs containers of one namespace and tells the backend of
every state change, from the daemon's ``/tasks/*`` events: a thread follows
a subscription filtered on the namespace, and when the subscription breaks
(the daemon died) subscribes again once the daemon is back, then
reconciles: a task it ran that has stopped, or is gone, while nobody
listened is reported as exited then, so the backend hears of every exit.

A subscription counts as live once an event the client publishes to itself
(on a topic of its own) comes back through it; only then does it
reconcile, so an exit is never lost between the two.  An exit reported
twice (an event and the reconcile) is delivered once: each task's init
process is reported exited once, by pid.

After an exit of its init process the task is deleted (its output drained
first), and the container's restart policy decides: a restart is reported
as ``restart`` and the task created and started again after the policy's
backoff (reported ``start-container``); otherwise ``exit``.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import queue
import secrets
import signal as signals
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from google.protobuf import any_pb2, timestamp_pb2, wrappers_pb2

from pycontainerd import cio, errdefs, identifiers, namespaces
from pycontainerd.api.events import task_pb2 as task_events
from pycontainerd.client._sync.containers import with_new_snapshot
from pycontainerd.remote._restart import Backoff, RestartManager, RestartPolicy
from pycontainerd.remote._types import (
    INIT_PROCESS_ID,
    Backend,
    EventType,
    ProcessStreams,
    ProcessSummary,
    StateInfo,
    Stats,
)

if TYPE_CHECKING:
    from pycontainerd.client import Client
    from pycontainerd.events.exchange import Envelope

__all__ = ["LABEL_RESTART_POLICY", "STOP_SIGNALS", "RemoteClient"]

log = logging.getLogger(__name__)

#: The container label a restart policy is kept in, so that restore() finds it.
LABEL_RESTART_POLICY = "io.pycontainerd.remote.restart-policy"
#: Signals whose sender means to stop the container: no policy restarts it after.
STOP_SIGNALS = frozenset({signals.SIGKILL, signals.SIGTERM, signals.SIGINT})
#: The exit code of a task found gone (containerd's unknown exit status).
UNKNOWN_EXIT_STATUS = 255
#: How often the self-addressed event is published until the subscription sees it.
SYNC_INTERVAL = 0.2


class _Supervisor(Protocol):
    """What a client needs of its :class:`~pycontainerd.remote.Remote`."""

    state: Path
    start_timeout: float

    def connect(self, namespace: str) -> Client: ...

    def runtime_options(self) -> any_pb2.Any | None: ...

    def _forget(self, client: RemoteClient) -> None: ...


@dataclass(eq=False)
class _Exec:
    process: Any
    closers: list[BinaryIO]
    exited: bool = False
    reported_start: bool = False


@dataclass(eq=False)
class _Container:
    """What the client knows of one of its containers."""

    id: str
    restart: RestartManager
    task: Any = None
    pid: int = 0
    exited: bool = True
    oom_killed: bool = False
    manually_stopped: bool = False
    deleted: bool = False
    started_at: float = 0.0
    with_stdin: bool = False
    attach_stdio: bool = True
    last_exit: StateInfo | None = None
    #: The pid whose start was reported (by start() or the event, whichever first).
    reported_start: int = 0
    closers: list[BinaryIO] = field(default_factory=list)
    execs: dict[str, _Exec] = field(default_factory=dict)
    timer: threading.Timer | None = None


def _time(ts: timestamp_pb2.Timestamp) -> dt.datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=dt.UTC)


def _signal_number(sig: int | str) -> int:
    if isinstance(sig, int):
        return sig
    name = sig.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(signals.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise errdefs.InvalidArgument(f"unknown signal {errdefs.q(sig)}") from None


def _pipe() -> tuple[BinaryIO, BinaryIO]:
    read_fd, write_fd = os.pipe()
    return open(read_fd, "rb", buffering=0), open(write_fd, "wb", buffering=0)


@dataclass(frozen=True, slots=True)
class _Pipes:
    """A process's streams as pipes: one end copied to or from its FIFOs,
    the other the backend's."""

    stdin_reader: BinaryIO | None
    stdin_writer: BinaryIO | None
    stdout_reader: BinaryIO
    stdout_writer: BinaryIO
    stderr_reader: BinaryIO | None
    stderr_writer: BinaryIO | None

    @classmethod
    def make(cls, with_stdin: bool, terminal: bool) -> _Pipes:
        stdin_reader, stdin_writer = _pipe() if with_stdin else (None, None)
        stdout_reader, stdout_writer = _pipe()
        stderr_reader, stderr_writer = _pipe() if not terminal else (None, None)
        return cls(
            stdin_reader, stdin_writer, stdout_reader, stdout_writer, stderr_reader, stderr_writer
        )

    def streams(self, terminal: bool) -> ProcessStreams:
        return ProcessStreams(self.stdin_writer, self.stdout_reader, self.stderr_reader, terminal)

    def ours(self) -> builtins.list[BinaryIO]:
        ends = (self.stdin_reader, self.stdout_writer, self.stderr_writer)
        return [end for end in ends if end is not None]


def _close_all(files: builtins.list[BinaryIO]) -> None:
    for f in files:
        with contextlib.suppress(OSError):
            f.close()


class RemoteClient:
    """Containers of one namespace, run for a :class:`Backend`; made by
    :meth:`Remote.client`.  Process ids: ``"init"`` (or the container's id)
    is a container's own process, any other the id of an exec."""

    def __init__(
        self, remote: _Supervisor, backend: Backend, namespace: str, backoff: Backoff
    ) -> None:
        namespaces.validate(namespace)
        self.namespace = namespace
        self.backend = backend
        self._remote = remote
        self._backoff = backoff
        self._client = remote.connect(namespace)
        self._containers: dict[str, _Container] = {}
        self._lock = threading.RLock()
        self._deliver = threading.RLock()
        self._closed = threading.Event()
        self._synced = threading.Event()
        self._sync_topic = f"/pycontainerd-remote/sync/{secrets.token_hex(8)}"
        self._generation = 0
        self._thread = threading.Thread(
            target=self._follow_events, name=f"pycontainerd-remote-{namespace}", daemon=True
        )
        self._thread.start()
        # Containers created from here on must not miss an event.
        self._synced.wait(remote.start_timeout)

    @property
    def containerd(self) -> Client:
        """The plain client of the daemon in this namespace (images, content...)."""
        return self._client

    # --- containers ---------------------------------------------------------------

    def create(
        self,
        container_id: str,
        spec: Mapping[str, Any],
        *,
        image: str | None = None,
        snapshotter: str = "",
        runtime: str | None = None,
        runtime_options: any_pb2.Any | None = None,
        labels: Mapping[str, str] | None = None,
        restart_policy: str | RestartPolicy = "no",
    ) -> None:
        """Create the container: ``spec`` is its OCI spec; its root
        filesystem a new snapshot of ``image`` (unpacked first if need be)
        or, without an image, the spec's ``root.path``.  ``runtime_options``
        default to the remote's (its ``runtime_path``)."""
        identifiers.validate(container_id)
        policy = (
            restart_policy
            if isinstance(restart_policy, RestartPolicy)
            else RestartPolicy.parse(restart_policy)
        )
        opts = []
        if image is not None:
            handle = self._client.get_image(image)
            if not handle.is_unpacked(snapshotter):
                handle.unpack(snapshotter)
            opts.append(with_new_snapshot(container_id, handle))
        self._client.new_container(
            container_id,
            *opts,
            labels={**(labels or {}), LABEL_RESTART_POLICY: str(policy)},
            spec=spec,
            runtime=runtime,
            runtime_options=runtime_options
            if runtime_options is not None
            else self._remote.runtime_options(),
            snapshotter=snapshotter or None,
        )
        with self._lock:
            self._containers[container_id] = _Container(
                container_id, RestartManager(policy, self._backoff)
            )

    def start(
        self, container_id: str, *, with_stdin: bool = False, attach_stdio: bool = True
    ) -> int:
        """Create and start the container's task; its pid.  With
        ``attach_stdio`` the backend gets its streams (``attach_streams``)
        before it starts; ``with_stdin`` gives it a stdin to write."""
        c = self._known(container_id)
        with self._lock:
            if c.task is not None and not c.exited:
                raise errdefs.AlreadyExists(f"task {errdefs.q(container_id)}: already running")
            c.with_stdin, c.attach_stdio, c.manually_stopped = with_stdin, attach_stdio, False
            c.restart.restart_count = 0
        return self._start_task(c)

    def _start_task(self, c: _Container) -> int:
        container = self._client.load_container(c.id)
        process = container.spec().get("process") or {}
        terminal = bool(process.get("terminal"))
        closer = cio.StdinCloser()
        creator, streams, closers = self._streams(c.attach_stdio, c.with_stdin, terminal, closer)
        try:
            task = container.new_task(creator)
        except BaseException:
            _close_all(closers)
            if streams is not None:
                _close_all([s for s in (streams.stdin, streams.stdout, streams.stderr) if s])
            raise
        closer.bind(task)
        with self._lock:
            c.task, c.pid, c.exited, c.oom_killed = task, task.pid, False, False
            c.closers, c.started_at = closers, time.monotonic()
        if streams is not None:
            self._call(self.backend.attach_streams, c.id, streams)
        try:
            pid = int(task.start())
        except BaseException:
            with self._lock:
                c.exited = True
            self._collect(task, closers)
            raise
        # Reported here too: the event is lost if the daemon dies right now.
        self._report_start(c.id, pid)
        return pid

    def _report_start(self, container_id: str, pid: int) -> None:
        with self._deliver:
            with self._lock:
                c = self._containers.get(container_id)
                if c is None or c.reported_start == pid:
                    return
                c.reported_start = pid
            self._emit(container_id, StateInfo(EventType.START_CONTAINER, pid))

    def _streams(
        self, attach: bool, with_stdin: bool, terminal: bool, closer: cio.StdinCloser
    ) -> tuple[cio.Creator, ProcessStreams | None, builtins.list[BinaryIO]]:
        """Pipes between the process's FIFOs and the backend: the creator of
        the process's IO, the backend's ends, and ours (closed once the
        process is deleted, so that the backend reads EOF)."""
        if not attach:
            return cio.null_io, None, []
        pipes = _Pipes.make(with_stdin, terminal)
        creator = cio.new_creator(
            stdin=pipes.stdin_reader,
            stdout=pipes.stdout_writer,
            stderr=pipes.stderr_writer,
            terminal=terminal,
            fifo_dir=self._remote.state / "fifo",
            on_stdin_eof=closer,
        )
        return creator, pipes.streams(terminal), pipes.ours()

    def restore(self, container_id: str, *, attach_stdio: bool = True) -> tuple[bool, int]:
        """Take up a container this program ran before it restarted: whether
        its task is alive, and its pid.  A live task is reattached (the
        backend gets ``restore``, and its output streams with
        ``attach_stdio``); one that stopped meanwhile is deleted and
        reported ``exit``, with no restart."""
        container = self._client.load_container(container_id)
        policy = RestartPolicy.parse(container.labels().get(LABEL_RESTART_POLICY, "no"))
        with self._lock:
            c = self._containers.get(container_id)
            if c is None:
                c = self._containers[container_id] = _Container(
                    container_id, RestartManager(policy, self._backoff)
                )
            c.attach_stdio = attach_stdio
        try:
            record = self._client.tasks.get(container_id)
        except errdefs.NotFound:
            return False, 0
        if str(record.status) == "stopped":
            task = container.task()
            with self._lock:
                c.task, c.pid, c.exited, c.closers = task, record.pid, False, []
                c.manually_stopped = True  # what stopped while we were away stays stopped
            self._init_exited(c.id, record.pid, record.exit_status, record.exited_at)
            cio.load_fifos(record.io_config).close()
            return False, record.pid
        streams: ProcessStreams | None = None
        closers: list[BinaryIO] = []
        attach: cio.Attach | None = None
        if attach_stdio:
            pipes = _Pipes.make(False, record.terminal)
            attach = cio.new_attach(stdout=pipes.stdout_writer, stderr=pipes.stderr_writer)
            streams, closers = pipes.streams(record.terminal), pipes.ours()
        task = container.task(attach)
        with self._lock:
            c.task, c.pid, c.exited, c.closers = task, record.pid, False, closers
            c.started_at = time.monotonic()
        self._emit(c.id, StateInfo(EventType.RESTORE, record.pid))
        if streams is not None:
            self._call(self.backend.attach_streams, c.id, streams)
        return True, record.pid

    def delete(self, container_id: str) -> None:
        """Delete the stopped container, its task and its snapshot
        (FailedPrecondition while its task runs; a pending restart is
        called off)."""
        with self._lock:
            c = self._containers.get(container_id)
            if c is not None and c.task is not None and not c.exited:
                raise errdefs.FailedPrecondition(
                    f"container {errdefs.q(container_id)}: cannot delete a running task"
                )
        container = self._client.load_container(container_id)
        task = None
        with contextlib.suppress(errdefs.NotFound):
            task = container.task()
        if task is not None and str(task.status().status) not in ("stopped", "created", "unknown"):
            raise errdefs.FailedPrecondition(
                f"container {errdefs.q(container_id)}: cannot delete a running task"
            )
        if c is not None:
            with self._lock:
                c.deleted = True
                timer, c.timer = c.timer, None
            if timer is not None:
                timer.cancel()
        if task is not None:
            with contextlib.suppress(errdefs.NotFound):
                task.delete()
        container.delete(cleanup_snapshot=True)
        with self._lock:
            self._containers.pop(container_id, None)

    # --- processes ----------------------------------------------------------------

    def _known(self, container_id: str) -> _Container:
        with self._lock:
            c = self._containers.get(container_id)
        if c is None:
            raise errdefs.NotFound(
                f"container {errdefs.q(container_id)} in namespace "
                f"{errdefs.q(self.namespace)}: not created or restored by this client"
            )
        return c

    def _task(self, container_id: str) -> Any:
        c = self._known(container_id)
        with self._lock:
            task = c.task if not c.exited else None
        if task is None:
            raise errdefs.NotFound(f"no running task found: task {errdefs.q(container_id)}")
        return task

    def _process(self, container_id: str, process_id: str) -> Any:
        if process_id in (INIT_PROCESS_ID, container_id):
            return self._task(container_id)
        c = self._known(container_id)
        with self._lock:
            ex = c.execs.get(process_id)
        if ex is None:
            raise errdefs.NotFound(
                f"process {errdefs.q(process_id)} of container {errdefs.q(container_id)}"
            )
        return ex.process

    def signal(self, container_id: str, sig: int | str, *, stop: bool | None = None) -> None:
        """Signal the container's init process.  A stop (``stop``; by default
        SIGKILL, SIGTERM or SIGINT) marks it stopped by the user: no restart
        policy restarts it after (a restart waiting for its backoff is called
        off, and reported ``exit``)."""
        number = _signal_number(sig)
        c = self._known(container_id)
        stopping = stop if stop is not None else number in STOP_SIGNALS
        if stopping and self._call_off_restart(c):
            return
        self._task(container_id).kill(number)

    def _call_off_restart(self, c: _Container) -> bool:
        """Mark ``c`` stopped by the user; whether a pending restart was called off."""
        with self._lock:
            c.manually_stopped = True
            timer, c.timer = c.timer, None
            last = c.last_exit
        if timer is None:
            return False
        timer.cancel()
        if last is not None:
            self._emit(c.id, dataclasses.replace(last, state=EventType.EXIT))
        return True

    def stop(self, container_id: str, timeout: float = 10.0) -> None:
        """Stop the container as the user: SIGTERM, SIGKILL after ``timeout``
        seconds; no policy restarts it.  Returns once its exit was reported
        (a restart waiting for its backoff is called off, and reported ``exit``)."""
        c = self._known(container_id)
        if self._call_off_restart(c):
            return
        with self._lock:
            task = c.task if not c.exited else None
        if task is None:
            return
        with contextlib.suppress(errdefs.NotFound, errdefs.FailedPrecondition):
            task.kill(signals.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = False
        while True:
            with self._lock:
                if c.exited or c.task is not task:
                    return
            if not killed and time.monotonic() > deadline:
                with contextlib.suppress(errdefs.NotFound, errdefs.FailedPrecondition):
                    task.kill(signals.SIGKILL, all=True)
                killed = True
            time.sleep(0.02)

    def signal_process(self, container_id: str, process_id: str, sig: int | str) -> None:
        """Signal one process of the container (an exec, or ``init``)."""
        self._process(container_id, process_id).kill(sig)

    def add_process(
        self,
        container_id: str,
        process_id: str,
        spec: Mapping[str, Any],
        *,
        with_stdin: bool = False,
        attach_stdio: bool = True,
    ) -> int:
        """Run another process in the container (an exec) with the OCI
        process ``spec``; its pid.  Reported ``start-process``, then
        ``exit-process``, under ``process_id``."""
        identifiers.validate(process_id)
        c = self._known(container_id)
        task = self._task(container_id)
        closer = cio.StdinCloser()
        creator, streams, closers = self._streams(
            attach_stdio, with_stdin, bool(spec.get("terminal")), closer
        )
        try:
            process = task.exec(process_id, spec, creator)
        except BaseException:
            _close_all(closers)
            raise
        closer.bind(process)
        with self._lock:
            c.execs[process_id] = _Exec(process, closers)
        if streams is not None:
            self._call(self.backend.attach_streams, process_id, streams)
        try:
            pid = int(process.start())
        except BaseException:
            with self._lock:
                c.execs.pop(process_id, None)
            with contextlib.suppress(errdefs.ContainerdError):
                process.delete()
            _close_all(closers)
            raise
        self._report_exec_start(container_id, process_id, pid)
        return pid

    def _report_exec_start(self, container_id: str, exec_id: str, pid: int) -> None:
        with self._deliver:
            with self._lock:
                c = self._containers.get(container_id)
                ex = c.execs.get(exec_id) if c is not None else None
                if ex is None or ex.reported_start:
                    return
                ex.reported_start = True
            info = StateInfo(EventType.START_PROCESS, pid, process_id=exec_id)
            self._emit(container_id, info)

    def resize(self, container_id: str, process_id: str, width: int, height: int) -> None:
        """Resize a process's terminal."""
        self._process(container_id, process_id).resize(width, height)

    def close_stdin(self, container_id: str, process_id: str) -> None:
        """Close a process's stdin (it reads EOF)."""
        self._process(container_id, process_id).close_io(stdin=True)

    def pause(self, container_id: str) -> None:
        self._task(container_id).pause()

    def resume(self, container_id: str) -> None:
        self._task(container_id).resume()

    def stats(self, container_id: str) -> Stats:
        metric = self._task(container_id).metrics()
        return Stats(metric.timestamp, metric.data.type_url, metric.data.value)

    def get_pids(self, container_id: str) -> builtins.list[int]:
        """The host pids of the container's processes."""
        return [p.pid for p in self._task(container_id).pids()]

    def summary(self, container_id: str) -> builtins.list[ProcessSummary]:
        """The container's processes, with the runtime's details of each."""
        return [
            ProcessSummary(p.pid, p.info.type_url, p.info.value)
            if p.info is not None
            else ProcessSummary(p.pid)
            for p in self._task(container_id).pids()
        ]

    def update_resources(self, container_id: str, resources: Mapping[str, Any]) -> None:
        """Change the running container's resources (an OCI ``LinuxResources``
        mapping: ``{"memory": {"limit": 1 << 28}}``)."""
        self._task(container_id).update(resources=resources)

    # --- callbacks ----------------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        with self._deliver:
            try:
                fn(*args)
            except Exception:
                log.exception("backend callback failed", extra={"callback": fn.__name__})

    def _emit(self, container_id: str, info: StateInfo) -> None:
        self._call(self.backend.state_changed, container_id, info)

    def _collect(self, task: Any, closers: builtins.list[BinaryIO]) -> None:
        """Delete a stopped task or exec (its output drained), then end the
        backend's streams."""
        try:
            task.delete()
        except errdefs.NotFound:
            io = task.io
            if io is not None:
                io.cancel()
                io.close()
        except errdefs.ContainerdError as exc:
            log.warning("deleting %r failed: %s", task, exc)
        _close_all(closers)

    def _init_exited(
        self, container_id: str, pid: int, code: int, exited_at: dt.datetime | None
    ) -> None:
        with self._lock:
            c = self._containers.get(container_id)
            if c is None or c.task is None or c.exited or (pid and c.pid and pid != c.pid):
                return
            c.exited = True
            task, closers, c.closers = c.task, c.closers, []
            execs, c.execs = c.execs, {}
            if self._closed.is_set() or c.deleted:
                restart, delay = False, 0.0
            else:
                restart, delay = c.restart.should_restart(
                    code, c.manually_stopped, time.monotonic() - c.started_at
                )
            info = StateInfo(
                EventType.RESTART if restart else EventType.EXIT,
                pid,
                code,
                exited_at,
                c.oom_killed,
                INIT_PROCESS_ID,
            )
            c.last_exit = info
        for ex in execs.values():
            _close_all(ex.closers)
        self._collect(task, closers)
        self._emit(container_id, info)
        if restart:
            with self._lock:
                c.timer = threading.Timer(delay, self._restart, (c,))
                c.timer.daemon = True
                c.timer.start()

    def _restart(self, c: _Container) -> None:
        with self._lock:
            if c.timer is not threading.current_thread():
                return  # called off (stop, delete, close) as it fired
            c.timer = None
            cancelled = self._closed.is_set() or c.deleted or c.manually_stopped
        last = c.last_exit or StateInfo(EventType.EXIT)
        if not cancelled:
            try:
                self._start_task(c)
                return
            except errdefs.ContainerdError as exc:
                log.error("restarting %s failed: %s", c.id, exc)
        if not c.deleted:
            self._emit(
                c.id,
                StateInfo(
                    EventType.EXIT, last.pid, last.exit_code, last.exited_at, last.oom_killed
                ),
            )

    def _exec_exited(
        self, container_id: str, exec_id: str, pid: int, code: int, exited_at: dt.datetime | None
    ) -> None:
        with self._lock:
            c = self._containers.get(container_id)
            ex = c.execs.get(exec_id) if c is not None else None
            if c is None or ex is None or ex.exited:
                return
            ex.exited = True
            c.execs.pop(exec_id, None)
        self._collect(ex.process, ex.closers)
        self._emit(
            container_id, StateInfo(EventType.EXIT_PROCESS, pid, code, exited_at, False, exec_id)
        )

    def _handle(self, envelope: Envelope) -> None:
        topic, value = envelope.topic, envelope.event.value
        if topic == "/tasks/exit":
            e = task_events.TaskExit.FromString(value)
            if e.id in ("", e.container_id):
                self._init_exited(e.container_id, e.pid, e.exit_status, _time(e.exited_at))
            else:
                self._exec_exited(e.container_id, e.id, e.pid, e.exit_status, _time(e.exited_at))
            return
        if topic == "/tasks/start":
            start = task_events.TaskStart.FromString(value)
            self._report_start(start.container_id, start.pid)
            return
        if topic == "/tasks/exec-started":
            ex = task_events.TaskExecStarted.FromString(value)
            self._report_exec_start(ex.container_id, ex.exec_id, ex.pid)
            return
        if topic == "/tasks/oom":
            cid = task_events.TaskOOM.FromString(value).container_id
            with self._lock:
                c = self._containers.get(cid)
                if c is None:
                    return
                c.oom_killed = True
                info = StateInfo(EventType.OOM, c.pid, oom_killed=True)
        elif topic == "/tasks/paused":
            cid = task_events.TaskPaused.FromString(value).container_id
            info = StateInfo(EventType.PAUSE, self._pid(cid))
        elif topic == "/tasks/resumed":
            cid = task_events.TaskResumed.FromString(value).container_id
            info = StateInfo(EventType.RESUME, self._pid(cid))
        else:
            return
        with self._lock:
            if cid not in self._containers:
                return
        self._emit(cid, info)

    def _pid(self, container_id: str) -> int:
        with self._lock:
            c = self._containers.get(container_id)
            return c.pid if c is not None else 0

    # --- the event stream ---------------------------------------------------------

    def _follow_events(self) -> None:
        delay = 0.0
        while not self._closed.is_set():
            try:
                if self._follow_once():
                    delay = 0.0
            except Exception:
                log.exception("following the events of %s failed", self.namespace)
            delay = self._backoff.next(delay) if delay else min(0.05, self._backoff.initial)
            if self._closed.wait(min(delay, 1.0)):
                return

    def _follow_once(self) -> bool:
        """Follow one subscription until it ends; whether it got live."""
        self._generation += 1
        token = str(self._generation)
        events: queue.Queue[Envelope | None] = queue.Queue()
        stream = self._client.events.subscribe(
            f'namespace=="{self.namespace}",topic~="^/tasks/"',
            f'namespace=="{self.namespace}",topic=="{self._sync_topic}"',
        )
        reader = threading.Thread(
            target=self._read,
            args=(stream, events),
            name="pycontainerd-remote-events",
            daemon=True,
        )
        reader.start()
        synced = False
        next_sync = 0.0
        while not self._closed.is_set():
            if not synced and time.monotonic() >= next_sync:
                with contextlib.suppress(errdefs.ContainerdError):
                    self._client.events.publish(
                        self._sync_topic, wrappers_pb2.StringValue(value=token)
                    )
                next_sync = time.monotonic() + SYNC_INTERVAL
            try:
                envelope = events.get(timeout=0.05 if not synced else 0.5)
            except queue.Empty:
                continue
            if envelope is None:
                return synced
            if envelope.topic == self._sync_topic:
                if (
                    not synced
                    and wrappers_pb2.StringValue.FromString(envelope.event.value).value == token
                ):
                    synced = True
                    self._reconcile()
                    self._synced.set()
                continue
            try:
                self._handle(envelope)
            except Exception:
                log.exception("handling %s failed", envelope.topic)
        return synced

    @staticmethod
    def _read(stream: Iterator[Envelope], into: queue.Queue[Envelope | None]) -> None:
        try:
            for envelope in stream:
                into.put(envelope)
        except Exception as exc:
            log.debug("event subscription ended: %s", exc)
        finally:
            into.put(None)

    def _reconcile(self) -> None:
        """Report what exited while the subscription was down."""
        with self._lock:
            running = [
                (c.id, c.pid, list(c.execs))
                for c in self._containers.values()
                if c.task is not None and not c.exited
            ]
        for container_id, pid, exec_ids in running:
            for exec_id in exec_ids:
                try:
                    record = self._client.tasks.get(container_id, exec_id)
                except errdefs.NotFound:
                    self._exec_exited(container_id, exec_id, 0, UNKNOWN_EXIT_STATUS, None)
                    continue
                except errdefs.ContainerdError as exc:
                    log.warning("reconciling %s/%s: %s", container_id, exec_id, exc)
                    continue
                if str(record.status) == "stopped":
                    self._exec_exited(
                        container_id, exec_id, record.pid, record.exit_status, record.exited_at
                    )
            try:
                record = self._client.tasks.get(container_id)
            except errdefs.NotFound:
                self._init_exited(container_id, pid, UNKNOWN_EXIT_STATUS, dt.datetime.now(dt.UTC))
                continue
            except errdefs.ContainerdError as exc:
                log.warning("reconciling %s: %s", container_id, exc)
                continue
            if str(record.status) == "stopped":
                self._init_exited(container_id, pid, record.exit_status, record.exited_at)

    # --- the end ------------------------------------------------------------------

    def kill_all(self) -> None:
        """Kill and delete every task of the namespace (as the user's stop:
        none is restarted); the exits of this client's are reported."""
        with self._lock:
            for c in self._containers.values():
                c.manually_stopped = True
                if c.timer is not None:
                    c.timer.cancel()
                    c.timer = None
        for record in self._client.tasks.list():
            container_id = record.id or record.container_id
            try:
                task = self._client.load_container(container_id).task()
                with contextlib.suppress(errdefs.FailedPrecondition):
                    task.kill(signals.SIGKILL, all=True)
                status = task.wait()
            except errdefs.NotFound:
                continue
            with self._lock:
                mine = container_id in self._containers
            if mine:
                self._init_exited(container_id, record.pid, status.code, status.exited_at)
            with contextlib.suppress(errdefs.NotFound):
                task.delete()

    def close(self) -> None:
        """Stop following events; the containers are left as they are."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            containers = list(self._containers.values())
            for c in containers:
                if c.timer is not None:
                    c.timer.cancel()
        self._client.close()
        # What still runs is left running; only this program's ends of its IO
        # go: the copies stop, and the FIFOs stay for a restore() to reopen.
        for c in containers:
            with self._lock:
                handles = [(c.task, c.closers), *((e.process, e.closers) for e in c.execs.values())]
                c.closers, c.execs = [], {}
            for process, closers in handles:
                io = process.io if process is not None else None
                if io is not None:
                    io.cancel()
                _close_all(closers)
        self._thread.join(10)
        self._remote._forget(self)

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
