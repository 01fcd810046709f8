"""Budgets, hypothesis settings and input counts shared by the fuzz targets.

Two passes run the same targets:

* the short pass (the default, what ``pytest -q`` and so ``make test`` run):
  each target tries a fixed, small number of inputs, about a minute in all;
* the long pass (``make fuzz``, or ``FUZZ_SECONDS=600 pytest tests/fuzz``):
  each target keeps drawing fresh inputs, round after round, until its
  share of ``FUZZ_SECONDS`` is spent.  Shares follow :data:`WEIGHTS`.

A target is a strategy and a check; :func:`run` counts every input drawn.
The counts are printed at the end of the session and, when ``FUZZ_REPORT``
names a file, written there as JSON for ``make fuzz`` to add up.

The example database lives outside the repository (``FUZZ_DB``, default
``$TMPDIR/pycontainerd-hypothesis``), so an input that once failed is tried
first on the next run on the same machine.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

__all__ = ["COUNTS", "LONG", "NOTES", "WEIGHTS", "budget", "production_stack", "run"]

T = TypeVar("T")

#: Seconds for the whole long pass; 0 (unset) means the short pass.
FUZZ_SECONDS = float(os.environ.get("FUZZ_SECONDS") or 0)
LONG = FUZZ_SECONDS > 0

#: Each target's share of the long pass.  The live daemon is the slowest per
#: input and the tar reader the richest, so they get the most.
WEIGHTS: dict[str, float] = {
    "tar-reader-bytes": 2,
    "tar-reader-headers": 3,
    "tar-reader-memory": 1,
    "tar-apply": 3,
    "tar-apply-memory": 0.5,
    "filter-parse-text": 1.5,
    "filter-parse-grammar": 1.5,
    "filter-match": 1.5,
    "platform-parse": 0.25,
    "reference-parse": 0.25,
    "digest-validate": 0.25,
    "manifest-decode": 0.75,
    "daemon-messages": 4.5,
    "daemon-bytes": 1.5,
    "http2-frames": 2,
    "http2-bytes": 0.5,
}

#: Inputs tried, per target, in this session.
COUNTS: collections.Counter[str] = collections.Counter()
#: Lines for the end-of-session summary (what a target could not reach...).
NOTES: list[str] = []

_DB = DirectoryBasedExampleDatabase(
    os.environ.get("FUZZ_DB") or str(Path(tempfile.gettempdir(), "pycontainerd-hypothesis"))
)


def budget(target: str) -> float:
    """Seconds the long pass gives ``target``."""
    return FUZZ_SECONDS * WEIGHTS[target] / sum(WEIGHTS.values())


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        # Inputs vary in cost by design (a daemon call, a layer apply); a
        # slow one is a finding only if it hangs, which the checks bound.
        deadline=None,
        database=_DB,
        # The short pass must not spend its minute shrinking a failure.
        phases=tuple(Phase) if LONG else (Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def run(
    target: str, strategy: st.SearchStrategy[T], check: Callable[[T], Any], *, short: int
) -> None:
    """Try ``check`` on inputs drawn from ``strategy``: ``short`` of them in
    the short pass, or rounds of fresh ones until the target's budget is
    spent in the long pass.  ``check`` raises on a finding."""
    if target not in WEIGHTS:
        raise KeyError(f"fuzz target {target!r} has no weight")

    def counted(value: T) -> T:
        COUNTS[target] += 1
        return value

    # The database keys examples by the check's source, so each target
    # replays only its own.
    if not LONG:
        _settings(short)(given(strategy.map(counted))(check))()
        return
    deadline = time.monotonic() + budget(target)
    examples = max(short // 2, 10)
    while time.monotonic() < deadline:
        before, start = COUNTS[target], time.monotonic()
        _settings(examples)(given(strategy.map(counted))(check))()
        rate = (COUNTS[target] - before) / max(time.monotonic() - start, 1e-3)
        # Size the next round to end near the deadline (and at most a minute
        # later), so a round is never cut short while it shrinks a finding.
        left = deadline - time.monotonic()
        examples = int(min(max(rate * min(left, 60.0), 10), 100_000))


@contextlib.contextmanager
def production_stack(headroom: int = 900) -> Iterator[None]:
    """Python's default recursion limit (1,000 frames), counted from here.

    Hypothesis raises the limit while it runs a test, which would hide a
    walk that recurses per level: in the daemon or a client, such a walk
    dies near 1,000 levels with ``RecursionError``.
    """
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)
