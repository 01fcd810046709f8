"""The GC scheduler plugin (``io.containerd.gc.v1`` ``scheduler``): when to collect.

Behaviour follows containerd 1.6's ``gc/scheduler``.  Every committed
metadata write is a *mutation*; one made while something is dirty (a
deletion since the last collection) is also a *deletion*.  A collection
runs:

* ``startup_delay`` after start;
* ``schedule_delay`` after a manual trigger (:meth:`Scheduler.schedule_and_wait`,
  which ``images rm --sync`` and ``leases rm --sync`` use), after
  ``deletion_threshold`` deletions when that is set, and — when nothing is
  scheduled yet — after the first deletion or ``mutation_threshold``
  mutations;
* at each scheduled time when there was a deletion, a trigger or at least
  ``mutation_threshold`` mutations since the last one; otherwise the check
  is pushed back by one interval.

The interval paces collection so that its pauses take at most
``pause_threshold`` of real time: average pause / threshold - average pause
(one second until the first collection).  Each collection is logged at
debug level as ``garbage collected`` with its pause as ``d``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pycontainerd import errdefs, plugin
from pycontainerd.gc import Stats

__all__ = ["Collector", "Scheduler", "SchedulerConfig", "format_duration", "parse_duration"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """``[plugins."io.containerd.gc.v1.scheduler"]``, containerd's keys and defaults."""

    #: Guarantee a collection after this many deletions (0: deletions alone schedule one
    #: only when none is scheduled).
    deletion_threshold: int = 0
    #: Collect at the next scheduled time once this many mutations happened (0: never
    #: for mutations alone).
    mutation_threshold: int = 100
    #: The most of real time collection pauses may take (clamped to 0..0.5).
    pause_threshold: float = 0.02
    #: How long after a trigger or a reached threshold the collection runs (Go duration).
    schedule_delay: str = "0s"
    #: How long after start the first collection runs (Go duration).
    startup_delay: str = "100ms"


class Collector(Protocol):
    """What the scheduler drives: metadata's :class:`~pycontainerd.metadata.GarbageCollector`."""

    def register_mutation_callback(self, callback: Callable[[bool], None]) -> None: ...

    async def garbage_collect(self) -> Stats: ...


# --- Go durations ------------------------------------------------------------

