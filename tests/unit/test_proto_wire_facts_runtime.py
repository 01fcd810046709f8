"""Pin wire facts of the task, snapshot, diff and shim protos against containerd 1.6.

Every number and name here was checked against the descriptors compiled into
containerd 1.6.20. A change that breaks one of these breaks wire compatibility
with real containerd, ctr or containerd-shim-runc-v2.
"""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.api.services.diff.v1 import diff_pb2
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2
from pycontainerd.api.services.tasks.v1 import tasks_pb2
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2 as ttrpc_events_pb2

pytestmark = pytest.mark.unit

POOL = descriptor_pool.Default()

# name -> (input, output, client_streaming, server_streaming); message names
# are fully qualified.
EMPTY = "google.protobuf.Empty"


def _methods(service: str) -> dict[str, tuple[str, str, bool, bool]]:
    svc = POOL.FindServiceByName(service)
    return {
        m.name: (
            m.input_type.full_name,
            m.output_type.full_name,
            m.client_streaming,
            m.server_streaming,
        )
        for m in svc.methods
    }


def _numbers(message: str) -> dict[str, int]:
    return {f.name: f.number for f in POOL.FindMessageTypeByName(message).fields}


# ---------------------------------------------------------------- packages


@pytest.mark.parametrize(
    ("module", "package"),
    [
        (tasks_pb2, "containerd.services.tasks.v1"),
        (snapshots_pb2, "containerd.services.snapshots.v1"),
        (diff_pb2, "containerd.services.diff.v1"),
        (ttrpc_events_pb2, "containerd.services.events.ttrpc.v1"),
        (shim_pb2, "containerd.task.v2"),
        (oci_pb2, "containerd.runc.v1"),
    ],
)
def test_packages(module: object, package: str) -> None:
    assert module.DESCRIPTOR.package == package  # type: ignore[attr-defined]


# ---------------------------------------------------------------- tasks


def test_tasks_service_methods() -> None:
    p = "containerd.services.tasks.v1."
    assert _methods(p + "Tasks") == {
        "Create": (p + "CreateTaskRequest", p + "CreateTaskResponse", False, False),
        "Start": (p + "StartRequest", p + "StartResponse", False, False),
        "Delete": (p + "DeleteTaskRequest", p + "DeleteResponse", False, False),
        "DeleteProcess": (p + "DeleteProcessRequest", p + "DeleteResponse", False, False),
        "Get": (p + "GetRequest", p + "GetResponse", False, False),
        "List": (p + "ListTasksRequest", p + "ListTasksResponse", False, False),
        "Kill": (p + "KillRequest", EMPTY, False, False),
        "Exec": (p + "ExecProcessRequest", EMPTY, False, False),
        "ResizePty": (p + "ResizePtyRequest", EMPTY, False, False),
        "CloseIO": (p + "CloseIORequest", EMPTY, False, False),
        "Pause": (p + "PauseTaskRequest", EMPTY, False, False),
        "Resume": (p + "ResumeTaskRequest", EMPTY, False, False),
        "ListPids": (p + "ListPidsRequest", p + "ListPidsResponse", False, False),
        "Checkpoint": (p + "CheckpointTaskRequest", p + "CheckpointTaskResponse", False, False),
        "Update": (p + "UpdateTaskRequest", EMPTY, False, False),
        "Metrics": (p + "MetricsRequest", p + "MetricsResponse", False, False),
        "Wait": (p + "WaitRequest", p + "WaitResponse", False, False),
    }


def test_tasks_messages() -> None:
    p = "containerd.services.tasks.v1."
    assert _numbers(p + "CreateTaskRequest") == {
        "container_id": 1,
        "rootfs": 3,
        "stdin": 4,
        "stdout": 5,
        "stderr": 6,
        "terminal": 7,
        "checkpoint": 8,
        "options": 9,
        "runtime_path": 10,
    }
    assert _numbers(p + "DeleteResponse") == {"id": 1, "pid": 2, "exit_status": 3, "exited_at": 4}
    assert _numbers(p + "ExecProcessRequest") == {
        "container_id": 1,
        "stdin": 2,
        "stdout": 3,
        "stderr": 4,
        "terminal": 5,
        "spec": 6,
        "exec_id": 7,
    }
    assert _numbers(p + "KillRequest") == {"container_id": 1, "exec_id": 2, "signal": 3, "all": 4}
    assert _numbers(p + "UpdateTaskRequest") == {
        "container_id": 1,
        "resources": 2,
        "annotations": 3,
    }
    assert _numbers(p + "WaitResponse") == {"exit_status": 1, "exited_at": 2}
    get = tasks_pb2.GetResponse.DESCRIPTOR.fields_by_name["process"]
    assert get.message_type.full_name == "containerd.v1.types.Process"
    pids = tasks_pb2.ListPidsResponse.DESCRIPTOR.fields_by_name["processes"]
    assert pids.message_type.full_name == "containerd.v1.types.ProcessInfo"
    metrics = tasks_pb2.MetricsResponse.DESCRIPTOR.fields_by_name["metrics"]
    assert metrics.message_type.full_name == "containerd.types.Metric"
    assert (
        tasks_pb2.KillRequest.DESCRIPTOR.fields_by_name["signal"].type
        == FieldDescriptor.TYPE_UINT32
    )


