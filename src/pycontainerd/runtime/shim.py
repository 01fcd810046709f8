"""One task's shim over ttrpc: containerd's ``containerd.task.v2.Task`` calls
(``runtime/v2/shim.go`` and ``process.go``).

A :class:`ShimTask` is a task (its init process, ``exec_id`` empty) and, by
``exec_id``, the processes exec'd in it.  Every call carries the task's
namespace as ``containerd-namespace-ttrpc``.  A shim's error status comes
back as our typed error with the shim's message (containerd's suffix
stripped); a connection that closes under a call raises
:class:`ShimGone`, so the manager can answer with the exit it reports once
it has cleaned up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from pycontainerd import errdefs, identifiers, namespaces, ttrpc
from pycontainerd.api.runtime.v2.task import shim_pb2 as pb
from pycontainerd.api.types import mount_pb2
from pycontainerd.runtime import (
    IO,
    CreateOpts,
    ExecOpts,
    Exit,
    ProcessInfo,
    State,
    Status,
    UpdateOpts,
)
from pycontainerd.runtime.binary import ShimLog
from pycontainerd.runtime.bundle import Bundle

__all__ = ["SERVICE", "ShimGone", "ShimTask"]

SERVICE = "containerd.task.v2.Task"

#: How long a state query may take before the task is listed as UNKNOWN
#: (``io.containerd.timeout.task.state``).
STATE_TIMEOUT = 2.0
#: How long the shim has to answer Shutdown (``io.containerd.timeout.shim.shutdown``).
SHUTDOWN_TIMEOUT = 3.0


class ShimGone(errdefs.Unavailable):
    """The shim's connection closed under a call (ttrpc's ``ErrClosed``)."""


def _error_classes() -> dict[str, type[errdefs.ContainerdError]]:
    out: dict[str, type[errdefs.ContainerdError]] = {}
    for name in errdefs.__all__:
        cls = getattr(errdefs, name)
        # The classes that own a code; a subclass sharing one (Conflict) is
        # told apart by its message suffix below.
        if isinstance(cls, type) and cls.__base__ is errdefs.ContainerdError:
            out[errdefs.code_name(cls())] = cls
    return out


_BY_CODE_NAME = _error_classes()


def from_status(exc: ttrpc.StatusError) -> errdefs.ContainerdError:
    """A shim's error status as our error: the class of its code, or of the
    containerd suffix its message ends with, with that suffix stripped."""
    cls = _BY_CODE_NAME.get(exc.code_name, errdefs.Unknown)
    msg = exc.message or cls.suffix
    for klass in (*cls.__subclasses__(), cls):
        if msg == klass.suffix:
            return klass()
        if msg.endswith(": " + klass.suffix):
            return klass(msg[: -len(klass.suffix) - 2])
    return cls(msg)


def _ns(ts: object) -> int:
    seconds = getattr(ts, "seconds", 0)
    nanos = getattr(ts, "nanos", 0)
    return int(seconds) * 1_000_000_000 + int(nanos)


class ShimTask:
    """A task in a shim, reached over the ttrpc ``client``."""

    def __init__(
        self,
        bundle: Bundle,
        client: ttrpc.Client,
        shim_log: ShimLog | None,
        *,
        binary: str,
    ) -> None:
        self.bundle = bundle
        self.client = client
        self.binary = binary
        self._log = shim_log
        self._metadata = [(namespaces.TTRPC_HEADER, bundle.namespace)]
        #: Set by the manager once it has cleaned up after the shim died.
        self.lost: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()
        #: Set when the daemon removes the task on purpose (no cleanup then).
        self.deleted = False
        self._pid = 0

    @property
    def id(self) -> str:
        return self.bundle.id

    @property
    def namespace(self) -> str:
        return self.bundle.namespace

    @property
    def pid(self) -> int:
        return self._pid

    # --- transport ------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        request: Message,
        response: Callable[[bytes], Message],
        *,
        timeout: float | None = None,
    ) -> Message:
        try:
            data = await self.client.call(
                SERVICE,
                method,
                request.SerializeToString(),
                metadata=self._metadata,
                timeout=timeout,
            )
        except ttrpc.StatusError as exc:
            raise from_status(exc) from None
        except (ttrpc.ConnectionClosed, ConnectionError) as exc:
            raise ShimGone(f"task {self.id}: shim connection closed") from exc
        return response(data)

    async def close(self) -> None:
        await self.client.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- the task -------------------------------------------------------------------------

    async def connect(self, timeout: float) -> int:
        """Check the shim answers; the task's pid (what restore asks first)."""
        resp = await self._call(
            "Connect", pb.ConnectRequest(id=self.id), pb.ConnectResponse.FromString, timeout=timeout
        )
        assert isinstance(resp, pb.ConnectResponse)
        self._pid = resp.task_pid
        return self._pid

    async def create(self, opts: CreateOpts) -> int:
        options = opts.task_options
        if options is None or not options.value:
            options = opts.runtime_options
        request = pb.CreateTaskRequest(
            id=self.id,
            bundle=str(self.bundle.path),
            rootfs=[
                mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options)
                for m in opts.rootfs
            ],
            terminal=opts.io.terminal,
            stdin=opts.io.stdin,
            stdout=opts.io.stdout,
            stderr=opts.io.stderr,
            checkpoint=opts.checkpoint,
            options=options,
        )
        resp = await self._call("Create", request, pb.CreateTaskResponse.FromString)
        assert isinstance(resp, pb.CreateTaskResponse)
        self._pid = resp.pid
        return resp.pid

    async def start(self, exec_id: str = "") -> int:
        resp = await self._call(
            "Start", pb.StartRequest(id=self.id, exec_id=exec_id), pb.StartResponse.FromString
        )
        assert isinstance(resp, pb.StartResponse)
        if not exec_id:
            self._pid = resp.pid
        return resp.pid

    async def state(self, exec_id: str = "", *, timeout: float | None = None) -> State:
        resp = await self._call(
            "State",
            pb.StateRequest(id=self.id, exec_id=exec_id),
            pb.StateResponse.FromString,
            timeout=timeout,
        )
        assert isinstance(resp, pb.StateResponse)
        try:
            status = Status(resp.status)
        except ValueError:
            status = Status.UNKNOWN
        return State(
            id=exec_id or self.id,
            pid=resp.pid,
            status=status,
            io=IO(resp.stdin, resp.stdout, resp.stderr, resp.terminal),
            exit_status=resp.exit_status,
            exited_at=_ns(resp.exited_at),
            bundle=resp.bundle,
            exec_id=resp.exec_id,
        )

    async def kill(self, signal: int, *, all: bool = False, exec_id: str = "") -> None:
        await self._call(
            "Kill",
            pb.KillRequest(id=self.id, exec_id=exec_id, signal=signal, all=all),
            empty_pb2.Empty.FromString,
        )

    async def wait(self, exec_id: str = "") -> Exit:
        """The process's exit, once it has exited.  When the shim dies first,
        the init process's exit is the one its cleanup reported."""
        try:
            resp = await self._call(
                "Wait", pb.WaitRequest(id=self.id, exec_id=exec_id), pb.WaitResponse.FromString
            )
        except ShimGone:
            if exec_id:
                raise
            return await asyncio.shield(self.lost)
        assert isinstance(resp, pb.WaitResponse)
        pid = self._pid if not exec_id else 0
        return Exit(pid=pid, status=resp.exit_status, exited_at=_ns(resp.exited_at))

    async def delete(self, exec_id: str = "") -> Exit:
        """Delete a process in the shim (the task itself: see the manager)."""
        resp = await self._call(
            "Delete", pb.DeleteRequest(id=self.id, exec_id=exec_id), pb.DeleteResponse.FromString
        )
        assert isinstance(resp, pb.DeleteResponse)
        return Exit(pid=resp.pid, status=resp.exit_status, exited_at=_ns(resp.exited_at))

    async def shutdown(self) -> None:
        """Ask the shim to exit (it does once it supervises nothing)."""
        # A shim that exits before answering did what was asked.
        with contextlib.suppress(ShimGone):
            await self._call(
                "Shutdown",
                pb.ShutdownRequest(id=self.id),
                empty_pb2.Empty.FromString,
                timeout=SHUTDOWN_TIMEOUT,
            )

    async def exec(self, exec_id: str, opts: ExecOpts) -> None:
        try:
            identifiers.validate(exec_id)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"invalid exec id {exec_id}: {exc.message}") from None
        await self._call(
            "Exec",
            pb.ExecProcessRequest(
                id=self.id,
                exec_id=exec_id,
                terminal=opts.io.terminal,
                stdin=opts.io.stdin,
                stdout=opts.io.stdout,
                stderr=opts.io.stderr,
                spec=opts.spec,
            ),
            empty_pb2.Empty.FromString,
        )

    async def resize_pty(self, width: int, height: int, exec_id: str = "") -> None:
        await self._call(
            "ResizePty",
            pb.ResizePtyRequest(id=self.id, exec_id=exec_id, width=width, height=height),
            empty_pb2.Empty.FromString,
        )

    async def close_io(self, exec_id: str = "") -> None:
        await self._call(
            "CloseIO",
            pb.CloseIORequest(id=self.id, exec_id=exec_id, stdin=True),
            empty_pb2.Empty.FromString,
        )

    async def pause(self) -> None:
        await self._call("Pause", pb.PauseRequest(id=self.id), empty_pb2.Empty.FromString)

    async def resume(self) -> None:
        await self._call("Resume", pb.ResumeRequest(id=self.id), empty_pb2.Empty.FromString)

    async def pids(self) -> Sequence[ProcessInfo]:
        resp = await self._call("Pids", pb.PidsRequest(id=self.id), pb.PidsResponse.FromString)
        assert isinstance(resp, pb.PidsResponse)
        return [
            ProcessInfo(pid=p.pid, info=p.info if p.HasField("info") else None)
            for p in resp.processes
        ]

    async def checkpoint(self, path: str, options: any_pb2.Any | None) -> None:
        await self._call(
            "Checkpoint",
            pb.CheckpointTaskRequest(id=self.id, path=path, options=options),
            empty_pb2.Empty.FromString,
        )

    async def update(self, opts: UpdateOpts) -> None:
        await self._call(
            "Update",
            pb.UpdateTaskRequest(
                id=self.id, resources=opts.resources, annotations=dict(opts.annotations)
            ),
            empty_pb2.Empty.FromString,
        )

    async def stats(self) -> any_pb2.Any | None:
        resp = await self._call("Stats", pb.StatsRequest(id=self.id), pb.StatsResponse.FromString)
        assert isinstance(resp, pb.StatsResponse)
        return resp.stats if resp.HasField("stats") else None
