"""Restart labels and policies: what the restart monitor reads off a container.

containerd's ``runtime/restart`` package, the part both sides share.  A
container labelled ``containerd.io/restart.status=running`` is kept running
by the daemon's restart monitor (:mod:`pycontainerd.services.restart`, the
``io.containerd.internal.v1.restart`` plugin); one labelled ``stopped`` is
kept stopped.  The other labels say where a restarted task's output goes
and when a stopped task is worth restarting:

=========================================  ==========================================
``containerd.io/restart.status``           ``running`` or ``stopped``: the wanted state
``containerd.io/restart.loguri``           the restarted task's stdout and stderr
                                           (``file:///path``, ``binary:///path?k=v``)
``containerd.io/restart.logpath``          deprecated since containerd 1.5: a file
                                           path, used when there is no ``loguri``
``containerd.io/restart.policy``           ``always`` (also when absent or empty),
                                           ``no``, ``on-failure[:N]``,
                                           ``unless-stopped``
``containerd.io/restart.count``            restarts so far; the monitor writes it
``containerd.io/restart.explicitly-stopped``  ``true`` stops ``unless-stopped``
                                           (set by whoever stops the container)
=========================================  ==========================================

As in containerd, ``on-failure`` never starts a container that has no
task at all: with no task there is no exit status, which reads as 0.

The client's container options that set them are in
:mod:`pycontainerd.client.restart`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pycontainerd import errdefs

__all__ = [
    "COUNT_LABEL",
    "EXPLICITLY_STOPPED_LABEL",
    "LOG_PATH_LABEL",
    "LOG_URI_LABEL",
    "MAX_POLICY_LENGTH",
    "POLICIES",
    "POLICY_LABEL",
    "STATUS_LABEL",
    "Policy",
    "parse_bool",
    "parse_policy",
    "should_restart",
]

STATUS_LABEL = "containerd.io/restart.status"
LOG_URI_LABEL = "containerd.io/restart.loguri"
#: Deprecated in containerd 1.5 (and gone in 2.0) in favour of :data:`LOG_URI_LABEL`.
LOG_PATH_LABEL = "containerd.io/restart.logpath"
POLICY_LABEL = "containerd.io/restart.policy"
COUNT_LABEL = "containerd.io/restart.count"
EXPLICITLY_STOPPED_LABEL = "containerd.io/restart.explicitly-stopped"

#: The policy names, as the plugin lists them in its capabilities.
POLICIES = ("no", "always", "on-failure", "unless-stopped")

#: A policy longer than this is refused before it is parsed (the longest
#: valid one, ``on-failure:`` and a 64-bit count, is 31 characters).
MAX_POLICY_LENGTH = 64

# Go's strconv.Atoi: an optional sign and decimal digits, nothing else.
_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Policy:
    """A restart policy: its name and, for ``on-failure``, the most restarts
    (0: no limit)."""

    name: str = "always"
    maximum_retry_count: int = 0

    def __str__(self) -> str:
        if self.maximum_retry_count > 0:
            return f"{self.name}:{self.maximum_retry_count}"
        return self.name


def _atoi(text: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError(text)
    value = int(text)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ValueError(text)
    return value


def parse_policy(text: str) -> Policy:
    """A policy label's value as containerd's ``NewPolicy`` reads it:
    ``always`` (or empty), ``no``, ``unless-stopped``, ``on-failure`` or
    ``on-failure:N``.  InvalidArgument otherwise.

    containerd ignores anything after a second ``:``; we refuse it.
    """
    if len(text) > MAX_POLICY_LENGTH:
        raise errdefs.InvalidArgument(
            f"restart policy is longer than {MAX_POLICY_LENGTH} characters"
        )
    name, sep, count = text.partition(":")
    if name in ("", "no", "always", "unless-stopped"):
        if sep:
            raise errdefs.InvalidArgument(
                f"restart policy {errdefs.q(name)} not support max retry count"
            )
        return Policy(name or "always")
    if name == "on-failure":
        if not sep:
            return Policy(name)
        try:
            retries = _atoi(count)
        except ValueError:
            raise errdefs.InvalidArgument(f"invalid max retry count: {count}") from None
        return Policy(name, retries)
    raise errdefs.InvalidArgument(f"restart policy {errdefs.q(text)} not supported")


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``; ValueError for anything else."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(text)


def should_restart(exit_status: int, labels: Mapping[str, str]) -> bool:
    """Whether the policy in ``labels`` restarts a task that is stopped with
    ``exit_status`` (0 for a task that does not exist), containerd's
    ``restart.Reconcile``.  A bad policy or count label never restarts
    (InvalidArgument says why)."""
    policy = parse_policy(labels.get(POLICY_LABEL, ""))
    if policy.name == "always":
        return True
    if policy.name == "on-failure":
        text = labels.get(COUNT_LABEL, "")
        try:
            count = _atoi(text) if text else 0
        except ValueError:
            raise errdefs.InvalidArgument(
                f"invalid {COUNT_LABEL} label {errdefs.q(text)}"
            ) from None
        limit = policy.maximum_retry_count
        return exit_status != 0 and (limit == 0 or count < limit)
    if policy.name == "unless-stopped":
        try:
            stopped = parse_bool(labels.get(EXPLICITLY_STOPPED_LABEL, ""))
        except ValueError:
            stopped = False  # as containerd: an unreadable label is "not stopped"
        return not stopped
    return False
