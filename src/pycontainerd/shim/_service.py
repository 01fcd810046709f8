"""``containerd.task.v2.Task``: the containers one shim server holds.

Each container is an independent record (its runc, its init and exec
processes, its IO copies, its cgroup watch); a request touches only its
own container, and a failure in one (a runc error, a broken fifo) is an
error answer for that request, never the server's.  Lifecycle calls on
one container are serialized by its lock; Wait, State and Stats are not.

Errors are answered with the gRPC codes containerd maps back into its
errdefs (NotFound, AlreadyExists, FailedPrecondition, InvalidArgument,
Unknown for what runc said).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from pycontainerd import mount, ttrpc
from pycontainerd.api.events import task_pb2 as events
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.api.types.task import task_pb2
from pycontainerd.shim import _layout as entry
from pycontainerd.shim._cgroups import Cgroup
from pycontainerd.shim._io import ConsoleSocket, ProcessIO
from pycontainerd.shim._publisher import NAMESPACE_HEADER, Publisher
from pycontainerd.shim._reaper import Exit, Reaper
from pycontainerd.shim._runc import Runc, RuncError

__all__ = ["TASK_SERVICE", "TaskService"]

log = logging.getLogger(__name__)

TASK_SERVICE = "containerd.task.v2.Task"
OPTIONS_URLS = ("containerd.runc.v1.Options", "type.googleapis.com/containerd.runc.v1.Options")
PROCESS_DETAILS_URL = "containerd.runc.v1.ProcessDetails"
#: containerd's identifier rule, which keeps exec ids safe as file names.
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
#: How long Delete waits for a process's output to drain (the Go shim's 2 s).
DRAIN_TIMEOUT = 2.0

CREATED = task_pb2.CREATED
RUNNING = task_pb2.RUNNING
STOPPED = task_pb2.STOPPED
PAUSED = task_pb2.PAUSED
PAUSING = task_pb2.PAUSING


def _not_found(what: str) -> ttrpc.StatusError:
    return ttrpc.StatusError(ttrpc.Code.NOT_FOUND, f"{what}: not found")


def _precondition(message: str) -> ttrpc.StatusError:
    return ttrpc.StatusError(ttrpc.Code.FAILED_PRECONDITION, message)


def _invalid(message: str) -> ttrpc.StatusError:
    return ttrpc.StatusError(ttrpc.Code.INVALID_ARGUMENT, message)


def _identifier(value: str, what: str) -> str:
    if len(value) > 76 or not _IDENTIFIER.fullmatch(value):
        raise _invalid(f"{what} {value!r} is not a valid identifier")
    return value


def _stamp(message: Any, time_ns: int) -> None:
    if time_ns:
        message.seconds, message.nanos = divmod(time_ns, 1_000_000_000)


@dataclass(eq=False)
class Process:
    """The container's init (``exec_id == ""``) or one of its execs."""

    container: Container
    exec_id: str
    io: ProcessIO
    spec: bytes = b""  # an exec's OCI process, JSON
    pid: int = 0
    status: int = CREATED
    exit_status: int = 0
    exited_ns: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.exec_id or self.container.id


@dataclass(eq=False)
class Container:
    id: str
    namespace: str
    bundle: str
    runc: Runc
    options: oci_pb2.Options
    rootfs_mounted: bool = False
    init: Process | None = None
    execs: dict[str, Process] = field(default_factory=dict)
    cgroup: Cgroup | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: While a Start runs, exits wait here: the start event goes out first
    #: (a process may exit before ``runc start`` has returned).
    held_exits: list[Message] | None = None
    #: The init shares a pid namespace (the host's or another's): when it
    #: exits, what it leaves there is killed (as the Go shim does).
    kill_all_on_exit: bool = False
    #: That kill while it runs: ``runc kill --all`` freezes the cgroup, and a
    #: ``runc delete`` meanwhile would find the container paused.
    killing: asyncio.Future[None] | None = None
    #: The spec has poststop hooks: runc runs them in ``delete``, which
    #: must then finish before Delete answers.
    poststop_hooks: bool = False

    def process(self, exec_id: str) -> Process:
        if not exec_id:
            assert self.init is not None
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise _not_found(f"process {exec_id}") from None


