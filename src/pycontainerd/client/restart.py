"""Container options for the daemon's restart monitor (containerd's ``runtime/restart``).

Each option sets (or clears) a ``containerd.io/restart.*`` label on the
container being built or updated, for ``new_container`` and
``Container.update`` of both clients::

    from pycontainerd.client import restart

    container = await client.new_container(
        "web", with_new_snapshot("web", image), with_spec(spec),
        restart.with_status("running"),
        restart.with_file_log_uri("/var/log/web.log"),
        restart.with_policy("unless-stopped"),
    )

The daemon then creates and starts the container's task, and again
whenever it stops (within the monitor's ``interval``); ``with_status
("stopped")`` has it killed instead, and ``with_no_restarts`` hands the
container back to its owner.  The labels and policies are described in
:mod:`pycontainerd.restart`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

from pycontainerd import containers, errdefs
from pycontainerd.cio import uri as log_uris
from pycontainerd.restart import (
    COUNT_LABEL,
    EXPLICITLY_STOPPED_LABEL,
    LOG_PATH_LABEL,
    LOG_URI_LABEL,
    POLICY_LABEL,
    STATUS_LABEL,
    Policy,
    parse_policy,
)

__all__ = [
    "COUNT_LABEL",
    "EXPLICITLY_STOPPED_LABEL",
    "LOG_PATH_LABEL",
    "LOG_URI_LABEL",
    "POLICY_LABEL",
    "STATUSES",
    "STATUS_LABEL",
    "Policy",
    "parse_policy",
    "with_binary_log_uri",
    "with_file_log_uri",
    "with_log_path",
    "with_log_uri",
    "with_no_restarts",
    "with_policy",
    "with_status",
]

#: The process statuses a container may be labelled with (containerd's
#: ``ProcessStatus``); the monitor acts on ``running`` and ``stopped``.
STATUSES = ("running", "created", "stopped", "paused", "pausing", "unknown")

ContainerOpt = Callable[[containers.Container], containers.Container]


def _set(key: str, value: str) -> ContainerOpt:
    return lambda c: dataclasses.replace(c, labels={**c.labels, key: value})


def with_status(status: str) -> ContainerOpt:
    """Have the monitor keep the container's task ``running`` or ``stopped``."""
    if status not in STATUSES:
        raise errdefs.InvalidArgument(f"unknown process status {errdefs.q(status)}")
    return _set(STATUS_LABEL, status)


def with_log_uri(uri: str) -> ContainerOpt:
    """Send a restarted task's stdout and stderr to ``uri`` (``file:///path``,
    ``binary:///path?key=value``), checked here as the shim will read it."""
    log_uris.parse_log_uri(uri)
    return _set(LOG_URI_LABEL, uri)


def with_binary_log_uri(
    binary: str | os.PathLike[str], args: Mapping[str, str] | None = None
) -> ContainerOpt:
    """A restarted task's output piped to the logging program ``binary``."""
    return with_log_uri(log_uris.log_uri("binary", binary, args))


def with_file_log_uri(path: str | os.PathLike[str]) -> ContainerOpt:
    """A restarted task's output appended to the file at ``path``."""
    return with_log_uri(log_uris.log_uri("file", path))


def with_log_path(path: str | os.PathLike[str]) -> ContainerOpt:
    """Deprecated (containerd 1.5): the ``logpath`` label, a file the output
    is appended to; prefer :func:`with_file_log_uri`."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise errdefs.InvalidArgument(f"{errdefs.q(text)} must be absolute")
    return _set(LOG_PATH_LABEL, text)


def with_policy(policy: Policy | str) -> ContainerOpt:
    """When a stopped task is restarted: a :class:`Policy` or its text
    (``always``, ``no``, ``on-failure[:N]``, ``unless-stopped``)."""
    parsed = parse_policy(policy) if isinstance(policy, str) else policy
    return _set(POLICY_LABEL, str(parsed))


def with_no_restarts(c: containers.Container) -> containers.Container:
    """Clear the status, policy and log labels: the monitor leaves the container alone."""
    dropped = (STATUS_LABEL, POLICY_LABEL, LOG_URI_LABEL, LOG_PATH_LABEL)
    return dataclasses.replace(c, labels={k: v for k, v in c.labels.items() if k not in dropped})
