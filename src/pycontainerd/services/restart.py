"""The restart monitor (containerd's ``io.containerd.internal.v1.restart`` plugin).

Keeps the tasks of labelled containers in the state their labels ask for
(:mod:`pycontainerd.restart` has the labels and policies).  Each pass looks
at every namespace's containers that carry ``containerd.io/restart.status``:

- ``running``: a container with no task, or whose task is stopped (or its
  shim unreachable), gets the stopped task deleted and a new one created on
  its snapshot's mounts and started, its output going to the ``loguri``
  label's URI (else the deprecated ``logpath`` label's file, else nowhere),
  when its restart policy says so; ``containerd.io/restart.count`` counts
  the restarts.  A task that is created, paused or pausing is left alone.
- ``stopped``: a task that is not stopped is killed (SIGKILL to all its
  processes), waited for and deleted.

Passes run every ``interval`` (``[plugins."io.containerd.internal.v1.restart"]``,
default ``10s``, as containerd) and, unlike containerd, also soon after any
``/tasks/exit`` event, so a task that dies is back within a fraction of a
second rather than within the interval.  A container the monitor started is
not started again before ``interval`` has passed, though: a task that keeps
failing is restarted at containerd's pace, once per interval, not in a
tight loop.  The monitor is nothing but reconciliation of metadata against
the live tasks, so it holds no state across daemon restarts and needs none.

It works over the local services only, as a client in the daemon's process
would (containerd's plugin runs its Go client over in-memory services).

Bounds: at most :data:`MAX_CHANGES_PER_PASS` starts and stops per pass (the
rest wait for the next), :data:`MAX_CONCURRENCY` at once (state queries
too), each within :data:`CHANGE_TIMEOUT`; a failure is logged with the
container's namespace and id and never stops the other changes or the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pycontainerd import errdefs, namespaces, plugin
from pycontainerd import restart as labels
from pycontainerd.cio import uri as log_uris
from pycontainerd.containers import Container
from pycontainerd.events import Exchange
from pycontainerd.gc.scheduler import parse_duration
from pycontainerd.mount import Mount
from pycontainerd.runtime import IO, State, Status
from pycontainerd.services import containers as containers_service
from pycontainerd.services import namespaces as namespaces_service
from pycontainerd.services import snapshots as snapshots_service
from pycontainerd.services import tasks as tasks_service

__all__ = [
    "CHANGE_TIMEOUT",
    "ID",
    "MAX_CHANGES_PER_PASS",
    "MAX_CONCURRENCY",
    "RestartConfig",
    "RestartMonitor",
    "parse_interval",
]

log = logging.getLogger(__name__)

ID = "restart"

#: The default and fallback interval between passes (containerd's).
DEFAULT_INTERVAL = 10.0
#: Starts and stops per pass; more wait for the next pass.
MAX_CHANGES_PER_PASS = 256
#: Changes (and task state queries) running at once.
MAX_CONCURRENCY = 8
#: How long one start (delete, create, start) or stop (kill, wait, delete) may take.
CHANGE_TIMEOUT = 30.0
#: The least time between the end of a pass and the start of the next, when
#: exit events come quicker.
MIN_PASS_GAP = 0.1
#: How long closing waits for a pass in progress before cancelling it (a
#: start cut between create and start would leave a created task, which the
#: monitor then leaves alone, as containerd does).
CLOSE_GRACE = 5.0

_EXIT_TOPIC = "/tasks/exit"
_LABEL_FILTER = f"labels.{errdefs.q(labels.STATUS_LABEL)}"
_STATUS_NAMES = {status: status.name.lower() for status in Status}


@dataclass(frozen=True, slots=True)
class RestartConfig:
    """``[plugins."io.containerd.internal.v1.restart"]``."""

    #: How often every labelled container is checked (a Go duration).
    interval: str = "10s"


@dataclass(frozen=True, slots=True)
class _Change:
    """One container to bring to its wanted state."""

    namespace: str
    id: str
    #: ``running`` or ``stopped``.
    want: str
    log_uri: str = ""
    log_path: str = ""
    #: The restart count to record before starting (containerd's ``count``).
    count: int = 0


class RestartMonitor:
    """Reconciles labelled containers with their tasks; see the module docstring."""

    def __init__(
        self,
        *,
        namespaces: namespaces_service.NamespacesService,
        containers: containers_service.ContainersService,
        tasks: tasks_service.TasksService,
        snapshots: snapshots_service.SnapshotsService,
        exchange: Exchange | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._namespaces = namespaces
        self._containers = containers
        self._tasks = tasks
        self._snapshots = snapshots
        self._exchange = exchange
        self.interval = interval if interval > 0 else DEFAULT_INTERVAL
        self._wake = asyncio.Event()
        self._closing = False
        self._runner: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        #: (namespace, id) -> loop time the monitor last started its task;
        #: entries older than the interval are dropped at each pass.
        self._started: dict[tuple[str, str], float] = {}
        self.passes = 0

    # --- life ----------------------------------------------------------------

    def start(self) -> None:
        """Run passes on the running loop: the first at once."""
        if self._runner is not None:
            return
        loop = asyncio.get_running_loop()
        self._runner = loop.create_task(self._run(), name="restart-monitor")
        if self._exchange is not None:
            self._watcher = loop.create_task(self._watch(), name="restart-monitor-events")

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(runner), CLOSE_GRACE)
        except TimeoutError:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("restart monitor: reconcile failed")
            ended = loop.time()
            if self._closing:
                break
            await asyncio.sleep(min(MIN_PASS_GAP, self.interval))
            # A timer, not wait_for: that would start a task per wait, and
            # code that checks it leaves no task behind would see ours.
            timer = loop.call_at(ended + self.interval, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()

    async def _watch(self) -> None:
        """Wake the loop on every task exit."""
        assert self._exchange is not None
        try:
            async for _ in self._exchange.subscribe([f'topic=="{_EXIT_TOPIC}"']):
                self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The interval alone still brings every container back.
            log.exception("restart monitor: watching task exits failed")

    # --- one pass --------------------------------------------------------------

    async def reconcile(self) -> None:
        """One pass over every namespace: find the changes, then apply them."""
        self.passes += 1
        now = asyncio.get_running_loop().time()
        self._started = {k: t for k, t in self._started.items() if now - t < self.interval - 0.001}
        gate = asyncio.Semaphore(MAX_CONCURRENCY)
        changes: list[_Change] = []
        for ns in await self._namespaces.list():
            try:
                with namespaces.namespace(ns.name):
                    changes += await self._changes(ns.name, gate)
            except Exception as exc:
                log.error(
                    "restart monitor: monitor for changes: %s", exc, extra={"namespace": ns.name}
                )
        if len(changes) > MAX_CHANGES_PER_PASS:
            log.warning(
                "restart monitor: %d changes, %d left for the next pass",
                len(changes),
                len(changes) - MAX_CHANGES_PER_PASS,
            )
            changes = changes[:MAX_CHANGES_PER_PASS]
        await asyncio.gather(*(self._apply(change, gate) for change in changes))

    async def _changes(self, ns: str, gate: asyncio.Semaphore) -> list[_Change]:
        records = await self._containers.list_raw(_LABEL_FILTER)

        async def one(id: str, container_labels: Mapping[str, str]) -> _Change | None:
            async with gate:
                return await self._change(ns, id, container_labels)

        found = await asyncio.gather(*(one(r.id, r.labels) for r in records))
        return [change for change in found if change is not None]

    async def _change(
        self, ns: str, id: str, container_labels: Mapping[str, str]
    ) -> _Change | None:
        """What container ``id`` needs, as containerd's monitor decides it."""
        want = container_labels.get(labels.STATUS_LABEL, "")
        if want not in ("running", "stopped"):
            return None
        state: State | None = None
        try:
            state = await self._tasks.get(id)
        except errdefs.NotFound:
            pass
        except errdefs.ContainerdError as exc:
            # A shim that does not answer: its task is as good as stopped.
            log.warning("restart monitor: task state: %s", exc, extra={"namespace": ns, "id": id})
        if state is not None and _STATUS_NAMES[state.status] == want:
            return None
        if want == "stopped":
            return _Change(ns, id, want) if state is not None else None
        if state is not None and state.status in (Status.CREATED, Status.PAUSED, Status.PAUSING):
            return None
        if (ns, id) in self._started:
            return None  # started within the interval: the next pass looks again
        exit_status = state.exit_status if state is not None else 0
        try:
            if not labels.should_restart(exit_status, container_labels):
                return None
        except errdefs.InvalidArgument as exc:
            log.error(
                "restart monitor: policy reconcile: %s", exc, extra={"namespace": ns, "id": id}
            )
            return None
        count_text = container_labels.get(labels.COUNT_LABEL, "")
        count = int(count_text) if count_text.isdigit() and len(count_text) < 19 else 0
        return _Change(
            ns,
            id,
            want,
            log_uri=container_labels.get(labels.LOG_URI_LABEL, ""),
            log_path=container_labels.get(labels.LOG_PATH_LABEL, ""),
            count=count + 1,
        )

    async def _apply(self, change: _Change, gate: asyncio.Semaphore) -> None:
        apply: Callable[[_Change], Awaitable[None]] = (
            self._start if change.want == "running" else self._stop
        )
        extra = {"namespace": change.namespace, "id": change.id}
        async with gate:
            try:
                with namespaces.namespace(change.namespace):
                    await asyncio.wait_for(apply(change), CHANGE_TIMEOUT)
            except TimeoutError:
                log.error(
                    "restart monitor: %s took over %ss", _verb(change), CHANGE_TIMEOUT, extra=extra
                )
            except Exception as exc:
                log.error("restart monitor: %s: %s", _verb(change), exc, extra=extra)
            else:
                log.info("restart monitor: %s", _verb(change), extra=extra)

    # --- the changes -------------------------------------------------------------

    async def _start(self, change: _Change) -> None:
        io = _log_io(change)
        exists = True
        try:
            state = await self._tasks.get(change.id)
        except errdefs.NotFound:
            exists = False
        except errdefs.ContainerdError:
            pass  # no state to go by: delete it, as containerd does
        else:
            if state.status not in (Status.STOPPED, Status.UNKNOWN):
                return  # started by someone else since the pass looked
        if exists:
            await self._delete_quietly(change)
        self._started[(change.namespace, change.id)] = asyncio.get_running_loop().time()
        if change.count > 0:
            await self._containers.update(
                Container(id=change.id, labels={labels.COUNT_LABEL: str(change.count)}),
                f"labels.{labels.COUNT_LABEL}",
            )
        container = self._containers.get(change.id)
        await self._tasks.create(change.id, rootfs=await self._rootfs(container), io=io)
        try:
            await self._tasks.start(change.id)
        except BaseException:
            # containerd leaves the created task, which it then never touches
            # again (a created task counts as being started); we clear it so
            # that the next pass tries afresh.
            await self._delete_quietly(change)
            raise

    async def _rootfs(self, container: Container) -> list[Mount]:
        """The mounts of the container's snapshot, as a client sends them."""
        if not container.snapshot_key:
            return []
        if not container.snapshotter:
            raise errdefs.InvalidArgument(
                "unable to resolve rootfs mounts without snapshotter on container"
            )
        return await self._snapshots.mounts(container.snapshotter, container.snapshot_key)

    async def _stop(self, change: _Change) -> None:
        """containerd's ``killTask``: SIGKILL every process, wait, delete."""
        try:
            await self._tasks.get(change.id)
        except errdefs.NotFound:
            return
        waiter = asyncio.ensure_future(self._tasks.wait(change.id))
        try:
            try:
                await self._tasks.kill(change.id, signal.SIGKILL, all=True)
            except errdefs.ContainerdError:
                # Already gone (or its shim is): a delete may still clear it.
                if await self._delete_quietly(change):
                    return
                raise
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError, errdefs.ContainerdError):
                    await waiter
        await self._tasks.delete(change.id)

    async def _delete_quietly(self, change: _Change) -> bool:
        try:
            await self._tasks.delete(change.id)
        except errdefs.NotFound:
            return True
        except errdefs.ContainerdError as exc:
            log.warning(
                "restart monitor: delete task: %s",
                exc,
                extra={"namespace": change.namespace, "id": change.id},
            )
            return False
        return True


