"""The embeddable daemon supervisor (Docker's libcontainerd remote and client).

A program that runs containers through pycontainerd without running the
daemon itself::

    with Remote("/var/lib/app/pcd", "/run/app/pcd") as remote:
        client = remote.client(backend, namespace="app")
        client.create("web", spec, image="docker.io/library/busybox:latest",
                      restart_policy="on-failure:3")
        client.start("web")

:class:`Remote` runs our daemon on a root, state and socket of its own and
restarts it when it dies; :class:`RemoteClient` runs containers and tells
the program's :class:`Backend` of every state change (:class:`StateInfo`,
:class:`EventType`), across daemon restarts.
"""

from __future__ import annotations

from pycontainerd.remote._client import LABEL_RESTART_POLICY, STOP_SIGNALS, RemoteClient
from pycontainerd.remote._restart import (
    Backoff,
    RestartManager,
    RestartPolicy,
    RestartPolicyName,
)
from pycontainerd.remote._supervisor import Remote
from pycontainerd.remote._types import (
    INIT_PROCESS_ID,
    Backend,
    EventType,
    ProcessStreams,
    ProcessSummary,
    StateInfo,
    Stats,
)

__all__ = [
    "INIT_PROCESS_ID",
    "LABEL_RESTART_POLICY",
    "STOP_SIGNALS",
    "Backend",
    "Backoff",
    "EventType",
    "ProcessStreams",
    "ProcessSummary",
    "Remote",
    "RemoteClient",
    "RestartManager",
    "RestartPolicy",
    "RestartPolicyName",
    "StateInfo",
    "Stats",
]
