"""The service facade, written async (``AsyncDefaultService``); its sync twin is generated.

This file is the source of truth for both faces: ``tools/unasync.py`` turns
it into ``service/_sync.py`` (``DefaultService`` over ``Client``) by dropping
``async``/``await`` and the ``Async`` prefixes.  Keep to code that survives
that rewrite: no ``asyncio`` here; blocking work goes through
``AsyncOffload.run`` (in place in the sync twin), sleeps through
``AsyncPause.sleep``.

The facade is thin: each method is a few calls of the client, with the
choices platform code wants made once (the image's config in the spec, a
snapshot named after the container, stop = signal, wait, then SIGKILL or a
:class:`~pycontainerd.errdefs.TaskStopTimeout`).  Networking is delegated
to :mod:`pycontainerd.cni`, loaded on first use.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import secrets
import signal as signals
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from pycontainerd import cio, errdefs, filters
from pycontainerd import namespaces as namespace_context
from pycontainerd.client._async.client import AsyncClient
from pycontainerd.client._async.containers import (
    with_image,
    with_new_snapshot,
    with_snapshot,
    with_snapshotter,
)
from pycontainerd.client._async.image import resolve_snapshotter
from pycontainerd.client._async.task import AsyncProcess, AsyncTask, ProcessRecord
from pycontainerd.client._streams import AsyncOffload, AsyncPause
from pycontainerd.mount import temp_mount
from pycontainerd.oci import spec as oci
from pycontainerd.oci.opts import replace_or_append_env
from pycontainerd.service._types import (
    DEFAULT_NAMESPACE,
    DEFAULT_SOCKET_PATH,
    DEFAULT_STOP_TIMEOUT,
    CreateContainerRequest,
    ExecTaskRequest,
    HasPid,
    TaskInfo,
    check_container_id,
    check_timeout,
    label_filter,
)
from pycontainerd.service._types import ProcessStatus as Status

if TYPE_CHECKING:
    from pycontainerd import cni
    from pycontainerd.containers import Container
    from pycontainerd.images import Image
    from pycontainerd.mount import Mount
    from pycontainerd.snapshots import Info

__all__ = [
    "AsyncDefaultService",
    "AsyncExecSession",
    "AsyncMountedSnapshot",
    "AsyncService",
    "AsyncUnmount",
    "mount_container_snapshot",
    "mount_snapshot",
]

log = logging.getLogger("pycontainerd.service")

#: What keeps a snapshot from garbage collection while nothing refers to it.
LABEL_GC_ROOT = "containerd.io/gc.root"

# How often a stop looks at the task while it waits for the exit: the first
# look soon (most tasks exit at once), then no more than ten a second.
_POLL_FIRST = 0.01
_POLL_MAX = 0.1


class AsyncService(Protocol):
    """What platform code asks of a container runtime (``AsyncDefaultService``
    is the implementation over the client)."""

    # -- images
    async def pull_image(
        self, ref: str, unpack: bool = True, snapshotter: str | None = None
    ) -> Image: ...
    async def get_image(self, ref: str) -> Image: ...
    async def list_images(self, *filters: str) -> list[Image]: ...
    async def delete_image(self, ref: str, synchronous: bool = False) -> None: ...

    # -- containers
    async def create_container(self, request: CreateContainerRequest) -> Container: ...
    async def create_container_from_snapshot(
        self, request: CreateContainerRequest
    ) -> Container: ...
    async def get_container(self, container_id: str) -> Container: ...
    async def list_containers(self, *filters: str) -> list[Container]: ...
    async def list_containers_by_label(self, key: str, value: str) -> list[Container]: ...
    async def delete_container(self, container_id: str, cleanup_snapshot: bool = False) -> None: ...

    # -- tasks
    async def start_task(
        self,
        container_id: str,
        use_stdio: bool = False,
        terminal: bool = False,
        fifo_dir: str | None = None,
    ) -> TaskInfo: ...
    async def get_task(self, container_id: str) -> TaskInfo: ...
    async def list_tasks(self, filter: str | None = None) -> list[TaskInfo]: ...
    async def stop_task(
        self,
        container_id: str,
        signal: int | str = signals.SIGTERM,
        timeout: float = DEFAULT_STOP_TIMEOUT,
        force: bool = False,
    ) -> int: ...
    async def delete_task(self, container_id: str, force: bool = False) -> int: ...
    async def exec_task(self, container_id: str, request: ExecTaskRequest) -> int: ...
    async def exec_task_streaming(
        self, container_id: str, request: ExecTaskRequest
    ) -> AsyncExecSession: ...

    # -- snapshots
    async def prepare_snapshot(
        self,
        snapshotter: str,
        key: str,
        parent: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> list[Mount]: ...
    async def commit_snapshot(
        self, snapshotter: str, name: str, key: str, labels: Mapping[str, str] | None = None
    ) -> None: ...
    async def list_snapshots(self, snapshotter: str, *filters: str) -> list[Info]: ...
    async def remove_snapshot(self, snapshotter: str, key: str) -> None: ...
    async def snapshot_mounts(self, snapshotter: str, key: str) -> list[Mount]: ...

    # -- networking
    async def setup_network(self, task: HasPid, container_id: str) -> cni.NetworkResult: ...
    async def remove_network(self, task: HasPid | None, container_id: str) -> None: ...
    def resolve_conf_source(self, data_dir: str | os.PathLike[str]) -> Path: ...


class AsyncDefaultService:
    """The facade over one :class:`~pycontainerd.client.AsyncClient`, in its namespace.

    ``network`` is the :class:`pycontainerd.cni.Network` tasks are attached
    to; when None it is loaded with CNI's defaults the first time one is
    needed.  The service keeps the IO of the tasks it started (their FIFOs
    with ``use_stdio``) until it deletes them; :meth:`close` closes the
    client when the service made it (:meth:`connect`, :meth:`from_env`).
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        network: cni.Network | None = None,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self._network = network
        self._owns_client = owns_client
        self._tasks: dict[tuple[str, str], AsyncTask] = {}

    @classmethod
    def connect(
        cls,
        address: str = DEFAULT_SOCKET_PATH,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        network: cni.Network | None = None,
    ) -> AsyncDefaultService:
        """A service over a new client of the daemon at ``address``, in ``namespace``."""
        namespace_context.validate(namespace)
        return cls(AsyncClient(address, namespace), network=network, owns_client=True)

    @classmethod
    def from_env(cls, *, network: cni.Network | None = None) -> AsyncDefaultService:
        """A service over ``AsyncClient.from_env()`` (CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE)."""
        return cls(AsyncClient.from_env(), network=network, owns_client=True)

    async def __aenter__(self) -> AsyncDefaultService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the IO of tasks still held, and the client if the service made it."""
        held = list(self._tasks.values())
        self._tasks.clear()
        for task in held:
            if task.io is not None:
                task.io.cancel()
                task.io.close()
        if self._owns_client:
            await self.client.close()

    def _namespace(self) -> str:
        return namespace_context.current() or self.client.namespace

    # -- images ------------------------------------------------------------------

    async def pull_image(
        self,
        ref: str,
        unpack: bool = True,
        snapshotter: str | None = None,
        *,
        platform: str | None = None,
        plain_http: bool = False,
        hosts_dir: str | Path | None = None,
        user: str | None = None,
    ) -> Image:
        """Pull ``ref`` from its registry and, with ``unpack``, unpack it into
        ``snapshotter`` (default: the namespace's, else overlayfs); the image
        record.  ``plain_http``, ``hosts_dir`` (containerd's ``hosts.toml``
        tree) and ``user`` (``name:password``) say how to reach the registry."""
        image = await self.client.pull(
            ref,
            unpack=unpack,
            snapshotter=snapshotter or "",
            platform=platform,
            plain_http=plain_http,
            hosts_dir=hosts_dir,
            user=user,
        )
        return image.record

    async def get_image(self, ref: str) -> Image:
        return await self.client.images.get(ref)

    async def list_images(self, *filters: str) -> list[Image]:
        """Images matching any of ``filters`` (``name==...``, ``labels."k"==v``)."""
        return await self.client.images.list(*filters)

    async def delete_image(self, ref: str, synchronous: bool = False) -> None:
        """Delete the image record; ``synchronous`` waits for the garbage
        collection that frees its content and snapshots."""
        await self.client.images.delete(ref, sync=synchronous)

    # -- containers --------------------------------------------------------------

    async def create_container(self, request: CreateContainerRequest) -> Container:
        """A container on a new snapshot of ``request.image_ref``, which is
        unpacked first when it is not (see :class:`CreateContainerRequest`)."""
        if not request.image_ref:
            raise errdefs.InvalidArgument(
                f"container {errdefs.q(request.id)}: an image ref is required"
            )
        image = await self.client.get_image(request.image_ref)
        snapshotter = await resolve_snapshotter(self.client, request.snapshotter)
        if not await image.is_unpacked(snapshotter):
            await image.unpack(snapshotter)
        spec = oci.generate(
            self._namespace(),
            request.id,
            await image.spec_opts(snapshotter=snapshotter),
            *request.spec_opts,
        )
        container = await self.client.new_container(
            request.id,
            with_image(image),
            with_snapshotter(snapshotter),
            with_new_snapshot(request.snapshot_id or request.id, image),
            labels=dict(request.labels),
            spec=spec,
        )
        return await container.info(refresh=False)

    async def create_container_from_snapshot(self, request: CreateContainerRequest) -> Container:
        """A container whose root filesystem is the existing active snapshot
        ``request.snapshot_id``; the spec takes ``request.image_ref``'s config
        when one is given (the image must be unpacked in that snapshotter)."""
        if not request.snapshot_id:
            raise errdefs.InvalidArgument(
                f"container {errdefs.q(request.id)}: a snapshot id is required"
            )
        snapshotter = await resolve_snapshotter(self.client, request.snapshotter)
        opts: list[Any] = [with_snapshotter(snapshotter), with_snapshot(request.snapshot_id)]
        spec_opts = list(request.spec_opts)
        if request.image_ref:
            image = await self.client.get_image(request.image_ref)
            spec_opts.insert(0, await image.spec_opts(snapshotter=snapshotter))
            opts.insert(0, with_image(image))
        spec = oci.generate(self._namespace(), request.id, *spec_opts)
        container = await self.client.new_container(
            request.id, *opts, labels=dict(request.labels), spec=spec
        )
        return await container.info(refresh=False)

    async def get_container(self, container_id: str) -> Container:
        check_container_id(container_id)
        return await self.client.containers.get(container_id)

    async def list_containers(self, *filters: str) -> list[Container]:
        """Containers matching any of ``filters`` (none: all of the namespace)."""
        return await self.client.containers.list(*filters)

    async def list_containers_by_label(self, key: str, value: str) -> list[Container]:
        """Containers whose label ``key`` is exactly ``value``."""
        return await self.client.containers.list(label_filter(key, value))

    async def delete_container(self, container_id: str, cleanup_snapshot: bool = False) -> None:
        """Delete the container (its task must be gone: FailedPrecondition
        otherwise); with ``cleanup_snapshot`` its root filesystem snapshot too."""
        check_container_id(container_id)
        container = await self.client.load_container(container_id)
        await container.delete(cleanup_snapshot=cleanup_snapshot)

    # -- tasks -------------------------------------------------------------------

    async def start_task(
        self,
        container_id: str,
        use_stdio: bool = False,
        terminal: bool = False,
        fifo_dir: str | None = None,
    ) -> TaskInfo:
        """Create and start the container's task; its IO is this program's own
        stdio with ``use_stdio`` (FIFOs under ``fifo_dir``; a pty with
        ``terminal``), else none (the shim sends output to /dev/null)."""
        check_container_id(container_id)
        if terminal and not use_stdio:
            raise errdefs.InvalidArgument("a terminal needs use_stdio: its pty is this program's")
        if fifo_dir is not None and not use_stdio:
            raise errdefs.InvalidArgument("fifo_dir is used only with use_stdio")
        container = await self.client.load_container(container_id)
        creator = cio.stdio(terminal=terminal, fifo_dir=fifo_dir) if use_stdio else cio.null_io
        task = await container.new_task(creator)
        try:
            pid = await task.start()
        except BaseException:
            with contextlib.suppress(errdefs.ContainerdError):
                await task.delete(force=True)
            raise
        self._tasks[(self._namespace(), container_id)] = task
        return TaskInfo(container_id, container_id, pid, Status.RUNNING)

    async def _task(self, container_id: str) -> AsyncTask:
        """The container's task: the one this service started (it holds the
        IO), else loaded from the daemon (NotFound when there is none)."""
        check_container_id(container_id)
        held = self._tasks.get((self._namespace(), container_id))
        if held is not None:
            return held
        return await (await self.client.load_container(container_id)).task()

    async def get_task(self, container_id: str) -> TaskInfo:
        check_container_id(container_id)
        return _task_info(await self.client.tasks.get(container_id))

    async def list_tasks(self, filter: str | None = None) -> list[TaskInfo]:
        """The tasks of the namespace; with ``filter`` (containerd's filter
        language over :class:`TaskInfo`'s fields: ``status==running``,
        ``pid==42``) those that match.  The filter is applied here: the
        tasks service's List ignores its filter, in containerd as in ours."""
        selected = filters.parse_all([filter]) if filter else None
        infos = [_task_info(record) for record in await self.client.tasks.list()]
        if selected is None:
            return infos
        return [info for info in infos if selected.match(filters.adapt_object(info))]

    async def stop_task(
        self,
        container_id: str,
        signal: int | str = signals.SIGTERM,
        timeout: float = DEFAULT_STOP_TIMEOUT,
        force: bool = False,
    ) -> int:
        """Send ``signal`` to the task and wait up to ``timeout`` seconds for it
        to exit; its exit status.  Still running then: with ``force`` every
        process of the task gets SIGKILL, else :class:`TaskStopTimeout` is
        raised and the task keeps running.  A stopped task is left as it is
        (delete it with :meth:`delete_task`)."""
        timeout = check_timeout(timeout)
        task = await self._task(container_id)
        status = await task.status()
        if status.status.value == Status.STOPPED.value:
            return status.exit_status
        # The process may exit between the look and the signal: the daemon
        # then says NotFound (containerd: "process already finished").
        with contextlib.suppress(errdefs.NotFound):
            await task.kill(signal)
        code = await _wait_stopped(task, timeout)
        if code is not None:
            return code
        if not force:
            raise errdefs.TaskStopTimeout(
                f"task {errdefs.q(container_id)} in namespace {errdefs.q(self._namespace())} "
                f"still runs {timeout:g}s after signal {signal}"
            )
        with contextlib.suppress(errdefs.NotFound):
            await task.kill(signals.SIGKILL, all=True)
        return (await task.wait()).code

    async def delete_task(self, container_id: str, force: bool = False) -> int:
        """Delete the stopped task (``force`` kills it first); its exit status."""
        task = await self._task(container_id)
        key = (self._namespace(), container_id)
        try:
            status = await task.delete(force=force)
        except errdefs.NotFound:
            if self._tasks.pop(key, None) is not None and task.io is not None:
                task.io.cancel()  # deleted behind our back: nothing more comes
                task.io.close()
            raise
        self._tasks.pop(key, None)
        return status.code

    async def _exec(
        self, container_id: str, request: ExecTaskRequest, creator: cio.Creator
    ) -> AsyncProcess:
        """Create (not start) ``request``'s process in the container's task."""
        task = await self._task(container_id)
        container = await self.client.load_container(container_id)
        process_spec = dict((await container.spec()).get("process") or {})
        process_spec["args"] = list(request.args)
        process_spec["terminal"] = request.terminal
        if request.env:
            process_spec["env"] = replace_or_append_env(process_spec.get("env") or (), request.env)
        if request.workdir:
            process_spec["cwd"] = request.workdir
        exec_id = f"exec-{secrets.token_hex(8)}"
        return await task.exec(exec_id, process_spec, creator)

    async def exec_task(self, container_id: str, request: ExecTaskRequest) -> int:
        """Run ``request``'s process in the running task to its end; its exit
        code.  Its output is all in ``request.stdout``/``stderr`` on return."""
        stdin = request.stdin
        if isinstance(stdin, bytes | bytearray | memoryview):
            stdin = io.BytesIO(bytes(stdin))
        closer = cio.StdinCloser() if stdin is not None else None
        creator = cio.new_creator(
            stdin=stdin,
            stdout=request.stdout,
            stderr=None if request.terminal else request.stderr,
            terminal=request.terminal,
            on_stdin_eof=closer,
        )
        process = await self._exec(container_id, request, creator)
        if closer is not None:
            closer.bind(process)
        try:
            await process.start()
            code = (await process.wait()).code
        except BaseException:
            with contextlib.suppress(errdefs.ContainerdError):
                await process.delete(force=True)
            raise
        await process.delete()  # after the output is copied out
        return code

    async def exec_task_streaming(
        self, container_id: str, request: ExecTaskRequest
    ) -> AsyncExecSession:
        """Start ``request``'s process with pipes for its streams: write to
        ``session.stdin`` (close it for EOF), read ``session.stdout`` and
        ``session.stderr``, then ``wait()`` and ``close()`` (see
        :class:`AsyncExecSession`).  ``request`` carries no streams here."""
        if request.stdin is not None or request.stdout is not None or request.stderr is not None:
            raise errdefs.InvalidArgument(
                "exec_task_streaming makes its own pipes: leave stdin, stdout and stderr unset"
            )
        pipes = _Pipes()
        try:
            closer = cio.StdinCloser()
            creator = cio.new_creator(
                stdin=pipes.stdin_source,
                stdout=pipes.stdout_sink,
                stderr=None if request.terminal else pipes.stderr_sink,
                terminal=request.terminal,
                on_stdin_eof=closer,
            )
            process = await self._exec(container_id, request, creator)
        except BaseException:
            pipes.close()
            raise
        closer.bind(process)
        session = AsyncExecSession(process, pipes)
        try:
            await process.start()
        except BaseException:
            await session.close()
            raise
        return session

    # -- snapshots ---------------------------------------------------------------

    async def prepare_snapshot(
        self,
        snapshotter: str,
        key: str,
        parent: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> list[Mount]:
        """A new active snapshot ``key`` on ``parent`` (a committed one; "" for
        an empty one); the mounts that make it a directory.  Like ctr's, it
        is labelled ``containerd.io/gc.root``, so garbage collection keeps
        it until :meth:`remove_snapshot`."""
        service = self.client.snapshot_service(snapshotter)
        return await service.prepare(key, parent, _gc_root(labels))

    async def commit_snapshot(
        self, snapshotter: str, name: str, key: str, labels: Mapping[str, str] | None = None
    ) -> None:
        """Commit the active snapshot ``key`` as ``name`` (``key`` is gone
        after); labelled ``containerd.io/gc.root`` as :meth:`prepare_snapshot`."""
        await self.client.snapshot_service(snapshotter).commit(name, key, _gc_root(labels))

    async def list_snapshots(self, snapshotter: str, *filters: str) -> list[Info]:
        return await self.client.snapshot_service(snapshotter).list(*filters)

    async def remove_snapshot(self, snapshotter: str, key: str) -> None:
        await self.client.snapshot_service(snapshotter).remove(key)

    async def snapshot_mounts(self, snapshotter: str, key: str) -> list[Mount]:
        return await self.client.snapshot_service(snapshotter).mounts(key)

    # -- networking (pycontainerd.cni) -------------------------------------------

    async def _loaded_network(self) -> cni.Network:
        if self._network is None:
            from pycontainerd import cni

            self._network = await AsyncOffload.run(cni.Network.load)
        return self._network

    async def setup_network(self, task: HasPid, container_id: str) -> cni.NetworkResult:
        """Attach the running ``task`` (anything with its host ``pid``: a
        :class:`TaskInfo`) to the CNI network under ``container_id``; what
        the plugins assigned (``result.ips``)."""
        check_container_id(container_id)
        if task.pid <= 0:
            raise errdefs.FailedPrecondition(
                f"task of {errdefs.q(container_id)} has no pid: start it first"
            )
        network = await self._loaded_network()
        # Named <namespace>-<id> for the plugins (ctr's full id): ids are
        # unique only within a namespace.
        return await AsyncOffload.run(
            network.setup, container_id, task.pid, namespace=self._namespace()
        )

    async def remove_network(self, task: HasPid | None, container_id: str) -> None:
        """Detach ``container_id`` from the network and release its address;
        fine when it was never attached, or is detached already.  The task may
        have exited: CNI's DEL runs in the namespace kept for it."""
        check_container_id(container_id)
        network = await self._loaded_network()
        await AsyncOffload.run(network.remove, container_id, namespace=self._namespace())

    def resolve_conf_source(self, data_dir: str | os.PathLike[str]) -> Path:
        """The resolv.conf to give containers: systemd-resolved's when present,
        else the host's copied under ``data_dir`` (see :mod:`pycontainerd.cni`)."""
        from pycontainerd import cni

        return cni.resolve_conf_source(data_dir)


def _gc_root(labels: Mapping[str, str] | None) -> dict[str, str]:
    """``labels`` with the label that makes a snapshot a garbage collection
    root (the time, as ctr writes it), unless they set it themselves."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {LABEL_GC_ROOT: stamp, **(labels or {})}


def _task_info(record: ProcessRecord) -> TaskInfo:
    # containerd's Get and List name a task by ``id`` (its container's) and
    # leave ``container_id`` empty; an exec's record has both.
    return TaskInfo(
        container_id=record.container_id or record.id,
        id=record.id or record.container_id,
        pid=record.pid,
        status=Status(record.status.value),
        exit_status=record.exit_status,
    )


async def _wait_stopped(task: AsyncTask, timeout: float) -> int | None:
    """The task's exit status once it stops, or None when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    pause = _POLL_FIRST
    while True:
        status = await task.status()
        if status.status.value == Status.STOPPED.value:
            return status.exit_status
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        await AsyncPause.sleep(min(pause, left))
        pause = min(pause * 2, _POLL_MAX)


# --- exec sessions ---------------------------------------------------------------------


class _Pipes:
    """The three pipes of a streaming exec.  The caller holds ``stdin``'s
    write end and the output pipes' read ends; the task IO's copy threads
    hold the other ends.  Each pipe buffers what the kernel does (64 KiB on
    Linux): a process writing more than that to an output nobody reads
    waits, as it would on a terminal."""

    def __init__(self) -> None:
        self._files: list[IO[bytes]] = []
        read_in, self.stdin = self._pipe()
        self.stdin_source = read_in
        self.stdout, self.stdout_sink = self._pipe()
        self.stderr, self.stderr_sink = self._pipe()

    def _pipe(self) -> tuple[IO[bytes], IO[bytes]]:
        read_fd, write_fd = os.pipe()
        files = (open(read_fd, "rb", buffering=0), open(write_fd, "wb", buffering=0))  # noqa: SIM115
        self._files.extend(files)
        return files

    def end_output(self) -> None:
        """EOF for the readers: the copies into the output pipes are over."""
        for sink in (self.stdout_sink, self.stderr_sink):
            with contextlib.suppress(OSError):
                sink.close()

    def close(self) -> None:
        for file in self._files:
            with contextlib.suppress(OSError):
                file.close()


class AsyncExecSession:
    """A process started by ``exec_task_streaming``, with its streams.

    ``stdin`` is a binary file to write to (close it, or call
    :meth:`close_stdin`, and the process reads EOF); ``stdout`` and
    ``stderr`` are binary files to read from, at EOF once the process has
    exited and its output is all there.  They are plain blocking pipes; the
    ``write``/``read_*`` methods do the same from a worker thread, for async
    code.  :meth:`wait` gives the exit code; :meth:`close` kills the process
    if it still runs, deletes it and closes every pipe (also on ``with``'s exit).
    """

    def __init__(self, process: AsyncProcess, pipes: _Pipes) -> None:
        self._process = process
        self._pipes = pipes
        self.stdin = pipes.stdin
        self.stdout = pipes.stdout
        self.stderr = pipes.stderr
        self._closed = False
        # The readers see EOF once the output copies are over (the shim closed
        # its FIFOs: the process exited), whether or not anyone waits.
        threading.Thread(
            target=self._end_output_when_copied, daemon=True, name=f"exec {process.id} output"
        ).start()

    def _end_output_when_copied(self) -> None:
        io_handle = self._process.io
        if io_handle is not None:
            io_handle.wait()
        self._pipes.end_output()

    @property
    def id(self) -> str:
        """The exec id of the process."""
        return self._process.id

    @property
    def pid(self) -> int:
        return self._process.pid

    async def __aenter__(self) -> AsyncExecSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` to the process's stdin."""
        await AsyncOffload.run(self.stdin.write, data)

    async def close_stdin(self) -> None:
        self.stdin.close()

    async def read_stdout(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of stdout (-1: all of it, to its end)."""
        return await AsyncOffload.run(_read, self.stdout, size)

    async def read_stderr(self, size: int = -1) -> bytes:
        return await AsyncOffload.run(_read, self.stderr, size)

    async def wait(self) -> int:
        """Block until the process exits; its exit code."""
        return (await self._process.wait()).code

    async def close(self) -> None:
        """Kill the process if it runs, delete it, close every pipe."""
        if self._closed:
            return
        self._closed = True
        # Readers first: a copy blocked on a full pipe nobody reads must fail
        # (EPIPE), not hold the delete that waits for it.
        for reader in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                reader.close()
        try:
            with contextlib.suppress(errdefs.NotFound):
                await self._process.delete(force=True)
        finally:
            self._pipes.close()


def _read(stream: IO[bytes], size: int) -> bytes:
    if size >= 0:
        return stream.read(size) or b""
    chunks = []
    while chunk := stream.read(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


# --- mounting snapshots ----------------------------------------------------------------


class AsyncUnmount(Protocol):
    """Takes a mount made by :func:`mount_snapshot` away (again: nothing)."""

    async def __call__(self) -> None: ...


class _Mounted:
    """A temporary mount of a snapshot, taken away once."""

    def __init__(self, mounts: Sequence[Mount], root: str | Path | None) -> None:
        self._cm = temp_mount(mounts, root=root)
        self._done = False

    def enter(self) -> Path:
        return self._cm.__enter__()

    def exit(self) -> None:
        if not self._done:
            self._done = True
            self._cm.__exit__(None, None, None)


class _AsyncUnmounter:
    def __init__(self, mounted: _Mounted) -> None:
        self._mounted = mounted

    async def __call__(self) -> None:
        await AsyncOffload.run(self._mounted.exit)


async def mount_snapshot(
    service: AsyncService,
    snapshotter: str,
    key: str,
    *,
    root: str | Path | None = None,
) -> tuple[Path, AsyncUnmount]:
    """Mount the snapshot ``key`` on a new directory (under ``root``, default
    the temp dir); the directory and the function that unmounts it and
    removes the directory.  Changes to an active snapshot go into it.  This
    program must run on the daemon's host, as root."""
    if not key:
        raise errdefs.InvalidArgument("snapshot key must not be empty")
    mounts = await service.snapshot_mounts(snapshotter, key)
    mounted = _Mounted(mounts, root)
    directory = await AsyncOffload.run(mounted.enter)
    return directory, _AsyncUnmounter(mounted)


class AsyncMountedSnapshot:
    """A container's root filesystem snapshot, mounted: ``dir``, the
    container record ``info``, and ``unmount()``."""

    __slots__ = ("dir", "info", "unmount")

    def __init__(self, dir: Path, info: Container, unmount: AsyncUnmount) -> None:
        self.dir = dir
        self.info = info
        self.unmount = unmount

    def __repr__(self) -> str:
        return f"<MountedSnapshot {self.info.id!r} at {str(self.dir)!r}>"

    async def __aenter__(self) -> AsyncMountedSnapshot:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.unmount()


async def mount_container_snapshot(
    service: AsyncService, container_id: str, *, root: str | Path | None = None
) -> AsyncMountedSnapshot:
    """Mount the root filesystem snapshot of ``container_id`` (see :func:`mount_snapshot`)."""
    check_container_id(container_id)
    info = await service.get_container(container_id)
    if not info.snapshot_key or not info.snapshotter:
        raise errdefs.FailedPrecondition(
            f"container {errdefs.q(container_id)} has no snapshot to mount"
        )
    directory, unmount = await mount_snapshot(
        service, info.snapshotter, info.snapshot_key, root=root
    )
    return AsyncMountedSnapshot(directory, info, unmount)


if TYPE_CHECKING:

    def _implements_the_protocol(service: AsyncDefaultService) -> AsyncService:
        return service  # mypy checks that the default service is a Service