# ---------------------------------------------------------------- snapshots


def test_snapshots_service_methods() -> None:
    p = "containerd.services.snapshots.v1."
    assert _methods(p + "Snapshots") == {
        "Prepare": (p + "PrepareSnapshotRequest", p + "PrepareSnapshotResponse", False, False),
        "View": (p + "ViewSnapshotRequest", p + "ViewSnapshotResponse", False, False),
        "Mounts": (p + "MountsRequest", p + "MountsResponse", False, False),
        "Commit": (p + "CommitSnapshotRequest", EMPTY, False, False),
        "Remove": (p + "RemoveSnapshotRequest", EMPTY, False, False),
        "Stat": (p + "StatSnapshotRequest", p + "StatSnapshotResponse", False, False),
        "Update": (p + "UpdateSnapshotRequest", p + "UpdateSnapshotResponse", False, False),
        "List": (p + "ListSnapshotsRequest", p + "ListSnapshotsResponse", False, True),
        "Usage": (p + "UsageRequest", p + "UsageResponse", False, False),
        "Cleanup": (p + "CleanupRequest", EMPTY, False, False),
    }


def test_snapshots_messages() -> None:
    p = "containerd.services.snapshots.v1."
    assert _numbers(p + "PrepareSnapshotRequest") == {
        "snapshotter": 1,
        "key": 2,
        "parent": 3,
        "labels": 4,
    }
    assert _numbers(p + "CommitSnapshotRequest") == {
        "snapshotter": 1,
        "name": 2,
        "key": 3,
        "labels": 4,
    }
    assert _numbers(p + "Info") == {
        "name": 1,
        "parent": 2,
        "kind": 3,
        "created_at": 4,
        "updated_at": 5,
        "labels": 6,
    }
    assert _numbers(p + "UpdateSnapshotRequest") == {"snapshotter": 1, "info": 2, "update_mask": 3}
    assert _numbers(p + "UsageResponse") == {"size": 1, "inodes": 2}
    usage = snapshots_pb2.UsageResponse.DESCRIPTOR.fields_by_name
    assert usage["size"].type == FieldDescriptor.TYPE_INT64
    assert usage["inodes"].type == FieldDescriptor.TYPE_INT64
    assert dict(snapshots_pb2.Kind.items()) == {
        "UNKNOWN": 0,
        "VIEW": 1,
        "ACTIVE": 2,
        "COMMITTED": 3,
    }
    mounts = snapshots_pb2.PrepareSnapshotResponse.DESCRIPTOR.fields_by_name["mounts"]
    assert mounts.message_type.full_name == "containerd.types.Mount"


# ---------------------------------------------------------------- diff


def test_diff_service_and_messages() -> None:
    p = "containerd.services.diff.v1."
    assert _methods(p + "Diff") == {
        "Apply": (p + "ApplyRequest", p + "ApplyResponse", False, False),
        "Diff": (p + "DiffRequest", p + "DiffResponse", False, False),
    }
    assert _numbers(p + "ApplyRequest") == {"diff": 1, "mounts": 2, "payloads": 3}
    assert _numbers(p + "ApplyResponse") == {"applied": 1}
    assert _numbers(p + "DiffRequest") == {
        "left": 1,
        "right": 2,
        "media_type": 3,
        "ref": 4,
        "labels": 5,
    }
    # DiffResponse.diff is field 3, not 1.
    assert _numbers(p + "DiffResponse") == {"diff": 3}
    payloads = diff_pb2.ApplyRequest.DESCRIPTOR.fields_by_name["payloads"]
    assert payloads.message_type.GetOptions().map_entry
    value = payloads.message_type.fields_by_name["value"]
    assert value.message_type.full_name == "google.protobuf.Any"


# ---------------------------------------------------------------- ttrpc events


def test_ttrpc_events() -> None:
    p = "containerd.services.events.ttrpc.v1."
    assert _methods(p + "Events") == {
        "Forward": (p + "ForwardRequest", EMPTY, False, False),
    }
    assert _numbers(p + "ForwardRequest") == {"envelope": 1}
    fwd = ttrpc_events_pb2.ForwardRequest.DESCRIPTOR.fields_by_name["envelope"]
    # 1.6 declares its own Envelope in the ttrpc package.
    assert fwd.message_type.full_name == p + "Envelope"
    assert _numbers(p + "Envelope") == {"timestamp": 1, "namespace": 2, "topic": 3, "event": 4}