_UNITS_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9}
_UNITS_NS.update({"m": 60 * 10**9, "h": 3600 * 10**9})
_PART = re.compile(r"(\d+)?(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string (``100ms``, ``1m30s``, ``0``)."""
    s = text
    sign = 1
    if s[:1] in ("+", "-"):
        sign, s = (-1 if s[0] == "-" else 1), s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None or m.end() == pos or (m.group(1) is None and not m.group(2)):
            raise ValueError(f'time: invalid duration "{text}"')
        whole, frac, unit = m.groups()
        scale = _UNITS_NS[unit]
        total += int(whole or 0) * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = m.end()
    return sign * total / 1e9


def _go_float(value: float) -> str:
    """A float as Go's ``fmt.Sprint`` prints it (``0.02``, ``0``)."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _fraction(value: int, digits: int) -> str:
    whole, rest = divmod(value, 10**digits)
    tail = str(rest).rjust(digits, "0").rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def format_duration(seconds: float) -> str:
    """Seconds as Go's ``time.Duration.String()`` prints them (``1.5ms``, ``2m0s``)."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 10**3:
        return f"{sign}{ns}ns"
    if ns < 10**6:
        return f"{sign}{_fraction(ns, 3)}µs"
    if ns < 10**9:
        return f"{sign}{_fraction(ns, 6)}ms"
    hours, ns = divmod(ns, 3600 * 10**9)
    minutes, ns = divmod(ns, 60 * 10**9)
    prefix = f"{hours}h{minutes}m" if hours else (f"{minutes}m" if minutes else "")
    return f"{sign}{prefix}{_fraction(ns, 9)}s"


# --- the scheduler -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Event:
    at: float
    mutation: bool = False
    dirty: bool = False


class Scheduler:
    """Runs the collector per the configured thresholds; see the module doc.

    Mutations are counted in the callback itself and only move a timer, so a
    busy metadata store costs the scheduler no task switch per write; the
    task wakes when a collection is due.  Events that arrive while one runs
    are held and replayed after it, as containerd's unbuffered channel does.
    """

    def __init__(self, collector: Collector, config: SchedulerConfig | None = None) -> None:
        cfg = config or SchedulerConfig()
        self._collector = collector
        self.pause_threshold = min(max(cfg.pause_threshold, 0.0), 0.5)
        self.deletion_threshold = cfg.deletion_threshold
        self.mutation_threshold = max(cfg.mutation_threshold, 0)
        self.schedule_delay = max(parse_duration(cfg.schedule_delay), 0.0)
        self.startup_delay = max(parse_duration(cfg.startup_delay), 0.0)
        #: Callers waiting for the next collection that starts after they asked.
        self._waiters: list[asyncio.Future[Stats]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        #: Events that came in during a collection, replayed after it.
        self._held: list[_Event] | None = None
        # Scheduling state, containerd's names.
        self._next_at: float | None = None  # nextCollection
        self._last: float | None = None  # lastCollection (when it ended)
        self._interval = 1.0
        self._gc_time = 0.0
        self._collections = 0
        self._triggered = False
        self._deletions = 0
        self._mutations = 0
        collector.register_mutation_callback(self._mutation)

    @property
    def exports(self) -> dict[str, str]:
        """What ``ctr plugins ls -d`` shows, as containerd exports it."""
        return {
            "PauseThreshold": _go_float(self.pause_threshold),
            "DeletionThreshold": str(self.deletion_threshold),
            "MutationThreshold": str(self.mutation_threshold),
            "ScheduleDelay": format_duration(self.schedule_delay),
        }

    def start(self) -> None:
        """Start scheduling on the running loop."""
        if self._task is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        if self.startup_delay > 0:
            self._schedule(loop.time() + self.startup_delay)
        self._task = loop.create_task(self._run(), name="gc-scheduler")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._timer is not None:
            self._timer.cancel()
        self._fail_waiters(self._waiters)
        self._waiters = []

    async def schedule_and_wait(self) -> Stats:
        """Trigger a collection and wait for it; it starts after this call."""
        if self._task is None or self._loop is None:
            raise errdefs.Unavailable("garbage collection scheduler is not running")
        waiter: asyncio.Future[Stats] = self._loop.create_future()
        self._waiters.append(waiter)
        self._event(_Event(self._loop.time()))
        return await asyncio.shield(waiter)

    # -- events

    def _mutation(self, dirty: bool) -> None:
        if self._loop is not None:
            self._event(_Event(self._loop.time(), mutation=True, dirty=dirty))

    def _schedule(self, at: float) -> None:
        assert self._loop is not None
        self._next_at = at
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._due.set)

    def _event(self, e: _Event) -> None:
        if self._held is not None:
            self._held.append(e)
            return
        if not e.mutation:
            self._triggered = True
        elif self._last is not None and self._last > e.at:
            return  # happened before the last collection ended
        else:
            self._deletions += e.dirty
            self._mutations += 1
        if (
            self._triggered
            or 0 < self.deletion_threshold <= self._deletions
            or (
                self._next_at is None
                and (
                    (self.deletion_threshold == 0 and self._deletions > 0)
                    or 0 < self.mutation_threshold <= self._mutations
                )
            )
        ):
            assert self._loop is not None
            soon = self._loop.time() + self.schedule_delay
            if self._next_at is None or self._next_at > soon:
                self._schedule(soon)

    # -- the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._due.wait()
            self._due.clear()
            if self._next_at is None or self._next_at - loop.time() > 0.001:
                continue  # rescheduled later since; its own timer will wake us
            if (
                not self._triggered
                and self._last is not None
                and self._deletions == 0
                and (self.mutation_threshold == 0 or self._mutations < self.mutation_threshold)
            ):
                self._schedule(loop.time() + self._interval)
                continue
            await self._collect()

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        waiters, self._waiters = self._waiters, []
        scheduled_for = self._next_at if self._next_at is not None else loop.time()
        self._held = []
        try:
            stats = await self._collector.garbage_collect()
        except Exception as exc:
            log.error("garbage collection failed", extra={"error": str(exc)})
            done = loop.time()
            # Retry after as long as this one waited since the last, plus a second.
            since = scheduled_for - self._last if self._last is not None else self._interval
            self._last = done
            self._schedule(done + max(since, 0.0) + 1.0)
            self._fail_waiters(waiters)
        except BaseException:
            self._fail_waiters(waiters)
            raise
        else:
            done = loop.time()
            log.debug("garbage collected", extra={"d": format_duration(stats.elapsed)})
            self._gc_time += stats.elapsed
            self._collections += 1
            self._triggered = False
            self._deletions = self._mutations = 0
            if self.pause_threshold > 0:
                # Space collections so their pauses take pause_threshold of the time.
                avg = self._gc_time / self._collections
                self._interval = avg / self.pause_threshold - avg
            self._last = done
            self._schedule(done + self._interval)
            for w in waiters:
                if not w.done():
                    w.set_result(stats)
        finally:
            held, self._held = self._held, None
            for e in held:
                self._event(e)

    @staticmethod
    def _fail_waiters(waiters: list[asyncio.Future[Stats]]) -> None:
        for w in waiters:
            if not w.done():
                w.set_exception(errdefs.Unknown("gc failed"))


def _init(ctx: plugin.InitContext) -> Scheduler:
    md = ctx.get(plugin.PluginType.METADATA)
    config = ctx.config if isinstance(ctx.config, SchedulerConfig) else SchedulerConfig()
    try:
        scheduler = Scheduler(md.gc, config)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"gc scheduler config: {exc}") from None
    ctx.exports.update(scheduler.exports)
    scheduler.start()
    return scheduler


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GC,
        id="scheduler",
        init=_init,
        requires=(plugin.PluginType.METADATA,),
        config=SchedulerConfig,
    )
)