class TaskService:
    def __init__(
        self,
        *,
        namespace: str,
        publisher: Publisher,
        on_empty: Callable[[], None],
        on_busy: Callable[[], None],
    ) -> None:
        self.default_namespace = namespace
        self.publisher = publisher
        self.reaper = Reaper(self._on_exit)
        self.containers: dict[str, Container] = {}
        self._by_pid: dict[int, Process] = {}
        self._on_empty = on_empty
        self._on_busy = on_busy
        self._background: set[asyncio.Future[None]] = set()
        #: ``runc delete`` of exited containers, run after Delete answered
        #: (keyed by runc root and id): a Create of the same id waits for it.
        self._deleting: dict[tuple[str, str], asyncio.Future[None]] = {}
        #: Set once the server leaves: a Create then would land in a dying server.
        self.closing = False

    def register(self, server: ttrpc.Server) -> None:
        methods: dict[str, tuple[type[Message], Callable[[Any, str], Awaitable[Message]]]] = {
            "State": (shim_pb2.StateRequest, self.state),
            "Create": (shim_pb2.CreateTaskRequest, self.create),
            "Start": (shim_pb2.StartRequest, self.start),
            "Delete": (shim_pb2.DeleteRequest, self.delete),
            "Pids": (shim_pb2.PidsRequest, self.pids),
            "Pause": (shim_pb2.PauseRequest, self.pause),
            "Resume": (shim_pb2.ResumeRequest, self.resume),
            "Checkpoint": (shim_pb2.CheckpointTaskRequest, self.checkpoint),
            "Kill": (shim_pb2.KillRequest, self.kill),
            "Exec": (shim_pb2.ExecProcessRequest, self.exec),
            "ResizePty": (shim_pb2.ResizePtyRequest, self.resize_pty),
            "CloseIO": (shim_pb2.CloseIORequest, self.close_io),
            "Update": (shim_pb2.UpdateTaskRequest, self.update),
            "Wait": (shim_pb2.WaitRequest, self.wait),
            "Stats": (shim_pb2.StatsRequest, self.stats),
            "Connect": (shim_pb2.ConnectRequest, self.connect),
            "Shutdown": (shim_pb2.ShutdownRequest, self.shutdown),
        }
        for name, (request_type, handler) in methods.items():
            server.register(TASK_SERVICE, name, _adapt(name, request_type, handler))
        server.register(
            entry.CLEANUP_SERVICE, "Delete", _adapt("Cleanup", shim_pb2.DeleteRequest, self.cleanup)
        )

    # --- helpers ---------------------------------------------------------------------------

    def _container(self, container_id: str) -> Container:
        try:
            return self.containers[container_id]
        except KeyError:
            raise _not_found(f"container {container_id}") from None

    def _publish(self, container: Container, event: Message) -> None:
        self.publisher.publish(container.namespace, event)

    def _on_exit(self, event: Exit) -> bool:
        process = self._by_pid.pop(event.pid, None)
        if process is None:
            return False
        self._set_exited(process, event.status, event.time_ns)
        return True

    def _set_exited(self, process: Process, status: int, time_ns: int) -> None:
        if process.exited.is_set():
            return
        process.status = STOPPED
        process.exit_status = status
        process.exited_ns = time_ns
        process.exited.set()
        container = process.container
        if not process.exec_id and container.kill_all_on_exit:
            # The init is gone, but its pid namespace is not its own: kill
            # what it may have left there, as the Go shim does.  (With a pid
            # namespace of its own, the kernel has killed them already.)
            task = asyncio.ensure_future(self._kill_all(container))
            container.killing = task
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        exit_event = events.TaskExit(
            container_id=container.id,
            id=process.id,
            pid=process.pid,
            exit_status=status,
            exited_at=_timestamp(time_ns),
        )
        if container.held_exits is not None:
            container.held_exits.append(exit_event)
        else:
            self._publish(container, exit_event)

    async def _kill_all(self, container: Container) -> None:
        with contextlib.suppress(RuncError):
            await container.runc.kill(container.id, signal.SIGKILL, all=True)

    def _track(self, process: Process, pid: int) -> None:
        process.pid = pid
        early = self.reaper.claim(pid)
        if early is not None:
            self._set_exited(process, early.status, early.time_ns)
        else:
            self._by_pid[pid] = process

    # --- Create, Start ------------------------------------------------------------------------

    async def create(self, request: shim_pb2.CreateTaskRequest, namespace: str) -> Message:
        container_id = _identifier(request.id, "container id")
        namespace = _identifier(namespace or self.default_namespace, "namespace")
        if self.closing:
            raise ttrpc.StatusError(ttrpc.Code.UNAVAILABLE, "shim is shutting down")
        if container_id in self.containers:
            raise ttrpc.StatusError(
                ttrpc.Code.ALREADY_EXISTS, f"container {container_id}: already exists"
            )
        if request.checkpoint:
            # runc restore needs CRIU, which could not run where this shim was
            # written: the restore path was never proved, so it is not offered.
            raise ttrpc.StatusError(
                ttrpc.Code.UNIMPLEMENTED,
                f"task {container_id}: restoring from a checkpoint (runc restore with CRIU) "
                "is not implemented by this shim",
            )
        bundle = os.path.abspath(request.bundle)
        options = oci_pb2.Options()
        if request.HasField("options") and request.options.type_url in OPTIONS_URLS:
            options.ParseFromString(request.options.value)
        runc_root = os.path.join(options.root or entry.RUNC_ROOT, namespace)
        runc = Runc(
            self.reaper,
            options.binary_name or "runc",
            runc_root,
            os.path.join(bundle, "log.json"),
            systemd_cgroup=options.systemd_cgroup,
            criu=options.criu_path,
        )
        container = Container(container_id, namespace, bundle, runc, options)
        container.kill_all_on_exit, container.poststop_hooks = _spec_facts(bundle)
        self.containers[container_id] = container
        self._on_busy()
        try:
            async with container.lock:
                behind = self._deleting.get((runc_root, container_id))
                if behind is not None:
                    # The last container of this id is still leaving runc's root.
                    await asyncio.shield(behind)
                pid = await self._create(container, request)
        except BaseException:
            self.containers.pop(container_id, None)
            if not self.containers:
                self._on_empty()
            raise
        self._publish(
            container,
            events.TaskCreate(
                container_id=container_id,
                bundle=bundle,
                rootfs=list(request.rootfs),
                io=events.TaskIO(
                    stdin=request.stdin,
                    stdout=request.stdout,
                    stderr=request.stderr,
                    terminal=request.terminal,
                ),
                checkpoint=request.checkpoint,
                pid=pid,
            ),
        )
        return shim_pb2.CreateTaskResponse(pid=pid)

    async def _create(self, container: Container, request: shim_pb2.CreateTaskRequest) -> int:
        bundle = container.bundle
        options = container.options
        _write_options(bundle, options)
        rootfs = os.path.join(bundle, "rootfs")
        if request.rootfs:
            os.makedirs(rootfs, mode=0o711, exist_ok=True)
            mounts = [
                mount.Mount(type=m.type, source=m.source, options=tuple(m.options), target=m.target)
                for m in request.rootfs
            ]
            await asyncio.to_thread(mount.mount_all, mounts, rootfs)
            container.rootfs_mounted = True
        io = ProcessIO(
            request.stdin,
            request.stdout,
            request.stderr,
            terminal=request.terminal,
            uid=options.io_uid,
            gid=options.io_gid,
        )
        init = Process(container, "", io)
        console: ConsoleSocket | None = None
        try:
            stdio = await io.open(self.reaper, container.id, container.namespace)
            if request.terminal:
                console = ConsoleSocket()
            pid_file = os.path.join(bundle, entry.INIT_PID_FILE)
            try:
                await container.runc.create(
                    container.id,
                    bundle,
                    pid_file,
                    stdio,
                    console_socket=console.path if console else "",
                    no_pivot=options.no_pivot_root,
                    no_new_keyring=options.no_new_keyring,
                )
            except RuncError as exc:
                raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(exc)) from None
            finally:
                io.started()
            if console is not None:
                io.attach_console(await console.receive())
            pid = int(Path(pid_file).read_text().strip())
        except BaseException:
            io.close()
            if container.rootfs_mounted:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(mount.unmount_all, rootfs)
                container.rootfs_mounted = False
            raise
        finally:
            if console is not None:
                console.close()
        container.init = init
        self._track(init, pid)
        container.cgroup = Cgroup(pid)
        container.cgroup.watch_oom(
            lambda: self._publish(container, events.TaskOOM(container_id=container.id))
        )
        return pid

    async def start(self, request: shim_pb2.StartRequest, namespace: str) -> Message:
        container = self._container(request.id)
        async with container.lock:
            process = container.process(request.exec_id)
            if process.status != CREATED or process.exited.is_set():
                raise _precondition(f"process {process.id} is not in the created state")
            container.held_exits = []
            try:
                if not process.exec_id:
                    try:
                        await container.runc.start(container.id, exited=process.exited)
                    except RuncError as exc:
                        raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(exc)) from None
                    if not process.exited.is_set():
                        process.status = RUNNING
                    started: Message = events.TaskStart(container_id=container.id, pid=process.pid)
                else:
                    await self._start_exec(container, process)
                    started = events.TaskExecStarted(
                        container_id=container.id, exec_id=process.exec_id, pid=process.pid
                    )
                self._publish(container, started)
            finally:
                held, container.held_exits = container.held_exits, None
                for event in held:
                    self._publish(container, event)
        return shim_pb2.StartResponse(pid=process.pid)

    async def _start_exec(self, container: Container, process: Process) -> None:
        init = container.init
        if init is None or init.exited.is_set():
            raise _precondition(f"container {container.id} is not running")
        spec_file = os.path.join(container.bundle, f".exec-{process.exec_id}.json")
        pid_file = os.path.join(container.bundle, f".exec-{process.exec_id}.pid")
        console: ConsoleSocket | None = None
        try:
            Path(spec_file).write_bytes(process.spec)
            stdio = await process.io.open(self.reaper, container.id, container.namespace)
            if process.io.terminal:
                console = ConsoleSocket()
            try:
                await container.runc.exec(
                    container.id,
                    spec_file,
                    pid_file,
                    stdio,
                    console_socket=console.path if console else "",
                )
            except RuncError as exc:
                raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(exc)) from None
            finally:
                process.io.started()
            if console is not None:
                process.io.attach_console(await console.receive())
            pid = int(Path(pid_file).read_text().strip())
        except BaseException:
            process.io.close()
            raise
        finally:
            if console is not None:
                console.close()
            for path in (spec_file, pid_file):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        process.status = RUNNING
        self._track(process, pid)

    # --- Delete -------------------------------------------------------------------------------

    async def delete(self, request: shim_pb2.DeleteRequest, namespace: str) -> Message:
        container = self._container(request.id)
        async with container.lock:
            process = container.process(request.exec_id)
            if process.status in (RUNNING, PAUSED, PAUSING) and not process.exited.is_set():
                raise _precondition(f"cannot delete a running process {process.id}")
            return await self._delete(container, process)

    async def _delete(self, container: Container, process: Process) -> shim_pb2.DeleteResponse:
        await process.io.drained(DRAIN_TIMEOUT)
        process.io.close()
        if process.exec_id:
            container.execs.pop(process.exec_id, None)
            self._by_pid.pop(process.pid, None)
        else:
            if container.killing is not None:
                await asyncio.shield(container.killing)
            if (
                process.exited.is_set()
                and not container.kill_all_on_exit
                and not container.poststop_hooks
            ):
                # Nothing of it runs any more and no hook waits: what ``runc
                # delete`` has left to do (its cgroups, its state directory)
                # goes on after the answer -- it is a fifth of ``ctr run``.
                self._delete_behind(container)
            else:
                try:
                    await container.runc.delete(container.id, force=not process.exited.is_set())
                except RuncError as exc:
                    if "does not exist" not in str(exc) and "not found" not in str(exc):
                        raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(exc)) from None
            for exec_process in container.execs.values():
                exec_process.io.close()
                self._by_pid.pop(exec_process.pid, None)
            if container.cgroup is not None:
                container.cgroup.close()
            if container.rootfs_mounted:
                try:
                    await asyncio.to_thread(
                        mount.unmount_all, os.path.join(container.bundle, "rootfs")
                    )
                except Exception as exc:
                    raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, f"unmount rootfs: {exc}") from None
                container.rootfs_mounted = False
            self._by_pid.pop(process.pid, None)
            self.containers.pop(container.id, None)
            if not process.exited.is_set():
                # Deleted before it ran (or ever exited): it exits now.
                process.exit_status, process.exited_ns = 128 + signal.SIGKILL, time.time_ns()
                process.status = STOPPED
                process.exited.set()
            self._publish(
                container,
                events.TaskDelete(
                    container_id=container.id,
                    pid=process.pid,
                    exit_status=process.exit_status,
                    exited_at=_timestamp(process.exited_ns),
                ),
            )
            if not self.containers:
                self._on_empty()
        response = shim_pb2.DeleteResponse(pid=process.pid, exit_status=process.exit_status)
        _stamp(response.exited_at, process.exited_ns)
        return response

    def _delete_behind(self, container: Container) -> None:
        """``runc delete`` of an exited container, in the background.  It logs
        to /dev/null: the daemon removes the bundle (and its ``log.json``)
        once Delete has answered."""
        key = (container.runc.root, container.id)
        runc = replace(container.runc, log=os.devnull)

        async def delete() -> None:
            try:
                await runc.delete(container.id)
            except RuncError as exc:
                if "does not exist" not in str(exc) and "not found" not in str(exc):
                    log.warning("runc delete %s: %s", container.id, exc)

        pending = asyncio.ensure_future(delete())
        self._deleting[key] = pending

        def done(future: asyncio.Future[None]) -> None:
            if self._deleting.get(key) is future:
                del self._deleting[key]

        pending.add_done_callback(done)

    async def settle(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for the ``runc delete`` runs still
        going on, so that the server does not leave state behind."""
        pending = list(self._deleting.values())
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def cleanup(self, request: shim_pb2.DeleteRequest, namespace: str) -> Message:
        """``delete``'s call: the daemon lost this container's connection, so
        end it here (SIGKILL, wait a little) and delete it."""
        container = self._container(request.id)
        init = container.process("")
        if not init.exited.is_set():
            with contextlib.suppress(RuncError):
                await container.runc.kill(container.id, signal.SIGKILL, all=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await init.exited.wait()
        async with container.lock:
            if container.id not in self.containers:
                raise _not_found(f"container {container.id}")
            return await self._delete(container, init)

    # --- signals, state -----------------------------------------------------------------------

    async def kill(self, request: shim_pb2.KillRequest, namespace: str) -> Message:
        container = self._container(request.id)
        process = container.process(request.exec_id)
        if process.exited.is_set() and not request.all:
            raise _not_found(f"process {process.id} already finished")
        if process.exec_id:
            if not process.pid:
                raise _precondition(f"process {process.id} has not started")
            try:
                os.kill(process.pid, request.signal)
            except ProcessLookupError:
                raise _not_found(f"process {process.id} already finished") from None
        else:
            try:
                await container.runc.kill(container.id, request.signal, all=request.all)
            except RuncError as exc:
                if process.exited.is_set() or "not running" in str(exc):
                    raise _not_found(f"process {process.id} already finished") from None
                raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(exc)) from None
        return empty_pb2.Empty()

    async def state(self, request: shim_pb2.StateRequest, namespace: str) -> Message:
        container = self._container(request.id)
        process = container.process(request.exec_id)
        response = shim_pb2.StateResponse(
            id=container.id if not request.exec_id else process.exec_id,
            bundle=container.bundle,
            pid=process.pid,
            status=process.status,  # type: ignore[arg-type]  # the enum's int value
            stdin=process.io.stdin,
            stdout=process.io.stdout,
            stderr=process.io.stderr,
            terminal=process.io.terminal,
            exit_status=process.exit_status,
            exec_id=process.exec_id,
        )
        _stamp(response.exited_at, process.exited_ns)
        return response

    async def wait(self, request: shim_pb2.WaitRequest, namespace: str) -> Message:
        container = self._container(request.id)
        process = container.process(request.exec_id)
        await process.exited.wait()
        response = shim_pb2.WaitResponse(exit_status=process.exit_status)
        _stamp(response.exited_at, process.exited_ns)
        return response

    async def pids(self, request: shim_pb2.PidsRequest, namespace: str) -> Message:
        container = self._container(request.id)
        try:
            pids = await container.runc.ps(container.id)
        except RuncError as exc:
            raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(exc)) from None
        by_pid = {p.pid: p.exec_id for p in container.execs.values() if p.pid}
        response = shim_pb2.PidsResponse()
        for pid in pids:
            info = response.processes.add(pid=pid)
            if pid in by_pid:
                details = oci_pb2.ProcessDetails(exec_id=by_pid[pid])
                info.info.CopyFrom(
                    any_pb2.Any(type_url=PROCESS_DETAILS_URL, value=details.SerializeToString())
                )
        return response

    async def pause(self, request: shim_pb2.PauseRequest, namespace: str) -> Message:
        container = self._container(request.id)
        async with container.lock:
            init = container.process("")
            if init.status != RUNNING or init.exited.is_set():
                raise _precondition(f"container {container.id} is not running")
            init.status = PAUSING
            try:
                await container.runc.pause(container.id)
            except RuncError as exc:
                init.status = RUNNING
                raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(exc)) from None
            init.status = PAUSED
        self._publish(container, events.TaskPaused(container_id=container.id))
        return empty_pb2.Empty()

    async def resume(self, request: shim_pb2.ResumeRequest, namespace: str) -> Message:
        container = self._container(request.id)
        async with container.lock:
            init = container.process("")
            if init.status != PAUSED:
                raise _precondition(f"container {container.id} is not paused")
            try:
                await container.runc.resume(container.id)
            except RuncError as exc:
                raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(exc)) from None
            init.status = RUNNING
        self._publish(container, events.TaskResumed(container_id=container.id))
        return empty_pb2.Empty()

    async def checkpoint(self, request: shim_pb2.CheckpointTaskRequest, namespace: str) -> Message:
        container = self._container(request.id)
        options = oci_pb2.CheckpointOptions()
        if request.HasField("options") and request.options.type_url.endswith(
            "containerd.runc.v1.CheckpointOptions"
        ):
            options.ParseFromString(request.options.value)
        criu = container.runc.criu or "criu"
        if shutil.which(criu) is None:
            raise _precondition(
                f"checkpoint of {container.id}: CRIU ({criu}) is not installed on this host; "
                "runc checkpoint needs it"
            )
        image_path = options.image_path or request.path
        if not image_path:
            raise _invalid("checkpoint needs an image path")
        work_path = options.work_path or os.path.join(container.bundle, "criu-work")
        args = checkpoint_args(container.id, image_path, work_path, options)
        async with container.lock:
            try:
                await container.runc.run(args, what="checkpoint failed")
            except RuncError as exc:
                # runc only says "criu failed" and where CRIU's log is; the
                # log goes with the bundle, so its reasons travel here.
                reasons = await asyncio.to_thread(criu_errors, os.path.join(work_path, "dump.log"))
                # One line, as a client prints it ("errno 0\nlog file: ...").
                message = " ".join(str(exc).splitlines())
                if reasons:
                    message += "; CRIU's dump.log says: " + "; ".join(reasons)
                raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, message) from None
        self._publish(
            container, events.TaskCheckpointed(container_id=container.id, checkpoint=image_path)
        )
        return empty_pb2.Empty()

    # --- exec, IO, update, stats ------------------------------------------------------------

    async def exec(self, request: shim_pb2.ExecProcessRequest, namespace: str) -> Message:
        container = self._container(request.id)
        exec_id = _identifier(request.exec_id, "exec id")
        async with container.lock:
            init = container.process("")
            if init.exited.is_set():
                raise _precondition(f"container {container.id} is not running")
            if exec_id in container.execs:
                raise ttrpc.StatusError(ttrpc.Code.ALREADY_EXISTS, f"id {exec_id}: already exists")
            io = ProcessIO(
                request.stdin,
                request.stdout,
                request.stderr,
                terminal=request.terminal,
                uid=container.options.io_uid,
                gid=container.options.io_gid,
            )
            container.execs[exec_id] = Process(container, exec_id, io, spec=request.spec.value)
        self._publish(container, events.TaskExecAdded(container_id=container.id, exec_id=exec_id))
        return empty_pb2.Empty()

    async def resize_pty(self, request: shim_pb2.ResizePtyRequest, namespace: str) -> Message:
        process = self._container(request.id).process(request.exec_id)
        try:
            process.io.resize(request.width, request.height)
        except (ValueError, OSError) as exc:
            raise _precondition(f"resize pty of {process.id}: {exc}") from None
        return empty_pb2.Empty()

    async def close_io(self, request: shim_pb2.CloseIORequest, namespace: str) -> Message:
        process = self._container(request.id).process(request.exec_id)
        if request.stdin:
            process.io.close_stdin()
        return empty_pb2.Empty()

    async def update(self, request: shim_pb2.UpdateTaskRequest, namespace: str) -> Message:
        container = self._container(request.id)
        if not request.HasField("resources"):
            raise _invalid("update needs resources")
        try:
            json.loads(request.resources.value)
        except ValueError:
            raise _invalid("resources are not a JSON LinuxResources") from None
        try:
            await container.runc.update(container.id, request.resources.value)
        except RuncError as exc:
            raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(exc)) from None
        return empty_pb2.Empty()

    async def stats(self, request: shim_pb2.StatsRequest, namespace: str) -> Message:
        container = self._container(request.id)
        if container.cgroup is None:
            raise _not_found(f"cgroup of {container.id}")
        metrics = await asyncio.to_thread(container.cgroup.stats)
        return shim_pb2.StatsResponse(
            stats=any_pb2.Any(
                type_url=metrics.DESCRIPTOR.full_name, value=metrics.SerializeToString()
            )
        )

    async def connect(self, request: shim_pb2.ConnectRequest, namespace: str) -> Message:
        response = shim_pb2.ConnectResponse(shim_pid=os.getpid())
        container = self.containers.get(request.id)
        if container is not None and container.init is not None:
            response.task_pid = container.init.pid
        return response

    async def shutdown(self, request: shim_pb2.ShutdownRequest, namespace: str) -> Message:
        # Other containers may live here: the server leaves only when idle.
        if not self.containers:
            self._on_empty()
        return empty_pb2.Empty()


#: CRIU's cgroup modes, as runc's --manage-cgroups-mode takes them.
CGROUPS_MODES = frozenset({"soft", "full", "strict", "ignore"})
_NAMESPACE_NAME = re.compile(r"[a-z]{1,16}")


def checkpoint_args(
    container_id: str, image_path: str, work_path: str, options: oci_pb2.CheckpointOptions
) -> list[str]:
    """``runc checkpoint``'s arguments for containerd's checkpoint options
    (the flags runc's Go bindings give them)."""
    args = ["checkpoint", "--image-path", image_path, "--work-path", work_path]
    if not options.exit:
        args.append("--leave-running")
    if options.open_tcp:
        args.append("--tcp-established")
    if options.external_unix_sockets:
        args.append("--ext-unix-sk")
    if options.terminal:
        args.append("--shell-job")
    if options.file_locks:
        args.append("--file-locks")
    if options.cgroups_mode:
        if options.cgroups_mode not in CGROUPS_MODES:
            raise _invalid(f"checkpoint: unknown cgroups mode {options.cgroups_mode!r}")
        args += ["--manage-cgroups-mode", options.cgroups_mode]
    for namespace in options.empty_namespaces:
        if not _NAMESPACE_NAME.fullmatch(namespace):
            raise _invalid(f"checkpoint: invalid namespace to empty {namespace!r}")
        args += ["--empty-ns", namespace]
    return [*args, container_id]


#: How much of the end of a CRIU log is read for its errors, and how many are kept.
CRIU_LOG_TAIL = 256 << 10
CRIU_LOG_ERRORS = 4
_CRIU_ERROR = re.compile(r"Error \(([^)]*)\): (.*)")


def criu_errors(log_path: str) -> list[str]:
    """The first few ``Error (file:line): ...`` lines at the end of a CRIU
    log (``dump.log``, ``restore.log``), each cut at 512 characters; none
    when the log cannot be read."""
    try:
        fd = os.open(log_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as log_file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        size = os.fstat(fd).st_size
        log_file.seek(max(0, size - CRIU_LOG_TAIL))
        tail = log_file.read(CRIU_LOG_TAIL).decode("utf-8", "replace")
    errors: list[str] = []
    for line in tail.splitlines():
        found = _CRIU_ERROR.search(line)
        # A helper's exit status says nothing the lines after it do not.
        if found is None or found.group(2).startswith("exited, status="):
            continue
        text = f"{found.group(2).strip()} ({found.group(1)})"[:512]
        if text not in errors:
            errors.append(text)
        if len(errors) == CRIU_LOG_ERRORS:
            break
    return errors


def _spec_facts(bundle: str) -> tuple[bool, bool]:
    """Whether the bundle's spec gives the init no pid namespace of its own
    (containerd's ``ShouldKillAllOnExit``), and whether it has poststop
    hooks; an unreadable spec counts as both, the safe side."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
        namespaces = spec.get("linux", {}).get("namespaces") or []
        hooks = spec.get("hooks") or {}
        poststop = bool(hooks.get("poststop")) if isinstance(hooks, dict) else True
    except (OSError, ValueError, AttributeError):
        return True, True
    shared = not any(
        isinstance(ns, dict) and ns.get("type") == "pid" and not ns.get("path") for ns in namespaces
    )
    return shared, poststop


def _timestamp(time_ns: int) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    _stamp(stamp, time_ns)
    return stamp


def _write_options(bundle: str, options: oci_pb2.Options) -> None:
    """What ``delete`` needs without the server: runc's binary and root."""
    document = {
        "binary_name": options.binary_name,
        "root": options.root,
        "systemd_cgroup": options.systemd_cgroup,
    }
    Path(bundle, entry.OPTIONS_FILE).write_text(json.dumps(document))


def _adapt(
    name: str,
    request_type: type[Message],
    handler: Callable[[Any, str], Awaitable[Message]],
) -> Callable[[bytes, ttrpc.ServerContext], Awaitable[bytes]]:
    async def call(payload: bytes, context: ttrpc.ServerContext) -> bytes:
        try:
            request = request_type.FromString(payload)
        except Exception as exc:
            raise _invalid(f"{name}: bad request: {exc}") from None
        namespace = context.get(NAMESPACE_HEADER) or ""
        started = time.monotonic()
        try:
            response = await handler(request, namespace)
        except ttrpc.StatusError as exc:
            log.debug("%s: %s (%.1f ms)", name, exc, (time.monotonic() - started) * 1e3)
            raise
        except Exception as exc:
            log.exception("%s failed", name)
            raise ttrpc.StatusError(ttrpc.Code.UNKNOWN, f"{name}: {exc}") from None
        log.debug("%s (%.1f ms)", name, (time.monotonic() - started) * 1e3)
        return response.SerializeToString()

    return call
