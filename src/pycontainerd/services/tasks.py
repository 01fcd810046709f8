"""The local tasks service (containerd's ``tasks-service``, ``services/tasks/local.go``).

A task is a container's running side: the service finds the container
record in the namespaced metadata store, hands its spec, runtime and the
caller's rootfs mounts and stdio to the runtime v2 task manager, and
answers from the task's shim.  Checkpoints go to the content store.

Events: as in containerd 1.6, this service publishes none.  The shims
publish the ``/tasks/*`` events themselves (the daemon forwards them from
its ttrpc socket), and the task manager publishes the exit and delete of a
task whose shim died (see :mod:`pycontainerd.runtime.manager`); publishing
here too would double them.

The caller gives the rootfs mounts (ctr and our client ask the snapshotter
for the container's snapshot mounts and send them in the request, as
containerd's client does); a task created without any runs on the bundle's
``rootfs`` as the spec names it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from google.protobuf import any_pb2

from pycontainerd import errdefs, filters, namespaces, plugin
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.archive.apply import apply_layer
from pycontainerd.archive.diff import write_diff
from pycontainerd.containers import Container
from pycontainerd.content import FileReaderAt, write_blob
from pycontainerd.images import Descriptor
from pycontainerd.metadata import Metadata
from pycontainerd.mount import Mount
from pycontainerd.runtime import IO, CreateOpts, ExecOpts, Exit, ProcessInfo, State, UpdateOpts
from pycontainerd.runtime import manager as runtime_manager
from pycontainerd.runtime.shim import STATE_TIMEOUT, ShimTask
from pycontainerd.typeurl import unmarshal_any

__all__ = ["ID", "Metric", "TasksService"]

log = logging.getLogger(__name__)

ID = "tasks-service"

MEDIA_TYPE_CHECKPOINT = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
MEDIA_TYPE_CHECKPOINT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"


@dataclass(frozen=True, slots=True)
class Metric:
    id: str
    #: Nanoseconds since the epoch, when the stats were asked for.
    timestamp: int
    data: any_pb2.Any | None


class TasksService:
    def __init__(self, metadata: Metadata, runtime: runtime_manager.TaskManager) -> None:
        self._metadata = metadata
        self._runtime = runtime
        #: (namespace, container id) -> the checkpoint unpacked for its task's
        #: restore, until the task starts or is deleted.
        self._checkpoints: dict[tuple[str, str], str] = {}

    # --- lookups --------------------------------------------------------------------------

    def _container(self, id: str) -> Container:
        return self._metadata.containers.get(id)

    def _task(self, container_id: str) -> ShimTask:
        container = self._container(container_id)
        try:
            return self._runtime.get(container.id)
        except errdefs.NotFound:
            raise errdefs.NotFound(f"task {container.id} not found") from None

    async def _process(self, container_id: str, exec_id: str) -> ShimTask:
        """The task, after checking its process ``exec_id`` exists (containerd's
        ``Process`` asks the shim for its state first)."""
        task = self._task(container_id)
        if exec_id:
            await task.state(exec_id)
        return task

    # --- the API --------------------------------------------------------------------------

    async def create(
        self,
        container_id: str,
        *,
        rootfs: Sequence[Mount] = (),
        io: IO | None = None,
        checkpoint: Descriptor | None = None,
        options: any_pb2.Any | None = None,
        runtime_path: str = "",
    ) -> int:
        """Create the container's task; its pid."""
        container = self._container(container_id)
        try:
            self._runtime.get(container.id)
        except errdefs.NotFound:
            pass
        else:
            raise errdefs.AlreadyExists(f"task {container.id}")
        checkpoint_dir = ""
        if checkpoint is not None:
            checkpoint_dir = await self._unpack_checkpoint(checkpoint)
        opts = CreateOpts(
            spec=container.spec,
            rootfs=tuple(rootfs),
            io=io if io is not None else IO(),
            checkpoint=checkpoint_dir,
            runtime=runtime_path or container.runtime.name,
            runtime_options=container.runtime.options,
            task_options=options,
        )
        try:
            task = await self._runtime.create(container.id, opts)
        except BaseException:
            if checkpoint_dir:
                await asyncio.to_thread(shutil.rmtree, checkpoint_dir, True)
            raise
        if checkpoint_dir:
            self._checkpoints[(namespaces.required(), container.id)] = checkpoint_dir
        return task.pid

    async def _unpack_checkpoint(self, checkpoint: Descriptor) -> str:
        """The task checkpoint ``checkpoint`` (CRIU's image as a tar) unpacked
        into a new directory, for the shim to restore from when the task
        starts (containerd unpacks it as it does, for runc's ``restore``)."""
        if checkpoint.media_type != MEDIA_TYPE_CHECKPOINT:
            raise errdefs.InvalidArgument(f"unsupported checkpoint type {checkpoint.media_type!r}")
        store = self._metadata.content
        if store is None:
            raise errdefs.FailedPrecondition("no content store to read a checkpoint from")
        reader = await store.reader_at(checkpoint.digest)
        directory = await asyncio.to_thread(tempfile.mkdtemp, prefix="ctrd-checkpoint-")
        try:
            if reader.size != checkpoint.size:
                raise errdefs.InvalidArgument(
                    f"checkpoint {checkpoint.digest}: descriptor size {checkpoint.size} "
                    f"does not match the blob's {reader.size} bytes"
                )
            if isinstance(reader, FileReaderAt):
                await asyncio.to_thread(_apply_file, reader, directory)
            else:
                with tempfile.TemporaryFile() as copy:
                    offset = 0
                    while offset < reader.size:
                        chunk = await reader.read_at(offset, min(1 << 20, reader.size - offset))
                        if not chunk:
                            raise errdefs.Unknown(f"checkpoint {checkpoint.digest}: truncated")
                        await asyncio.to_thread(copy.write, chunk)
                        offset += len(chunk)
                    await asyncio.to_thread(_apply_stream, copy, directory)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise
        finally:
            await reader.close()
        return directory

    async def _drop_checkpoint(self, container_id: str) -> None:
        directory = self._checkpoints.pop((namespaces.required(), container_id), "")
        if directory:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    async def start(self, container_id: str, exec_id: str = "") -> int:
        task = await self._process(container_id, exec_id)
        try:
            await task.start(exec_id)
        finally:
            if not exec_id:
                # A restore reads its checkpoint when the task starts, once.
                await self._drop_checkpoint(container_id)
        state = await task.state(exec_id)
        return state.pid

    async def delete(self, container_id: str) -> Exit:
        self._task(container_id)
        try:
            return await self._runtime.delete(container_id)
        finally:
            await self._drop_checkpoint(container_id)

    async def delete_process(self, container_id: str, exec_id: str) -> Exit:
        task = await self._process(container_id, exec_id)
        return await task.delete(exec_id)

    async def get(self, container_id: str, exec_id: str = "") -> State:
        task = await self._process(container_id, exec_id)
        return await task.state(exec_id, timeout=STATE_TIMEOUT)

    async def list(self) -> list[State]:
        tasks = self._runtime.tasks()
        states = await asyncio.gather(*(_listed_state(t) for t in tasks))
        return [s for s in states if s is not None]

    async def kill(
        self, container_id: str, signal: int, *, exec_id: str = "", all: bool = False
    ) -> None:
        task = await self._process(container_id, exec_id)
        await task.kill(signal, all=all, exec_id=exec_id)

    async def exec(self, container_id: str, exec_id: str, opts: ExecOpts) -> None:
        if not exec_id:
            raise errdefs.InvalidArgument("exec id cannot be empty")
        task = self._task(container_id)
        await task.exec(exec_id, opts)

    async def resize_pty(
        self, container_id: str, width: int, height: int, exec_id: str = ""
    ) -> None:
        task = await self._process(container_id, exec_id)
        await task.resize_pty(width, height, exec_id)

    async def close_io(self, container_id: str, *, exec_id: str = "", stdin: bool = False) -> None:
        task = await self._process(container_id, exec_id)
        if stdin:
            await task.close_io(exec_id)

    async def pause(self, container_id: str) -> None:
        await self._task(container_id).pause()

    async def resume(self, container_id: str) -> None:
        await self._task(container_id).resume()

    async def list_pids(self, container_id: str) -> Sequence[ProcessInfo]:
        return await self._task(container_id).pids()

    async def update(self, container_id: str, opts: UpdateOpts) -> None:
        await self._task(container_id).update(opts)

    async def wait(self, container_id: str, exec_id: str = "") -> Exit:
        task = await self._process(container_id, exec_id)
        return await task.wait(exec_id)

    async def metrics(self, filter_strings: Sequence[str]) -> builtins.list[Metric]:
        flt = await filters.parse_async(filter_strings)
        ns = namespaces.required()
        out = []
        for task in self._runtime.tasks():
            if not flt.match(_MetricFields(task.id, ns)):
                continue
            collected = time.time_ns()
            try:
                stats = await task.stats()
            except errdefs.ContainerdError as exc:
                if not isinstance(exc, errdefs.NotFound):
                    log.warning("collecting metrics for %s: %s", task.id, exc)
                continue
            out.append(Metric(id=task.id, timestamp=collected, data=stats))
        return out

    async def checkpoint(
        self, container_id: str, options: any_pb2.Any | None
    ) -> builtins.list[Descriptor]:
        """Checkpoint the task; into the options' ``image_path`` when a runc
        runtime's options name one (nothing stored), else into the content
        store (the image and the container's spec)."""
        container = self._container(container_id)
        task = self._task(container.id)
        image_path = _checkpoint_path(container.runtime.name, options)
        if image_path:
            await task.checkpoint(image_path, options)
            return []
        store = self._metadata.content
        if store is None:
            raise errdefs.FailedPrecondition("no content store to write a checkpoint to")
        with tempfile.TemporaryDirectory(prefix="ctrd-checkpoint") as image:
            await task.checkpoint(image, options)
            tar_path = os.path.join(image + ".tar")
            try:
                await asyncio.to_thread(_tar_dir, image, tar_path)
                checkpoint = await _write_file(store, MEDIA_TYPE_CHECKPOINT, tar_path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tar_path)
        spec = container.spec.SerializeToString() if container.spec is not None else b""
        digest = "sha256:" + hashlib.sha256(spec).hexdigest()
        await write_blob(store, f"checkpoint-spec-{container.id}-{digest}", spec, expected=digest)
        return [checkpoint, Descriptor(MEDIA_TYPE_CHECKPOINT_CONFIG, digest, len(spec))]


