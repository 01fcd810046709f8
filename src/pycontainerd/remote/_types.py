"""What the supervisor tells the program that embeds it, and how.

The names follow Docker's libcontainerd, the embedder this package is
modelled on: a :class:`Backend` is told of every state change of its
containers with a :class:`StateInfo`, whose ``state`` is one of
:class:`EventType`'s values (libcontainerd's ``StateStart``... strings), and
is handed the streams of every process it starts.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import BinaryIO, Protocol

__all__ = [
    "INIT_PROCESS_ID",
    "Backend",
    "EventType",
    "ProcessStreams",
    "ProcessSummary",
    "StateInfo",
    "Stats",
]

#: The process id a container's init process is reported under (libcontainerd's
#: ``InitFriendlyName``); an exec is reported under the id it was added with.
INIT_PROCESS_ID = "init"


class EventType(enum.StrEnum):
    """A state change of a container or of one of its processes."""

    START_CONTAINER = "start-container"
    PAUSE = "pause"
    RESUME = "resume"
    #: The init process exited and the container is not restarted.
    EXIT = "exit"
    #: The init process exited and the restart policy restarts it (after its backoff).
    RESTART = "restart"
    #: The embedding program reattached to a task that still runs.
    RESTORE = "restore"
    START_PROCESS = "start-process"
    EXIT_PROCESS = "exit-process"
    OOM = "oom"


@dataclass(frozen=True, slots=True)
class StateInfo:
    """One state change: ``pid`` and ``process_id`` of the process it is about;
    for exits (``exit``, ``restart``, ``exit-process``) its code and time, and
    whether the container was reported out of memory before it ended."""

    state: EventType
    pid: int = 0
    exit_code: int = 0
    exited_at: dt.datetime | None = None
    oom_killed: bool = False
    process_id: str = INIT_PROCESS_ID


@dataclass(frozen=True, slots=True)
class ProcessStreams:
    """A process's standard streams as the backend sees them (libcontainerd's
    ``IOPipe``): ``stdin`` to write (None unless asked for), ``stdout`` and
    ``stderr`` to read until EOF (``stderr`` is None with a terminal, whose
    output all comes on ``stdout``).

    The backend must read the output (or close it): a process whose output
    nobody reads blocks once the pipe is full, and so does its exit's report.
    """

    stdin: BinaryIO | None
    stdout: BinaryIO | None
    stderr: BinaryIO | None
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class Stats:
    """One data point of a container's statistics: when it was read and the
    runtime's data (cgroup v1 or v2 metrics, a packed Any)."""

    read: dt.datetime
    type_url: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    """A process of a container's task by host pid; ``info`` is the runtime's
    details (runc: the exec id, as a packed ``ProcessDetails``) when it has any."""

    pid: int
    info_type_url: str = ""
    info: bytes = b""


class Backend(Protocol):
    """What the embedding program implements (libcontainerd's ``Backend``).

    Both methods are called from the client's own threads, one call at a
    time per client; they should return quickly.
    """

    def state_changed(self, container_id: str, info: StateInfo) -> None:
        """A container (or a process in it) changed state."""

    def attach_streams(self, process_id: str, streams: ProcessStreams) -> None:
        """A process is about to start: its streams.  ``process_id`` is the
        container's id for its init process (as libcontainerd passes it),
        else the id the exec was added with."""
