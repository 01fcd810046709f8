"""The service facade: containers, images, tasks, snapshots and networking
for platform code, in a handful of calls over a client.

``DefaultService(client)`` (or ``DefaultService.connect(address, namespace)``,
``DefaultService.from_env()``) implements the :class:`Service` protocol over
:class:`pycontainerd.client.Client`; ``AsyncDefaultService`` is its async
twin over ``AsyncClient`` (written by hand; the sync face is generated from
it by ``make unasync``).  Errors are :mod:`pycontainerd.errdefs`' classes:
``InvalidArgument`` for a bad request, ``TaskStopTimeout`` when a task
outlives its stop's timeout, ``NotFound`` and the others as the daemon says.
Networking goes through :mod:`pycontainerd.cni`.
"""

from __future__ import annotations

from pycontainerd.errdefs import InvalidArgument, TaskStopTimeout
from pycontainerd.service._async import (
    AsyncDefaultService,
    AsyncExecSession,
    AsyncMountedSnapshot,
    AsyncService,
    AsyncUnmount,
)
from pycontainerd.service._async import mount_container_snapshot as mount_container_snapshot_async
from pycontainerd.service._async import mount_snapshot as mount_snapshot_async
from pycontainerd.service._sync import (
    DefaultService,
    ExecSession,
    MountedSnapshot,
    Service,
    Unmount,
    mount_container_snapshot,
    mount_snapshot,
)
from pycontainerd.service._types import (
    DEFAULT_NAMESPACE,
    DEFAULT_SOCKET_PATH,
    DEFAULT_STOP_TIMEOUT,
    MAX_EXEC_ARGS,
    MAX_EXEC_ENV,
    MAX_STOP_TIMEOUT,
    CreateContainerRequest,
    ExecTaskRequest,
    HasPid,
    ProcessStatus,
    TaskInfo,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_STOP_TIMEOUT",
    "MAX_EXEC_ARGS",
    "MAX_EXEC_ENV",
    "MAX_STOP_TIMEOUT",
    "AsyncDefaultService",
    "AsyncExecSession",
    "AsyncMountedSnapshot",
    "AsyncService",
    "AsyncUnmount",
    "CreateContainerRequest",
    "DefaultService",
    "ExecSession",
    "ExecTaskRequest",
    "HasPid",
    "InvalidArgument",
    "MountedSnapshot",
    "ProcessStatus",
    "Service",
    "TaskInfo",
    "TaskStopTimeout",
    "Unmount",
    "mount_container_snapshot",
    "mount_container_snapshot_async",
    "mount_snapshot",
    "mount_snapshot_async",
]
