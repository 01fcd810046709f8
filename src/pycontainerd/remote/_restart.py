"""Restart policies and their backoff (Docker's restartmanager).

A policy is ``no``, ``always``, ``unless-stopped`` or ``on-failure[:N]``.
After each exit the :class:`RestartManager` says whether to restart and
after how long: the delay starts at ``Backoff.initial`` and doubles with
every restart, up to ``Backoff.maximum``, and starts over once a run lasted
``Backoff.reset_after`` seconds.  A container the user stopped (a stop
signal, or ``stop()``) is not restarted by any policy; ``on-failure:N``
restarts only after a non-zero exit, at most N times (no limit without N).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pycontainerd import errdefs

__all__ = ["Backoff", "RestartManager", "RestartPolicy", "RestartPolicyName"]

#: A bound on ``on-failure:N``, so a typo cannot restart forever in effect.
MAX_RETRY_COUNT = 1 << 20


class RestartPolicyName(enum.StrEnum):
    NO = "no"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"
    ON_FAILURE = "on-failure"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between restarts (of a container, or of the daemon)."""

    initial: float = 0.1
    maximum: float = 60.0
    factor: float = 2.0
    #: A run at least this long (seconds) resets the delay to ``initial``.
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum or self.factor < 1 or self.reset_after < 0:
            raise errdefs.InvalidArgument(f"invalid backoff {self!r}")

    def next(self, previous: float) -> float:
        """The delay after ``previous`` (0: none yet)."""
        if previous <= 0:
            return self.initial
        return min(previous * self.factor, self.maximum)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    name: RestartPolicyName = RestartPolicyName.NO
    #: ``on-failure``'s limit; 0 is none.
    maximum_retry_count: int = 0

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        """``no``, ``always``, ``unless-stopped``, ``on-failure`` or ``on-failure:N``."""
        name, sep, count = text.partition(":")
        try:
            policy = RestartPolicyName(name or "no")
        except ValueError:
            raise errdefs.InvalidArgument(f"invalid restart policy {errdefs.q(text)}") from None
        if not sep:
            return cls(policy)
        if policy is not RestartPolicyName.ON_FAILURE:
            raise errdefs.InvalidArgument(
                f"invalid restart policy {errdefs.q(text)}: "
                f"maximum retry count cannot be used with {policy}"
            )
        if not count.isdigit() or not 0 <= int(count) <= MAX_RETRY_COUNT:
            raise errdefs.InvalidArgument(
                f"invalid restart policy {errdefs.q(text)}: "
                f"maximum retry count must be a number from 0 to {MAX_RETRY_COUNT}"
            )
        return cls(policy, int(count))

    def __str__(self) -> str:
        if self.name is RestartPolicyName.ON_FAILURE and self.maximum_retry_count:
            return f"{self.name}:{self.maximum_retry_count}"
        return str(self.name)


class RestartManager:
    """One container's restarts: how many so far, and the current delay."""

    def __init__(self, policy: RestartPolicy, backoff: Backoff) -> None:
        self.policy = policy
        self.backoff = backoff
        self.restart_count = 0
        self.delay = 0.0

    def should_restart(
        self, exit_code: int, manually_stopped: bool, run_seconds: float
    ) -> tuple[bool, float]:
        """Whether to restart after an exit, and after how many seconds."""
        name = self.policy.name
        if manually_stopped or name is RestartPolicyName.NO:
            return False, 0.0
        if name is RestartPolicyName.ON_FAILURE:
            limit = self.policy.maximum_retry_count
            if exit_code == 0 or (limit and self.restart_count >= limit):
                return False, 0.0
        if run_seconds >= self.backoff.reset_after:
            self.delay = 0.0
        self.delay = self.backoff.next(self.delay)
        self.restart_count += 1
        return True, self.delay
