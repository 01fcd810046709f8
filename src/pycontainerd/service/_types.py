"""What the sync and async facades share: defaults, requests and results.

The requests are frozen, slotted dataclasses checked when they are made
(:meth:`CreateContainerRequest.__post_init__`), so a bad one fails in the
caller's frame, before anything is asked of the daemon.  Bounds on what a
request may carry are written here, as constants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from pycontainerd import errdefs, identifiers
from pycontainerd import namespaces as namespace_context
from pycontainerd.client._shared import DEFAULT_ADDRESS
from pycontainerd.client._sync.task import ProcessStatus
from pycontainerd.oci.defaults import SpecOpt

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_STOP_TIMEOUT",
    "MAX_EXEC_ARGS",
    "MAX_EXEC_ENV",
    "MAX_STOP_TIMEOUT",
    "CreateContainerRequest",
    "ExecTaskRequest",
    "HasPid",
    "ProcessStatus",
    "TaskInfo",
    "check_container_id",
    "check_timeout",
    "label_filter",
]

#: The daemon's socket unless told otherwise (DESIGN.md §4).
DEFAULT_SOCKET_PATH = DEFAULT_ADDRESS
#: The namespace the facade works in unless told otherwise (containerd's).
DEFAULT_NAMESPACE = namespace_context.DEFAULT
#: How long ``stop_task`` waits for the task to exit after its signal.
DEFAULT_STOP_TIMEOUT = 10.0
#: The longest a stop may be asked to wait (a day): anything longer is a mistake.
MAX_STOP_TIMEOUT = 86400.0
#: At most this many arguments and environment entries in one exec request
#: (the daemon bounds the spec's size as well; these fail earlier, clearly).
MAX_EXEC_ARGS = 4096
MAX_EXEC_ENV = 4096


def check_container_id(container_id: str) -> None:
    """Container ids are identifiers (containerd's rule); InvalidArgument if not."""
    if not isinstance(container_id, str):
        raise errdefs.InvalidArgument(f"container id must be a string, not {container_id!r}")
    identifiers.validate(container_id)


def check_timeout(timeout: float) -> float:
    """A timeout in seconds: finite, above zero and at most :data:`MAX_STOP_TIMEOUT`."""
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise errdefs.InvalidArgument(f"timeout must be a number of seconds, not {timeout!r}")
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_STOP_TIMEOUT):
        raise errdefs.InvalidArgument(
            f"timeout {timeout!r} must be above 0 and at most {MAX_STOP_TIMEOUT:g} seconds"
        )
    return float(timeout)


def label_filter(key: str, value: str) -> str:
    """The filter matching records whose label ``key`` is ``value``, both
    quoted (``labels."com.example.app"=="web"``) so any key or value works."""
    if not key:
        raise errdefs.InvalidArgument("label key must not be empty")
    return f"labels.{errdefs.q(key)}=={errdefs.q(value)}"


@dataclass(frozen=True, slots=True)
class CreateContainerRequest:
    """A container to make from an image: its root filesystem is the new
    snapshot ``snapshot_id`` (default: the container's id) on the image's
    layers in ``snapshotter`` (default: the namespace's, else overlayfs),
    and its spec is containerd's default with the image's config, then
    ``spec_opts`` (:mod:`pycontainerd.oci.spec`'s ``with_*`` options) in order.

    For :meth:`~pycontainerd.service.DefaultService.create_container_from_snapshot`
    ``snapshot_id`` names an existing active snapshot instead, and
    ``image_ref`` is optional (it brings the image's config when given).
    """

    id: str
    image_ref: str = ""
    snapshot_id: str = ""
    snapshotter: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    spec_opts: Sequence[SpecOpt] = ()

    def __post_init__(self) -> None:
        check_container_id(self.id)
        if self.snapshot_id:
            identifiers.validate(self.snapshot_id)
        if not isinstance(self.labels, Mapping):
            raise errdefs.InvalidArgument("labels must be a mapping of strings")
        for opt in self.spec_opts:
            if not callable(opt):
                raise errdefs.InvalidArgument(f"spec option {opt!r} is not callable")


Stream = IO[bytes] | Any
"""A binary file-like object: ``read`` (stdin) or ``write`` (stdout, stderr)."""


@dataclass(frozen=True, slots=True)
class ExecTaskRequest:
    """A process to run in a container's running task.

    ``args`` replace the container's process args; ``env`` entries
    (``KEY=value``, or a bare ``KEY`` to remove one) are laid over the
    container's environment; ``workdir`` replaces its working directory.
    For ``exec_task``, ``stdin`` (bytes or a binary stream) is fed to the
    process and closed at its end, and output is written to the ``stdout``
    and ``stderr`` streams (``io.BytesIO()`` captures it; None discards it).
    With ``terminal`` the process gets a pty and all its output comes on
    ``stdout``.  ``exec_task_streaming`` makes its own pipes and takes none
    of the three.
    """

    args: Sequence[str]
    env: Sequence[str] = ()
    workdir: str = ""
    terminal: bool = False
    stdin: bytes | Stream | None = None
    stdout: Stream | None = None
    stderr: Stream | None = None

    def __post_init__(self) -> None:
        if isinstance(self.args, str | bytes):
            raise errdefs.InvalidArgument("exec args must be a sequence of strings, not a string")
        if not self.args:
            raise errdefs.InvalidArgument("exec args must not be empty")
        if len(self.args) > MAX_EXEC_ARGS or len(self.env) > MAX_EXEC_ENV:
            raise errdefs.InvalidArgument(
                f"exec takes at most {MAX_EXEC_ARGS} args and {MAX_EXEC_ENV} env entries"
            )
        for value in (*self.args, *self.env, self.workdir):
            if not isinstance(value, str) or "\0" in value:
                raise errdefs.InvalidArgument(f"exec argument {value!r} must be a string, no NUL")
        if self.workdir and not self.workdir.startswith("/"):
            raise errdefs.InvalidArgument(f"workdir {errdefs.q(self.workdir)} must be absolute")


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task as the facade reports it; ``exit_status`` counts once it is stopped."""

    container_id: str
    id: str
    pid: int
    status: ProcessStatus
    exit_status: int = 0


class HasPid(Protocol):
    """What ``setup_network`` needs of a task: its pid on the host
    (a :class:`TaskInfo`, or the client's task object)."""

    @property
    def pid(self) -> int: ...
