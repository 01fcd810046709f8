"""The GC scheduler: when collections run, who waits for them, its config."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from pycontainerd import errdefs
from pycontainerd.daemon import main
from pycontainerd.gc.scheduler import (
    Scheduler,
    SchedulerConfig,
    format_duration,
    parse_duration,
)

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class FakeStats:
    elapsed: float
    n: int


class FakeCollector:
    def __init__(self, elapsed: float = 0.001) -> None:
        self.elapsed = elapsed
        self.callbacks: list[Callable[[bool], None]] = []
        self.runs = 0
        self.fail = False
        #: When set, a collection waits for it (then it is cleared for the next one).
        self.gate: asyncio.Event | None = None
        self.running = asyncio.Event()

    def register_mutation_callback(self, callback: Callable[[bool], None]) -> None:
        self.callbacks.append(callback)

    def mutate(self, dirty: bool = False) -> None:
        for callback in self.callbacks:
            callback(dirty)

    async def garbage_collect(self) -> FakeStats:
        self.runs += 1
        self.running.set()
        if self.gate is not None:
            await self.gate.wait()
        self.running.clear()
        if self.fail:
            raise RuntimeError("boom")
        return FakeStats(self.elapsed, self.runs)


def run(body: Callable[[Scheduler, FakeCollector], Awaitable[None]], **config: object) -> None:
    async def main_() -> None:
        collector = FakeCollector()
        scheduler = Scheduler(collector, SchedulerConfig(**config))  # type: ignore[arg-type]
        scheduler.start()
        try:
            await body(scheduler, collector)
        finally:
            await scheduler.aclose()

    asyncio.run(main_())


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_collects_once_after_the_startup_delay_then_only_when_needed() -> None:
    async def body(s: Scheduler, c: FakeCollector) -> None:
        assert c.runs == 0
        await until(lambda: c.runs == 1)
        # Several intervals (~49ms at a 1ms pause) pass with nothing to do.
        await asyncio.sleep(0.2)
        assert c.runs == 1

    run(body, startup_delay="20ms")


def test_no_startup_delay_means_no_startup_collection() -> None:
    async def body(s: Scheduler, c: FakeCollector) -> None:
        await asyncio.sleep(0.1)
        assert c.runs == 0
        assert (await s.schedule_and_wait()).n == 1  # type: ignore[attr-defined]

    run(body, startup_delay="0s")


def test_a_deletion_is_collected_at_the_next_interval_a_mutation_is_not() -> None:
    async def body(s: Scheduler, c: FakeCollector) -> None:
        await until(lambda: c.runs == 1)
        c.mutate(dirty=False)
        await asyncio.sleep(0.15)
        assert c.runs == 1
        c.mutate(dirty=True)
        await until(lambda: c.runs == 2)

    run(body, startup_delay="1ms")


def test_the_mutation_threshold_forces_a_collection() -> None:
    async def body(s: Scheduler, c: FakeCollector) -> None:
        await until(lambda: c.runs == 1)
        for _ in range(3):
            c.mutate()
        await until(lambda: c.runs == 2)

    run(body, startup_delay="1ms", mutation_threshold=3)


def test_the_deletion_threshold_collects_without_waiting_for_the_interval() -> None:
    async def body(s: Scheduler, c: FakeCollector) -> None:
        await until(lambda: c.runs == 1)
        # The pause threshold makes the interval ~10s: only the threshold can act.
        c.mutate(dirty=True)
        await asyncio.sleep(0.1)
        assert c.runs == 1
        c.mutate(dirty=True)
        await until(lambda: c.runs == 2)

    run(body, startup_delay="1ms", deletion_threshold=2, pause_threshold=0.0001)


def test_schedule_and_wait_gets_a_collection_that_starts_after_it_asked() -> None:
    async def body(s: Scheduler, c: FakeCollector) -> None:
        c.gate = asyncio.Event()
        first = asyncio.create_task(s.schedule_and_wait())
        await asyncio.wait_for(c.running.wait(), 2)
        # Asked while the first collection runs: it must not count for this caller.
        second = asyncio.create_task(s.schedule_and_wait())
        await asyncio.sleep(0.02)
        c.gate.set()
        assert (await first).n == 1  # type: ignore[attr-defined]
        assert (await second).n == 2  # type: ignore[attr-defined]
        assert c.runs == 2

    run(body, startup_delay="0s")


def test_waiters_on_one_collection_share_it() -> None:
    async def body(s: Scheduler, c: FakeCollector) -> None:
        results = await asyncio.gather(*(s.schedule_and_wait() for _ in range(5)))
        assert {r.n for r in results} == {1}  # type: ignore[attr-defined]
        assert c.runs == 1

    run(body, startup_delay="0s")


def test_a_failed_collection_fails_its_waiters_and_the_scheduler_goes_on() -> None:
    async def body(s: Scheduler, c: FakeCollector) -> None:
        c.fail = True
        with pytest.raises(errdefs.Unknown, match="gc failed"):
            await s.schedule_and_wait()
        c.fail = False
        assert (await s.schedule_and_wait()).n == 2  # type: ignore[attr-defined]

    run(body, startup_delay="0s")


def test_closing_fails_pending_waiters_and_refuses_new_ones() -> None:
    async def main_() -> None:
        c = FakeCollector()
        c.gate = asyncio.Event()
        s = Scheduler(c, SchedulerConfig(startup_delay="0s"))
        s.start()
        waiting = asyncio.create_task(s.schedule_and_wait())
        await asyncio.wait_for(c.running.wait(), 2)
        await s.aclose()
        with pytest.raises(errdefs.Unknown):
            await waiting
        with pytest.raises(errdefs.Unavailable):
            await s.schedule_and_wait()

    asyncio.run(main_())


def test_config_is_clamped_and_exported_as_containerd_exports_it() -> None:
    s = Scheduler(FakeCollector(), SchedulerConfig())
    assert s.exports == {
        "PauseThreshold": "0.02",
        "DeletionThreshold": "0",
        "MutationThreshold": "100",
        "ScheduleDelay": "0s",
    }
    s = Scheduler(
        FakeCollector(),
        SchedulerConfig(pause_threshold=3, mutation_threshold=-1, schedule_delay="-1s"),
    )
    assert (s.pause_threshold, s.mutation_threshold, s.schedule_delay) == (0.5, 0, 0.0)
    with pytest.raises(ValueError, match="invalid duration"):
        Scheduler(FakeCollector(), SchedulerConfig(startup_delay="100"))


def test_default_config_has_containerds_scheduler_section() -> None:
    text = main.default_config_text()
    section = """
  [plugins."io.containerd.gc.v1.scheduler"]
    deletion_threshold = 0
    mutation_threshold = 100
    pause_threshold = 0.02
    schedule_delay = "0s"
    startup_delay = "100ms"
"""
    assert section in text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("100ms", 0.1),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("-3us", -3e-6),
        ("250µs", 250e-6),
        ("1h0m0.5s", 3600.5),
        (".5s", 0.5),
    ],
)
def test_parse_duration_reads_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "100", "1x", "s", "1.s.", "+", "1s 2s"])
def test_parse_duration_refuses_what_go_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (12e-9, "12ns"),
        (1.5e-6, "1.5µs"),
        (0.001234567, "1.234567ms"),
        (0.1, "100ms"),
        (1.5, "1.5s"),
        (120, "2m0s"),
        (3600.25, "1h0m0.25s"),
        (-2, "-2s"),
    ],
)
def test_format_duration_prints_as_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