def _verb(change: _Change) -> str:
    return "start task" if change.want == "running" else "stop task"


def _log_io(change: _Change) -> IO:
    """The restarted task's IO: the log URI, else the log file, else none."""
    if change.log_uri:
        log_uris.parse_log_uri(change.log_uri)
        if change.log_path:
            log.warning(
                "restart monitor: the logpath label is deprecated, using the loguri label",
                extra={"namespace": change.namespace, "id": change.id},
            )
        return IO(stdout=change.log_uri, stderr=change.log_uri)
    if change.log_path:
        # containerd hands the bare path to the shim; as a file:// URI the
        # shim appends to it, which is what the label has always promised.
        uri = log_uris.log_uri("file", change.log_path)
        return IO(stdout=uri, stderr=uri)
    return IO()


def parse_interval(text: str) -> float:
    """The config's interval in seconds; ``0`` means the default, as in containerd."""
    try:
        interval = parse_duration(text)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"restart monitor config: interval: {exc}") from None
    if interval < 0:
        raise errdefs.InvalidArgument(
            f"restart monitor config: interval {errdefs.q(text)} is negative"
        )
    return interval or DEFAULT_INTERVAL


def _init(ctx: plugin.InitContext) -> RestartMonitor:
    config = ctx.config if isinstance(ctx.config, RestartConfig) else RestartConfig()
    interval = parse_interval(config.interval)
    ctx.capabilities.extend(labels.POLICIES)
    service = plugin.PluginType.SERVICE
    monitor = RestartMonitor(
        namespaces=ctx.plugins.get_by_id(service, namespaces_service.ID),
        containers=ctx.plugins.get_by_id(service, containers_service.ID),
        tasks=ctx.plugins.get_by_id(service, tasks_service.ID),
        snapshots=ctx.plugins.get_by_id(service, snapshots_service.ID),
        exchange=ctx.events,
        interval=interval,
    )
    monitor.start()
    return monitor


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.INTERNAL,
        id=ID,
        init=_init,
        requires=(plugin.PluginType.EVENT, plugin.PluginType.SERVICE),
        config=RestartConfig,
    )
)
