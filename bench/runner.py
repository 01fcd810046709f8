"""Run a scenario against our daemon and Debian's containerd, alternating rounds.

Both daemons are started fresh for each scenario, side by side, on private
temp paths (the helpers in ``tests/support/daemons.py``).  After one untimed
warm-up round on each, the rounds go ours, containerd, ours, containerd, ...
so that drift on the host (frequency scaling, other load) hits both equally.
Each round records its wall time and the daemon's CPU time (user + system,
from ``/proc/PID/stat``) over that round.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bench.registry import Measure, Scenario, Target
from tests.support import daemons

__all__ = ["OURS", "THEIRS", "Result", "Sample", "Stats", "run_scenario"]

OURS = "pycontainerd"
THEIRS = "containerd"

_TICK = os.sysconf("SC_CLK_TCK")

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Sample:
    wall: float  # seconds
    server_cpu: float  # seconds of daemon user+system CPU during the round
    metrics: dict[str, float] = field(default_factory=dict)  # Measure.metrics, if any


@dataclass(frozen=True, slots=True)
class Stats:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        return cls(statistics.median(values), min(values), max(values))


@dataclass(slots=True)
class Result:
    scenario: Scenario
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {OURS: [], THEIRS: []})

    def wall(self, daemon: str) -> Stats:
        return Stats.of([s.wall for s in self.samples[daemon]])

    def cpu(self, daemon: str) -> Stats:
        return Stats.of([s.server_cpu for s in self.samples[daemon]])

    def metric_names(self) -> list[str]:
        return list(dict.fromkeys(k for s in self.samples[OURS] for k in s.metrics))

    def metric(self, daemon: str, name: str) -> Stats | None:
        values = [s.metrics[name] for s in self.samples[daemon] if name in s.metrics]
        return Stats.of(values) if values else None

    @property
    def ratio_pairwise(self) -> float:
        """Median over rounds of ours/containerd (round i of each, run back to back)."""
        pairs = zip(self.samples[OURS], self.samples[THEIRS], strict=True)
        return statistics.median(o.wall / t.wall for o, t in pairs)

    @property
    def ratio_of_medians(self) -> float:
        return self.wall(OURS).median / self.wall(THEIRS).median

    @property
    def cpu_ratio_of_medians(self) -> float | None:
        theirs = self.cpu(THEIRS).median
        return self.cpu(OURS).median / theirs if theirs > 0 else None


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


def _round(target: Target, measure: Measure) -> Sample:
    if measure.reset is not None:
        measure.reset()
    cpu0 = process_cpu(target.pid)
    start = time.perf_counter()
    measure.run()
    wall = time.perf_counter() - start
    cpu = measure.cpu() if measure.cpu is not None else process_cpu(target.pid) - cpu0
    metrics = measure.metrics() if measure.metrics is not None else {}
    return Sample(wall, cpu, metrics)


@contextlib.contextmanager
def _daemons() -> Iterator[tuple[Target, Target]]:
    # Ours at info, the level containerd logs at by default: debug logging costs.
    with daemons.pycontainerd(log_level="info") as ours, daemons.containerd() as theirs:
        yield (
            Target(OURS, ours.address, ours.process.pid, ours.root),
            Target(THEIRS, theirs.address, theirs.process.pid, theirs.root),
        )


def run_scenario(
    scenario: Scenario, rounds: int, warmup: int = 1, progress: Progress | None = None
) -> Result:
    say = progress or (lambda _msg: None)
    result = Result(scenario)
    say(f"{scenario.name}: starting {OURS} and {THEIRS}")
    with _daemons() as targets, contextlib.ExitStack() as stack:
        measures = [(t, stack.enter_context(scenario.setup(t))) for t in targets]
        for i in range(warmup):
            for target, measure in measures:
                sample = _round(target, measure)
                say(f"{scenario.name}: warm-up {i + 1}/{warmup} {target.label} {sample.wall:.3f}s")
        for i in range(rounds):
            line = [f"{scenario.name}: round {i + 1}/{rounds}"]
            for target, measure in measures:
                sample = _round(target, measure)
                result.samples[target.label].append(sample)
                line.append(f"{target.label} {sample.wall:.3f}s")
            say(" ".join(line))
    return result
