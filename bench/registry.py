"""The scenario registry: a name, a setup against one daemon, a measured callable.

A scenario is a generator function decorated with :func:`scenario`.  It gets
a :class:`Target` (one running daemon), does its untimed setup, yields a
:class:`Measure` and cleans up after the ``yield``::

    @scenario("ping", "100 Version calls", ops=100, unit="call")
    def ping(target: Target) -> Iterator[Measure]:
        with Client(target.address, target.namespace) as client:
            yield Measure(lambda: [client.version() for _ in range(100)])

The harness calls the setup once per daemon, then calls ``Measure.run`` once
per round (``Measure.reset`` first, untimed, when given) alternating between
the daemons.  ``run`` can be any Python callable: client calls, or a whole
command such as ``ctr images import`` (see :mod:`bench.commands`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Measure", "Scenario", "Target", "all_scenarios", "get", "scenario"]


@dataclass(frozen=True, slots=True)
class Target:
    """One running daemon a scenario is set up against."""

    label: str  # "pycontainerd" or "containerd"
    address: str  # unix socket path
    pid: int
    root: Path
    namespace: str = "bench"


@dataclass(frozen=True, slots=True)
class Measure:
    """What one round does: ``run`` is timed, ``reset`` (if any) runs untimed before it.

    ``cpu``, when given, is read after ``run`` and reported as the round's
    server CPU instead of what the harness's daemon burnt: a scenario that
    starts daemons of its own (``daemon-startup``) reports theirs.
    ``metrics`` gives other figures of the round (``ctr-run-d-50``: memory).
    """

    run: Callable[[], object]
    reset: Callable[[], object] | None = None
    cpu: Callable[[], float] | None = None
    #: Read (untimed) after each round: named figures the table reports
    #: beside the times, as median per daemon and ratio (memory, say).
    metrics: Callable[[], dict[str, float]] | None = None


SetupFn = Callable[[Target], Iterator[Measure]]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    setup: Callable[[Target], AbstractContextManager[Measure]]
    ops: int = 1  # operations per round, to print a per-operation figure
    unit: str = "round"  # what one operation is called ("round trip", "import", ...)
    rounds: int | None = None  # its default rounds, when long ones need fewer; --rounds wins
    #: What the second column measures when it is not containerd (``curl``).
    versus: str | None = None


_SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    summary: str,
    *,
    ops: int = 1,
    unit: str = "round",
    rounds: int | None = None,
    versus: str | None = None,
) -> Callable[[SetupFn], SetupFn]:
    """Register a generator-function setup under ``name`` (registration order is run order).

    ``rounds`` replaces the harness's default number of rounds for a scenario
    whose rounds are long; an explicit ``--rounds`` still applies to all.
    ``versus`` names what the setup measures on containerd's side when it is
    not containerd (a scenario against ``curl`` ignores that daemon).
    """

    def register(fn: SetupFn) -> SetupFn:
        if name in _SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        _SCENARIOS[name] = Scenario(
            name, summary, contextlib.contextmanager(fn), ops, unit, rounds, versus
        )
        return fn

    return register


def all_scenarios() -> list[Scenario]:
    _load()
    return list(_SCENARIOS.values())


def get(name: str) -> Scenario:
    _load()
    try:
        return _SCENARIOS[name]
    except KeyError:
        known = ", ".join(_SCENARIOS)
        raise KeyError(f"unknown scenario {name!r} (known: {known})") from None


def _load() -> None:
    from bench import scenarios  # noqa: F401  (registers on import)