# ---------------------------------------------------------------- shim v2


def test_shim_task_service_methods() -> None:
    p = "containerd.task.v2."
    assert _methods(p + "Task") == {
        "State": (p + "StateRequest", p + "StateResponse", False, False),
        "Create": (p + "CreateTaskRequest", p + "CreateTaskResponse", False, False),
        "Start": (p + "StartRequest", p + "StartResponse", False, False),
        "Delete": (p + "DeleteRequest", p + "DeleteResponse", False, False),
        "Pids": (p + "PidsRequest", p + "PidsResponse", False, False),
        "Pause": (p + "PauseRequest", EMPTY, False, False),
        "Resume": (p + "ResumeRequest", EMPTY, False, False),
        "Checkpoint": (p + "CheckpointTaskRequest", EMPTY, False, False),
        "Kill": (p + "KillRequest", EMPTY, False, False),
        "Exec": (p + "ExecProcessRequest", EMPTY, False, False),
        "ResizePty": (p + "ResizePtyRequest", EMPTY, False, False),
        "CloseIO": (p + "CloseIORequest", EMPTY, False, False),
        "Update": (p + "UpdateTaskRequest", EMPTY, False, False),
        "Wait": (p + "WaitRequest", p + "WaitResponse", False, False),
        "Stats": (p + "StatsRequest", p + "StatsResponse", False, False),
        "Connect": (p + "ConnectRequest", p + "ConnectResponse", False, False),
        "Shutdown": (p + "ShutdownRequest", EMPTY, False, False),
    }


def test_shim_task_messages() -> None:
    p = "containerd.task.v2."
    assert _numbers(p + "CreateTaskRequest") == {
        "id": 1,
        "bundle": 2,
        "rootfs": 3,
        "terminal": 4,
        "stdin": 5,
        "stdout": 6,
        "stderr": 7,
        "checkpoint": 8,
        "parent_checkpoint": 9,
        "options": 10,
    }
    assert _numbers(p + "StateResponse") == {
        "id": 1,
        "bundle": 2,
        "pid": 3,
        "status": 4,
        "stdin": 5,
        "stdout": 6,
        "stderr": 7,
        "terminal": 8,
        "exit_status": 9,
        "exited_at": 10,
        "exec_id": 11,
    }
    assert _numbers(p + "ExecProcessRequest") == {
        "id": 1,
        "exec_id": 2,
        "terminal": 3,
        "stdin": 4,
        "stdout": 5,
        "stderr": 6,
        "spec": 7,
    }
    assert _numbers(p + "DeleteResponse") == {"pid": 1, "exit_status": 2, "exited_at": 3}
    assert _numbers(p + "ConnectResponse") == {"shim_pid": 1, "task_pid": 2, "version": 3}
    assert _numbers(p + "ShutdownRequest") == {"id": 1, "now": 2}
    assert _numbers(p + "CheckpointTaskRequest") == {"id": 1, "path": 2, "options": 3}
    assert _numbers(p + "StatsResponse") == {"stats": 1}
    status = shim_pb2.StateResponse.DESCRIPTOR.fields_by_name["status"]
    assert status.enum_type.full_name == "containerd.v1.types.Status"
    # The checkpoint here is a path string, unlike the daemon API's descriptor.
    ckpt = shim_pb2.CreateTaskRequest.DESCRIPTOR.fields_by_name["checkpoint"]
    assert ckpt.type == FieldDescriptor.TYPE_STRING


# ---------------------------------------------------------------- runc options


def test_runc_options() -> None:
    p = "containerd.runc.v1."
    assert _numbers(p + "Options") == {
        "no_pivot_root": 1,
        "no_new_keyring": 2,
        "shim_cgroup": 3,
        "io_uid": 4,
        "io_gid": 5,
        "binary_name": 6,
        "root": 7,
        "criu_path": 8,
        "systemd_cgroup": 9,
        "criu_image_path": 10,
        "criu_work_path": 11,
    }
    assert _numbers(p + "CheckpointOptions") == {
        "exit": 1,
        "open_tcp": 2,
        "external_unix_sockets": 3,
        "terminal": 4,
        "file_locks": 5,
        "empty_namespaces": 6,
        "cgroups_mode": 7,
        "image_path": 8,
        "work_path": 9,
    }
    assert _numbers(p + "ProcessDetails") == {"exec_id": 1}


def test_runc_options_wire_bytes() -> None:
    # binary_name (6, string) then systemd_cgroup (9, varint).
    raw = oci_pb2.Options(binary_name="runc", systemd_cgroup=True).SerializeToString()
    assert raw == b"\x32\x04runc\x48\x01"
