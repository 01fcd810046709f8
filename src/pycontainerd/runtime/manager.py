"""The task manager: the ``io.containerd.runtime.v2.task`` plugin (containerd's
``runtime/v2/manager.go``).

It keeps the live tasks of each namespace, each a :class:`ShimTask` on its
own ttrpc connection to its shim.  Creating a task makes its bundle, starts
the shim with ``start``, records the shim binary in the bundle and calls
Create; deleting one calls Delete and Shutdown, closes the connection and
removes the bundle.  For our own shim the manager first looks for the live
server of the task's group itself and runs ``start`` only when none
answers (:func:`~pycontainerd.runtime.binary.live_group_server`).

**A shim that dies.**  Every connection is watched; when one closes and the
daemon did not delete its task, the manager runs ``SHIM delete`` (which
kills what is left of the container and unmounts its rootfs), removes the
bundle, and publishes ``/tasks/exit`` and ``/tasks/delete`` with the exit
``delete`` reported (255 and now when it failed), as containerd does.  A
``Wait`` that was waiting on the dead shim answers with that exit.

**Restore at start-up.**  For every bundle under the state directory the
manager reads the shim's ``address`` and connects; a shim that answers is
live again (its tasks listed, waited on, killed as before), one that does
not is cleaned up as a dead one, and its exit published -- containerd 1.6
publishes nothing for those; we do, so an exit that happened while the
daemon was down is never lost.  A live shim whose task exited while the
daemon was down is still retrying its own ``/tasks/exit`` (Go's shim
requeues a failed publish for about 15 s after the exit, then drops it):
the manager waits for that event until :data:`SHIM_PUBLISH_RETRY_WINDOW`
after the exit and publishes the exit itself only if the shim's did not
come, so the event arrives once either way.  Work directories left without
a bundle are removed.

**Events.**  The shims publish the task events (create, start, exit,
delete, exec-added, exec-started, paused, resumed, checkpointed, oom)
straight to the daemon's ttrpc socket.  The daemon publishes only the
exit and delete of a shim that died, and the exit of a task that exited
while it was down, as said above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from google.protobuf import timestamp_pb2

from pycontainerd import errdefs, identifiers, namespaces, plugin, ttrpc
from pycontainerd.api.events import task_pb2 as events_pb
from pycontainerd.events import Envelope, Exchange
from pycontainerd.runtime import CreateOpts, Exit, State, Status
from pycontainerd.runtime.binary import (
    OUR_SHIM,
    Resolver,
    ShimLog,
    delete_shim,
    live_group_server,
    socket_path,
    start_shim,
)
from pycontainerd.runtime.bundle import Bundle, load_bundle, new_bundle
from pycontainerd.runtime.shim import STATE_TIMEOUT, ShimGone, ShimTask

__all__ = ["DEFAULT_RUNTIMES", "ID", "RuntimeConfig", "TaskManager"]

log = logging.getLogger(__name__)

ID = "task"
DEFAULT_RUNTIMES: Mapping[str, Mapping[str, str]] = {
    "io.containerd.runc.v2": {"shim": OUR_SHIM},
    "io.containerd.pyrunc.v2": {"shim": OUR_SHIM},
}

#: containerd's ``io.containerd.timeout.shim.load`` and ``.cleanup``; start
#: gets the same bound as load (containerd bounds it by the request).
LOAD_TIMEOUT = 5.0
CLEANUP_TIMEOUT = 5.0
START_TIMEOUT = 10.0
#: How long after an exit a shim may still deliver its own ``/tasks/exit``:
#: Go's shim retries a failed publish after 1, 2, 3, 4 and 5 s, then drops it.
SHIM_PUBLISH_RETRY_WINDOW = 20.0


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """``[plugins."io.containerd.runtime.v2.task"]``.

    ``runtimes`` maps a runtime name to its shim::

        [plugins."io.containerd.runtime.v2.task".runtimes."io.containerd.runc.v2"]
          shim = "/usr/bin/containerd-shim-runc-v2"

    ``shim`` is an absolute path or a binary name (looked up beside the
    daemon, then on ``PATH``).  Names given here are added to the defaults
    (both runc names run ``containerd-shim-pyrunc-v2``) or replace them; a
    name mapped nowhere resolves as containerd resolves it.
    """

    platforms: tuple[str, ...] = ("linux/amd64",)
    sched_core: bool = False
    runtimes: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_RUNTIMES.items()}
    )

    def shims(self) -> dict[str, str]:
        """Runtime name -> shim, defaults included; InvalidArgument when malformed."""
        out = {k: v["shim"] for k, v in DEFAULT_RUNTIMES.items()}
        if not isinstance(self.runtimes, Mapping):
            raise errdefs.InvalidArgument("runtimes: expected a table of tables")
        for name, table in self.runtimes.items():
            where = f"runtimes.{errdefs.q(name)}"
            if not isinstance(table, Mapping):
                raise errdefs.InvalidArgument(f"{where}: expected a table")
            unknown = set(table) - {"shim"}
            if unknown:
                raise errdefs.InvalidArgument(f"{where}.{sorted(unknown)[0]}: unknown setting")
            shim = table.get("shim")
            if not isinstance(shim, str) or not shim:
                raise errdefs.InvalidArgument(f"{where}.shim: expected a non-empty string")
            out[name] = shim
        return out


def _timestamp(ns: int) -> timestamp_pb2.Timestamp:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


class TaskManager:
    """The live tasks by namespace and id, and the shims under them."""

    def __init__(
        self,
        root: Path,
        state: Path,
        *,
        resolver: Resolver,
        exchange: Exchange,
        grpc_address: str,
        ttrpc_address: str,
        publish_binary: str,
    ) -> None:
        self.root = root
        self.state = state
        self._resolver = resolver
        self._events = exchange
        self._grpc_address = grpc_address
        self._ttrpc_address = ttrpc_address
        self._publish_binary = publish_binary
        self._tasks: dict[str, dict[str, ShimTask]] = {}
        #: Ids being created, per namespace (a second Create fails at once).
        self._creating: dict[str, set[str]] = {}
        #: Watchers, cleanups and delayed reports: cancelled on close.
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False

    # --- lookups --------------------------------------------------------------------------

    def get(self, id: str) -> ShimTask:
        ns = namespaces.required()
        task = self._tasks.get(ns, {}).get(id)
        if task is None:
            raise errdefs.NotFound(f"task {id} not found")
        return task

    def tasks(self) -> list[ShimTask]:
        return list(self._tasks.get(namespaces.required(), {}).values())

    def _add(self, task: ShimTask) -> None:
        self._tasks.setdefault(task.namespace, {})[task.id] = task
        self._spawn(self._watch(task), f"watch shim {task.namespace}/{task.id}")

    def _remove(self, task: ShimTask) -> bool:
        tasks = self._tasks.get(task.namespace, {})
        if tasks.get(task.id) is not task:
            return False
        del tasks[task.id]
        if not tasks:
            self._tasks.pop(task.namespace, None)
        return True

    def _spawn(self, coro: Any, name: str) -> None:
        bg = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    # --- create and delete ----------------------------------------------------------------

    async def create(self, id: str, opts: CreateOpts) -> ShimTask:
        ns = namespaces.required()
        identifiers.validate(id)
        creating = self._creating.setdefault(ns, set())
        if id in creating or id in self._tasks.get(ns, {}):
            raise errdefs.AlreadyExists(f"task {id}")
        creating.add(id)
        try:
            task = await self._start(ns, id, opts)
            try:
                await task.create(opts)
            except BaseException:
                await self._abandon(task)
                raise
            self._add(task)
            return task
        finally:
            creating.discard(id)
            if not creating:
                self._creating.pop(ns, None)

    async def _start(self, ns: str, id: str, opts: CreateOpts) -> ShimTask:
        binary = self._resolver.resolve(opts.runtime)
        spec = opts.spec.value if opts.spec is not None else None
        bundle = await asyncio.to_thread(new_bundle, self.root, self.state, ns, id, spec)
        shim_log: ShimLog | None = None
        try:
            shim_log = await ShimLog.open(bundle)
            client = None
            if self._resolver.is_ours(binary):
                client = await live_group_server(
                    bundle, spec, grpc_address=self._grpc_address, timeout=LOAD_TIMEOUT
                )
            if client is None:
                options = opts.task_options
                if options is None or not options.value:
                    options = opts.runtime_options
                address = await start_shim(
                    binary,
                    bundle,
                    grpc_address=self._grpc_address,
                    ttrpc_address=self._ttrpc_address,
                    publish_binary=self._publish_binary,
                    options=options,
                    timeout=START_TIMEOUT,
                )
                client = await ttrpc.Client.connect(address, timeout=LOAD_TIMEOUT)
            bundle.record_shim_binary(binary)
        except BaseException:
            if shim_log is not None:
                shim_log.close()
            await asyncio.to_thread(bundle.delete)
            raise
        return ShimTask(bundle, client, shim_log, binary=binary)

    async def _abandon(self, task: ShimTask) -> None:
        """Undo a start whose Create failed: the shim is told to go, the bundle removed."""
        task.deleted = True
        with contextlib.suppress(errdefs.ContainerdError):
            await task.delete()
        await task.shutdown()
        await task.close()
        try:
            await asyncio.to_thread(task.bundle.delete)
        except (errdefs.ContainerdError, OSError):
            # The caller's error is the answer; this one is only logged.
            log.exception("removing bundle", extra={"namespace": task.namespace, "id": task.id})

    async def delete(self, id: str) -> Exit:
        """Delete the task in its shim, let the shim go and remove the bundle."""
        task = self.get(id)
        try:
            exit = await task.delete()
        except ShimGone:
            # Its watcher cleans up and reports the exit; answer with it.
            async with asyncio.timeout(CLEANUP_TIMEOUT * 2):
                return await asyncio.shield(task.lost)
        task.deleted = True
        self._remove(task)
        await task.shutdown()
        await task.close()
        await asyncio.to_thread(task.bundle.delete)
        return exit

    # --- dead shims -----------------------------------------------------------------------

    async def _watch(self, task: ShimTask) -> None:
        await task.client.wait_closed()
        if task.deleted or self._closing:
            return
        log.info("shim disconnected", extra={"namespace": task.namespace, "id": task.id})
        listed = self._remove(task)
        await self._cleanup_dead_shim(task.bundle, task.binary, publish=listed, task=task)

    async def _cleanup_dead_shim(
        self, bundle: Bundle, binary: str, *, publish: bool, task: ShimTask | None = None
    ) -> Exit:
        extra = {"namespace": bundle.namespace, "id": bundle.id}
        log.warning("cleaning up after shim disconnected", extra=extra)
        exit: Exit | None = None
        try:
            exit = await delete_shim(
                binary,
                bundle,
                grpc_address=self._grpc_address,
                ttrpc_address=self._ttrpc_address,
                publish_binary=self._publish_binary,
                timeout=CLEANUP_TIMEOUT,
            )
        except (errdefs.ContainerdError, OSError, ValueError) as exc:
            log.warning("failed to clean up after shim disconnected: %s", exc, extra=extra)
        if task is not None:
            await task.close()
        if exit is None:
            exit = Exit(pid=0, status=255, exited_at=time.time_ns())
        if publish:
            exited_at = _timestamp(exit.exited_at)
            await self._events.publish(
                "/tasks/exit",
                events_pb.TaskExit(
                    container_id=bundle.id,
                    id=bundle.id,
                    pid=exit.pid,
                    exit_status=exit.status,
                    exited_at=exited_at,
                ),
                namespace=bundle.namespace,
            )
            await self._events.publish(
                "/tasks/delete",
                events_pb.TaskDelete(
                    container_id=bundle.id,
                    pid=exit.pid,
                    exit_status=exit.status,
                    exited_at=exited_at,
                ),
                namespace=bundle.namespace,
            )
        if task is not None and not task.lost.done():
            task.lost.set_result(exit)
        return exit

    # --- restore --------------------------------------------------------------------------

    async def restore(self) -> None:
        """Reconnect to the shims of every bundle, clean up after dead ones."""
        for ns_dir in _subdirs(self.state):
            ns = ns_dir.name
            try:
                namespaces.validate(ns)
            except errdefs.InvalidArgument:
                log.warning("skipping a state directory that names no namespace: %s", ns_dir)
                continue
            for bundle_dir in _subdirs(ns_dir):
                try:
                    bundle = load_bundle(self.root, self.state, ns, bundle_dir.name)
                except errdefs.InvalidArgument:
                    log.warning("skipping a directory that names no task: %s", bundle_dir)
                    continue
                await self._restore_bundle(bundle)
        await asyncio.to_thread(self._remove_orphan_work_dirs)

    async def _restore_bundle(self, bundle: Bundle) -> None:
        extra = {"namespace": bundle.namespace, "id": bundle.id}
        if not any(bundle.path.iterdir()):
            await asyncio.to_thread(bundle.delete)
            return
        binary = bundle.shim_binary()
        if not binary:
            log.warning("bundle names no shim; removing it", extra=extra)
            await asyncio.to_thread(bundle.delete)
            return
        try:
            task = await self._load(bundle, binary)
        except Exception as exc:
            log.info("shim of task is gone: %s", exc, extra=extra)
            await self._cleanup_dead_shim(bundle, binary, publish=True)
            return
        self._add(task)
        try:
            state = await task.state(timeout=STATE_TIMEOUT)
        except errdefs.ContainerdError as exc:
            log.warning("state of restored task: %s", exc, extra=extra)
            return
        log.info("restored task", extra={**extra, "status": state.status.name})
        if state.status == Status.STOPPED:
            await self._report_exit_while_down(task, state)

    async def _load(self, bundle: Bundle, binary: str) -> ShimTask:
        address = (bundle.path / "address").read_text().strip()
        shim_log = await ShimLog.open(bundle)
        try:
            client = await ttrpc.Client.connect(socket_path(address), timeout=LOAD_TIMEOUT)
        except BaseException:
            shim_log.close()
            raise
        task = ShimTask(bundle, client, shim_log, binary=binary)
        try:
            await task.connect(LOAD_TIMEOUT)
        except BaseException:
            await task.close()
            raise
        return task

    async def _report_exit_while_down(self, task: ShimTask, state: State) -> None:
        """Publish the exit of a task that exited while the daemon was down,
        unless its shim still delivers its own (see the module's docstring)."""
        window = state.exited_at / 1e9 + SHIM_PUBLISH_RETRY_WINDOW - time.time()
        if window <= 0:
            await self._publish_exit(task, state)
            return
        # Subscribed before this returns: the ttrpc listener, where the
        # shim's event would come in, starts only after every plugin.
        flt = f'topic=="/tasks/exit",namespace=="{task.namespace}",event.container_id=="{task.id}"'
        events = cast(AsyncGenerator[Envelope, None], self._events.subscribe([flt]))
        before = self._events.subscriber_count
        first = asyncio.ensure_future(anext(events))
        while self._events.subscriber_count == before and not first.done():
            await asyncio.sleep(0)

        async def wait_or_publish() -> None:
            try:
                async with asyncio.timeout(window):
                    await first
                    return
            except TimeoutError:
                await self._publish_exit(task, state)
            finally:
                first.cancel()
                await events.aclose()

        self._spawn(wait_or_publish(), f"exit of {task.namespace}/{task.id}")

    async def _publish_exit(self, task: ShimTask, state: State) -> None:
        await self._events.publish(
            "/tasks/exit",
            events_pb.TaskExit(
                container_id=task.id,
                id=task.id,
                pid=state.pid,
                exit_status=state.exit_status,
                exited_at=_timestamp(state.exited_at),
            ),
            namespace=task.namespace,
        )

    def _remove_orphan_work_dirs(self) -> None:
        for ns_dir in _subdirs(self.root):
            for work in _subdirs(ns_dir):
                if not (self.state / ns_dir.name / work.name).exists():
                    shutil.rmtree(work, ignore_errors=True)

    # --- shutdown -------------------------------------------------------------------------

    async def close(self) -> None:
        """Let go of the shims (they and their tasks keep running)."""
        self._closing = True
        for bg in list(self._background):
            bg.cancel()
        for bg in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await bg
        for tasks in list(self._tasks.values()):
            for task in list(tasks.values()):
                await task.close()
        self._tasks.clear()


def _subdirs(path: Path) -> list[Path]:
    """Directories under ``path`` not hidden (a hidden one is being removed)."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return []
    return [
        Path(e.path)
        for e in entries
        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
    ]


def _publish_binary() -> str:
    beside = Path(sys.executable).parent / "pycontainerd"
    if beside.exists():
        return str(beside)
    return shutil.which("pycontainerd") or os.path.abspath(sys.argv[0])


async def _init(ctx: plugin.InitContext) -> TaskManager:
    config: RuntimeConfig = ctx.config
    resolver = Resolver(config.shims())
    for d in (ctx.root, ctx.state):
        d.mkdir(mode=0o711, parents=True, exist_ok=True)
    ctx.platforms.extend(config.platforms)
    manager = TaskManager(
        ctx.root,
        ctx.state,
        resolver=resolver,
        exchange=ctx.events,
        grpc_address=ctx.grpc_address,
        ttrpc_address=ctx.ttrpc_address,
        publish_binary=_publish_binary(),
    )
    await manager.restore()
    return manager


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.RUNTIME_V2,
        id=ID,
        init=_init,
        config=RuntimeConfig,
    )
)