def _checkpoint_path(runtime: str, options: any_pb2.Any | None) -> str:
    """containerd's ``getCheckpointPath``: runc's CheckpointOptions.image_path."""
    if options is None or not runtime.startswith("io.containerd.runc"):
        return ""
    # Go clients name the type bare (``containerd.runc.v1.CheckpointOptions``),
    # which protobuf's own Any.Unpack refuses for want of a ``/``.
    try:
        checkpoint_options = unmarshal_any(options)
    except errdefs.NotFound:
        checkpoint_options = None
    if not isinstance(checkpoint_options, oci_pb2.CheckpointOptions):
        raise errdefs.InvalidArgument(f"invalid task checkpoint option for {runtime}")
    return checkpoint_options.image_path


async def _listed_state(task: ShimTask) -> State | None:
    try:
        return await task.state(timeout=STATE_TIMEOUT)
    except errdefs.NotFound:
        return None  # deleted while listing
    except errdefs.ContainerdError as exc:
        log.warning("get state for %s: %s", task.id, exc)
        return None


class _MetricFields:
    """The fields a metrics filter sees: ``id``, ``namespace``."""

    def __init__(self, id: str, namespace: str) -> None:
        self._id = id
        self._namespace = namespace

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if path and path[0] == "id":
            return self._id, True
        if path and path[0] == "namespace":
            return self._namespace, True
        return "", False


def _apply_file(reader: FileReaderAt, directory: str) -> None:
    with reader.open_file() as raw:
        apply_layer(directory, raw)


def _apply_stream(copy: BinaryIO, directory: str) -> None:
    copy.seek(0)
    apply_layer(directory, copy)


def _tar_dir(directory: str, tar_path: str) -> None:
    with open(tar_path, "wb") as out:
        write_diff(None, directory, out)


def _chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


async def _write_file(store: object, media_type: str, path: str) -> Descriptor:
    digest = await asyncio.to_thread(_sha256_file, path)
    size = os.path.getsize(path)
    await write_blob(store, f"checkpoint-{digest}", _chunks(path), size=size, expected=digest)  # type: ignore[arg-type]
    return Descriptor(media_type, digest, size)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    for chunk in _chunks(path):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SERVICE,
        id=ID,
        init=lambda ctx: TasksService(
            ctx.get(plugin.PluginType.METADATA),
            ctx.plugins.get_by_id(plugin.PluginType.RUNTIME_V2, runtime_manager.ID),
        ),
        requires=(plugin.PluginType.METADATA, plugin.PluginType.RUNTIME_V2),
    )
)
