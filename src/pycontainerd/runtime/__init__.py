"""The runtime v2: tasks run by shims over ttrpc (containerd's ``runtime/v2``).

Each task has a bundle (:mod:`~pycontainerd.runtime.bundle`) and a shim
process, found from the runtime's name (:mod:`~pycontainerd.runtime.binary`)
and driven over containerd's shim task API (:mod:`~pycontainerd.runtime.shim`);
the task manager (:mod:`~pycontainerd.runtime.manager`, the
``io.containerd.runtime.v2.task`` plugin) keeps the live tasks of each
namespace, reconnects to them at start-up and reports the exits of the shims
that die.

This module holds the types that cross into the tasks service.  Times are
integer nanoseconds since the Unix epoch, exactly as the shim reported them
(Go's zero time, year 1, included), so that an exit time is passed on to the
client without rounding.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf import any_pb2

from pycontainerd.mount import Mount

__all__ = ["IO", "CreateOpts", "ExecOpts", "Exit", "ProcessInfo", "State", "Status", "UpdateOpts"]


class Status(enum.IntEnum):
    """A process's state; the values are ``containerd.v1.types.Status``'s."""

    UNKNOWN = 0
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4
    PAUSING = 5


@dataclass(frozen=True, slots=True)
class IO:
    """Where a process's stdio goes: paths (fifos) or URIs the shim opens."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class CreateOpts:
    """What a new task needs (containerd's ``runtime.CreateOpts``)."""

    #: The OCI spec (``types.containerd.io/opencontainers/runtime-spec/1/Spec``).
    spec: any_pb2.Any | None = None
    rootfs: tuple[Mount, ...] = ()
    io: IO = field(default_factory=IO)
    #: A directory holding a checkpoint to restore from.
    checkpoint: str = ""
    #: The runtime name (``io.containerd.runc.v2``) or a shim's absolute path.
    runtime: str = ""
    runtime_options: any_pb2.Any | None = None
    task_options: any_pb2.Any | None = None


@dataclass(frozen=True, slots=True)
class ExecOpts:
    #: The OCI process spec.
    spec: any_pb2.Any | None = None
    io: IO = field(default_factory=IO)


@dataclass(frozen=True, slots=True)
class Exit:
    pid: int
    status: int
    #: Nanoseconds since the epoch.
    exited_at: int


@dataclass(frozen=True, slots=True)
class State:
    """A process's state as its shim reports it."""

    id: str
    pid: int
    status: Status
    io: IO
    exit_status: int
    #: Nanoseconds since the epoch.
    exited_at: int
    bundle: str = ""
    exec_id: str = ""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    info: any_pb2.Any | None = None


@dataclass(frozen=True, slots=True)
class UpdateOpts:
    resources: any_pb2.Any | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
