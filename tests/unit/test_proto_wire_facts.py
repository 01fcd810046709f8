"""Pin the wire facts of our containerd 1.6 v1 API protos.

These are the facts a Go client/daemon (ctr, dockerd, containerd 1.6) relies
on: fully-qualified service/method/message names, streaming shapes, field
numbers, field types and enum values.  If one of these tests fails, the
change in ``proto/`` breaks wire compatibility; fix the proto, not the test.
The expectations were checked against the descriptors embedded in Debian's
containerd 1.6.20 binary.
"""

from __future__ import annotations

import importlib

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

pytestmark = pytest.mark.unit

MODULES = [
    "types.descriptor_pb2",
    "types.mount_pb2",
    "types.platform_pb2",
    "types.metrics_pb2",
    "types.task.task_pb2",
    "services.namespaces.v1.namespace_pb2",
    "services.introspection.v1.introspection_pb2",
    "services.events.v1.events_pb2",
    "services.containers.v1.containers_pb2",
    "services.content.v1.content_pb2",
    "services.images.v1.images_pb2",
    "services.leases.v1.leases_pb2",
    "services.version.v1.version_pb2",
    "events.container_pb2",
    "events.content_pb2",
    "events.image_pb2",
    "events.namespace_pb2",
    "events.snapshot_pb2",
    "events.task_pb2",
]

# proto file (relative to proto/) -> package
PACKAGES = {
    "types/descriptor.proto": "containerd.types",
    "types/mount.proto": "containerd.types",
    "types/platform.proto": "containerd.types",
    "types/metrics.proto": "containerd.types",
    "types/task/task.proto": "containerd.v1.types",
    "services/namespaces/v1/namespace.proto": "containerd.services.namespaces.v1",
    "services/introspection/v1/introspection.proto": "containerd.services.introspection.v1",
    "services/events/v1/events.proto": "containerd.services.events.v1",
    "services/containers/v1/containers.proto": "containerd.services.containers.v1",
    "services/content/v1/content.proto": "containerd.services.content.v1",
    "services/images/v1/images.proto": "containerd.services.images.v1",
    "services/leases/v1/leases.proto": "containerd.services.leases.v1",
    "services/version/v1/version.proto": "containerd.services.version.v1",
    "events/container.proto": "containerd.events",
    "events/content.proto": "containerd.events",
    # Image events deliberately share the images *service* package.
    "events/image.proto": "containerd.services.images.v1",
    "events/namespace.proto": "containerd.events",
    "events/snapshot.proto": "containerd.events",
    "events/task.proto": "containerd.events",
}

U, S = "unary", "server-stream"
BIDI = "bidi"

# service full name -> {method: (input, output, shape)}
SERVICES: dict[str, dict[str, tuple[str, str, str]]] = {
    "containerd.services.namespaces.v1.Namespaces": {
        "Get": ("GetNamespaceRequest", "GetNamespaceResponse", U),
        "List": ("ListNamespacesRequest", "ListNamespacesResponse", U),
        "Create": ("CreateNamespaceRequest", "CreateNamespaceResponse", U),
        "Update": ("UpdateNamespaceRequest", "UpdateNamespaceResponse", U),
        "Delete": ("DeleteNamespaceRequest", "google.protobuf.Empty", U),
    },
    "containerd.services.introspection.v1.Introspection": {
        "Plugins": ("PluginsRequest", "PluginsResponse", U),
        "Server": ("google.protobuf.Empty", "ServerResponse", U),
    },
    "containerd.services.events.v1.Events": {
        "Publish": ("PublishRequest", "google.protobuf.Empty", U),
        "Forward": ("ForwardRequest", "google.protobuf.Empty", U),
        "Subscribe": ("SubscribeRequest", "Envelope", S),
    },
    "containerd.services.containers.v1.Containers": {
        "Get": ("GetContainerRequest", "GetContainerResponse", U),
        "List": ("ListContainersRequest", "ListContainersResponse", U),
        "ListStream": ("ListContainersRequest", "ListContainerMessage", S),
        "Create": ("CreateContainerRequest", "CreateContainerResponse", U),
        "Update": ("UpdateContainerRequest", "UpdateContainerResponse", U),
        "Delete": ("DeleteContainerRequest", "google.protobuf.Empty", U),
    },
    "containerd.services.content.v1.Content": {
        "Info": ("InfoRequest", "InfoResponse", U),
        "Update": ("UpdateRequest", "UpdateResponse", U),
        "List": ("ListContentRequest", "ListContentResponse", S),
        "Delete": ("DeleteContentRequest", "google.protobuf.Empty", U),
        "Read": ("ReadContentRequest", "ReadContentResponse", S),
        "Status": ("StatusRequest", "StatusResponse", U),
        "ListStatuses": ("ListStatusesRequest", "ListStatusesResponse", U),
        "Write": ("WriteContentRequest", "WriteContentResponse", BIDI),
        "Abort": ("AbortRequest", "google.protobuf.Empty", U),
    },
    "containerd.services.images.v1.Images": {
        "Get": ("GetImageRequest", "GetImageResponse", U),
        "List": ("ListImagesRequest", "ListImagesResponse", U),
        "Create": ("CreateImageRequest", "CreateImageResponse", U),
        "Update": ("UpdateImageRequest", "UpdateImageResponse", U),
        "Delete": ("DeleteImageRequest", "google.protobuf.Empty", U),
    },
    "containerd.services.leases.v1.Leases": {
        "Create": ("CreateRequest", "CreateResponse", U),
        "Delete": ("DeleteRequest", "google.protobuf.Empty", U),
        "List": ("ListRequest", "ListResponse", U),
        "AddResource": ("AddResourceRequest", "google.protobuf.Empty", U),
        "DeleteResource": ("DeleteResourceRequest", "google.protobuf.Empty", U),
        "ListResources": ("ListResourcesRequest", "ListResourcesResponse", U),
    },
    "containerd.services.version.v1.Version": {
        "Version": ("google.protobuf.Empty", "VersionResponse", U),
    },
}

# message full name -> {field: number}; every field of the message is listed,
# so an added/removed field fails too.
FIELDS: dict[str, dict[str, int]] = {
    # types
    "containerd.types.Descriptor": {"media_type": 1, "digest": 2, "size": 3, "annotations": 5},
    "containerd.types.Mount": {"type": 1, "source": 2, "target": 3, "options": 4},
    "containerd.types.Platform": {"os": 1, "architecture": 2, "variant": 3},
    "containerd.types.Metric": {"timestamp": 1, "id": 2, "data": 3},
    "containerd.v1.types.Process": {
        "container_id": 1,
        "id": 2,
        "pid": 3,
        "status": 4,
        "stdin": 5,
        "stdout": 6,
        "stderr": 7,
        "terminal": 8,
        "exit_status": 9,
        "exited_at": 10,
    },
    "containerd.v1.types.ProcessInfo": {"pid": 1, "info": 2},
    # namespaces
    "containerd.services.namespaces.v1.Namespace": {"name": 1, "labels": 2},
    "containerd.services.namespaces.v1.ListNamespacesRequest": {"filter": 1},
    "containerd.services.namespaces.v1.ListNamespacesResponse": {"namespaces": 1},
    "containerd.services.namespaces.v1.UpdateNamespaceRequest": {"namespace": 1, "update_mask": 2},
    "containerd.services.namespaces.v1.DeleteNamespaceRequest": {"name": 1},
    # introspection
    "containerd.services.introspection.v1.Plugin": {
        "type": 1,
        "id": 2,
        "requires": 3,
        "platforms": 4,
        "exports": 5,
        "capabilities": 6,
        "init_err": 7,
    },
    "containerd.services.introspection.v1.PluginsRequest": {"filters": 1},
    "containerd.services.introspection.v1.ServerResponse": {"uuid": 1},
    # events service
    "containerd.services.events.v1.PublishRequest": {"topic": 1, "event": 2},
    "containerd.services.events.v1.ForwardRequest": {"envelope": 1},
    "containerd.services.events.v1.SubscribeRequest": {"filters": 1},
    "containerd.services.events.v1.Envelope": {
        "timestamp": 1,
        "namespace": 2,
        "topic": 3,
        "event": 4,
    },
    # containers
    "containerd.services.containers.v1.Container": {
        "id": 1,
        "labels": 2,
        "image": 3,
        "runtime": 4,
        "spec": 5,
        "snapshotter": 6,
        "snapshot_key": 7,
        "created_at": 8,
        "updated_at": 9,
        "extensions": 10,
    },
    "containerd.services.containers.v1.Container.Runtime": {"name": 1, "options": 2},
    "containerd.services.containers.v1.ListContainersRequest": {"filters": 1},
    "containerd.services.containers.v1.UpdateContainerRequest": {"container": 1, "update_mask": 2},
    "containerd.services.containers.v1.ListContainerMessage": {"container": 1},
    # content
    "containerd.services.content.v1.Info": {
        "digest": 1,
        "size": 2,
        "created_at": 3,
        "updated_at": 4,
        "labels": 5,
    },
    "containerd.services.content.v1.UpdateRequest": {"info": 1, "update_mask": 2},
    "containerd.services.content.v1.ListContentResponse": {"info": 1},
    "containerd.services.content.v1.ReadContentRequest": {"digest": 1, "offset": 2, "size": 3},
    "containerd.services.content.v1.ReadContentResponse": {"offset": 1, "data": 2},
    "containerd.services.content.v1.Status": {
        "started_at": 1,
        "updated_at": 2,
        "ref": 3,
        "offset": 4,
        "total": 5,
        "expected": 6,
    },
    "containerd.services.content.v1.ListStatusesResponse": {"statuses": 1},
    "containerd.services.content.v1.WriteContentRequest": {
        "action": 1,
        "ref": 2,
        "total": 3,
        "expected": 4,
        "offset": 5,
        "data": 6,
        "labels": 7,
    },
    "containerd.services.content.v1.WriteContentResponse": {
        "action": 1,
        "started_at": 2,
        "updated_at": 3,
        "offset": 4,
        "total": 5,
        "digest": 6,
    },
    "containerd.services.content.v1.AbortRequest": {"ref": 1},
    # images
    "containerd.services.images.v1.Image": {
        "name": 1,
        "labels": 2,
        "target": 3,
        "created_at": 7,
        "updated_at": 8,
    },
    "containerd.services.images.v1.CreateImageRequest": {"image": 1},
    "containerd.services.images.v1.UpdateImageRequest": {"image": 1, "update_mask": 2},
    "containerd.services.images.v1.ListImagesResponse": {"images": 1},
    "containerd.services.images.v1.DeleteImageRequest": {"name": 1, "sync": 2},
    # leases
    "containerd.services.leases.v1.Lease": {"id": 1, "created_at": 2, "labels": 3},
    "containerd.services.leases.v1.CreateRequest": {"id": 1, "labels": 3},
    "containerd.services.leases.v1.DeleteRequest": {"id": 1, "sync": 2},
    "containerd.services.leases.v1.Resource": {"id": 1, "type": 2},
    "containerd.services.leases.v1.AddResourceRequest": {"id": 1, "resource": 2},
    "containerd.services.leases.v1.ListResourcesResponse": {"resources": 1},
    # version
    "containerd.services.version.v1.VersionResponse": {"version": 1, "revision": 2},
    # events
    "containerd.events.ContainerCreate": {"id": 1, "image": 2, "runtime": 3},
    "containerd.events.ContainerCreate.Runtime": {"name": 1, "options": 2},
    "containerd.events.ContainerUpdate": {"id": 1, "image": 2, "labels": 3, "snapshot_key": 4},
    "containerd.events.ContainerDelete": {"id": 1},
    "containerd.events.ContentDelete": {"digest": 1},
    "containerd.services.images.v1.ImageCreate": {"name": 1, "labels": 2},
    "containerd.services.images.v1.ImageUpdate": {"name": 1, "labels": 2},
    "containerd.services.images.v1.ImageDelete": {"name": 1},
    "containerd.events.NamespaceCreate": {"name": 1, "labels": 2},
    "containerd.events.NamespaceUpdate": {"name": 1, "labels": 2},
    "containerd.events.NamespaceDelete": {"name": 1},
    # 1.6 has no "snapshotter" (=5) field; that came in 1.7.
    "containerd.events.SnapshotPrepare": {"key": 1, "parent": 2},
    "containerd.events.SnapshotCommit": {"key": 1, "name": 2},
    "containerd.events.SnapshotRemove": {"key": 1},
    "containerd.events.TaskCreate": {
        "container_id": 1,
        "bundle": 2,
        "rootfs": 3,
        "io": 4,
        "checkpoint": 5,
        "pid": 6,
    },
    "containerd.events.TaskStart": {"container_id": 1, "pid": 2},
    "containerd.events.TaskDelete": {
        "container_id": 1,
        "pid": 2,
        "exit_status": 3,
        "exited_at": 4,
        "id": 5,
    },
    "containerd.events.TaskIO": {"stdin": 1, "stdout": 2, "stderr": 3, "terminal": 4},
    "containerd.events.TaskExit": {
        "container_id": 1,
        "id": 2,
        "pid": 3,
        "exit_status": 4,
        "exited_at": 5,
    },
    "containerd.events.TaskOOM": {"container_id": 1},
    "containerd.events.TaskExecAdded": {"container_id": 1, "exec_id": 2},
    "containerd.events.TaskExecStarted": {"container_id": 1, "exec_id": 2, "pid": 3},
    "containerd.events.TaskPaused": {"container_id": 1},
    "containerd.events.TaskResumed": {"container_id": 1},
    "containerd.events.TaskCheckpointed": {"container_id": 1, "checkpoint": 2},
}

T = FieldDescriptor
# (message, field) -> (scalar type or message full name, repeated?)
TYPES: dict[tuple[str, str], tuple[object, bool]] = {
    ("containerd.types.Descriptor", "size"): (T.TYPE_INT64, False),
    ("containerd.types.Descriptor", "annotations"): (
        "containerd.types.Descriptor.AnnotationsEntry",
        True,
    ),
    ("containerd.types.Mount", "options"): (T.TYPE_STRING, True),
    ("containerd.types.Metric", "timestamp"): ("google.protobuf.Timestamp", False),
    ("containerd.types.Metric", "data"): ("google.protobuf.Any", False),
    ("containerd.v1.types.Process", "pid"): (T.TYPE_UINT32, False),
    ("containerd.v1.types.Process", "status"): (T.TYPE_ENUM, False),
    ("containerd.v1.types.Process", "exit_status"): (T.TYPE_UINT32, False),
    ("containerd.v1.types.Process", "exited_at"): ("google.protobuf.Timestamp", False),
    ("containerd.services.introspection.v1.Plugin", "platforms"): (
        "containerd.types.Platform",
        True,
    ),
    ("containerd.services.introspection.v1.Plugin", "init_err"): ("google.rpc.Status", False),
    ("containerd.services.events.v1.Envelope", "event"): ("google.protobuf.Any", False),
    ("containerd.services.containers.v1.Container", "spec"): ("google.protobuf.Any", False),
    ("containerd.services.containers.v1.Container", "extensions"): (
        "containerd.services.containers.v1.Container.ExtensionsEntry",
        True,
    ),
    ("containerd.services.containers.v1.UpdateContainerRequest", "update_mask"): (
        "google.protobuf.FieldMask",
        False,
    ),
    ("containerd.services.content.v1.Info", "size"): (T.TYPE_INT64, False),
    ("containerd.services.content.v1.ReadContentResponse", "data"): (T.TYPE_BYTES, False),
    ("containerd.services.content.v1.WriteContentRequest", "action"): (T.TYPE_ENUM, False),
    ("containerd.services.content.v1.WriteContentRequest", "offset"): (T.TYPE_INT64, False),
    ("containerd.services.content.v1.WriteContentRequest", "data"): (T.TYPE_BYTES, False),
    ("containerd.services.images.v1.Image", "target"): ("containerd.types.Descriptor", False),
    ("containerd.services.images.v1.Image", "created_at"): ("google.protobuf.Timestamp", False),
    ("containerd.services.leases.v1.AddResourceRequest", "resource"): (
        "containerd.services.leases.v1.Resource",
        False,
    ),
    ("containerd.events.TaskCreate", "rootfs"): ("containerd.types.Mount", True),
    ("containerd.events.TaskCreate", "io"): ("containerd.events.TaskIO", False),
    ("containerd.events.TaskExit", "exit_status"): (T.TYPE_UINT32, False),
    ("containerd.events.TaskExit", "exited_at"): ("google.protobuf.Timestamp", False),
}

ENUMS = {
    "containerd.v1.types.Status": {
        "UNKNOWN": 0,
        "CREATED": 1,
        "RUNNING": 2,
        "STOPPED": 3,
        "PAUSED": 4,
        "PAUSING": 5,
    },
    "containerd.services.content.v1.WriteAction": {"STAT": 0, "WRITE": 1, "COMMIT": 2},
}

MAPS = {
    ("containerd.types.Descriptor", "annotations"),
    ("containerd.services.namespaces.v1.Namespace", "labels"),
    ("containerd.services.introspection.v1.Plugin", "exports"),
    ("containerd.services.containers.v1.Container", "labels"),
    ("containerd.services.containers.v1.Container", "extensions"),
    ("containerd.services.content.v1.Info", "labels"),
    ("containerd.services.content.v1.WriteContentRequest", "labels"),
    ("containerd.services.images.v1.Image", "labels"),
    ("containerd.services.leases.v1.Lease", "labels"),
    ("containerd.services.leases.v1.CreateRequest", "labels"),
    ("containerd.events.ContainerUpdate", "labels"),
    ("containerd.services.images.v1.ImageCreate", "labels"),
    ("containerd.events.NamespaceCreate", "labels"),
}


@pytest.fixture(scope="module")
def pool() -> descriptor_pool.DescriptorPool:
    for mod in MODULES:
        importlib.import_module(f"pycontainerd.api.{mod}")
    return descriptor_pool.Default()


@pytest.mark.parametrize("path,package", sorted(PACKAGES.items()))
def test_file_package(pool: descriptor_pool.DescriptorPool, path: str, package: str) -> None:
    assert pool.FindFileByName(path).package == package


def _qualify(package: str, name: str) -> str:
    return name if name.startswith("google.") else f"{package}.{name}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_methods(pool: descriptor_pool.DescriptorPool, service: str) -> None:
    sd = pool.FindServiceByName(service)
    assert sd.full_name == service
    package = service.rsplit(".", 1)[0]
    expected = SERVICES[service]
    assert [m.name for m in sd.methods] == list(expected)
    for name, (inp, out, shape) in expected.items():
        md = sd.methods_by_name[name]
        assert md.input_type.full_name == _qualify(package, inp), name
        assert md.output_type.full_name == _qualify(package, out), name
        streaming = {
            (False, False): U,
            (False, True): S,
            (True, True): BIDI,
        }[(md.client_streaming, md.server_streaming)]
        assert streaming == shape, name


def test_grpc_method_paths() -> None:
    # The generated stub must dial containerd's exact method paths.
    import grpc

    from pycontainerd.api.services.content.v1 import content_pb2_grpc
    from pycontainerd.api.services.namespaces.v1 import namespace_pb2_grpc

    channel = grpc.insecure_channel("unix:///nonexistent")
    try:
        ns = namespace_pb2_grpc.NamespacesStub(channel)
        assert ns.List._method == b"/containerd.services.namespaces.v1.Namespaces/List"
        ct = content_pb2_grpc.ContentStub(channel)
        assert ct.Write._method == b"/containerd.services.content.v1.Content/Write"
    finally:
        channel.close()


@pytest.mark.parametrize("message", sorted(FIELDS))
def test_message_fields(pool: descriptor_pool.DescriptorPool, message: str) -> None:
    md = pool.FindMessageTypeByName(message)
    got = {f.name: f.number for f in md.fields}
    assert got == FIELDS[message]


@pytest.mark.parametrize("key", sorted(TYPES), ids=lambda k: ".".join(k))
def test_field_types(pool: descriptor_pool.DescriptorPool, key: tuple[str, str]) -> None:
    message, field = key
    fd = pool.FindMessageTypeByName(message).fields_by_name[field]
    kind, repeated = TYPES[key]
    if isinstance(kind, str):
        assert fd.type == T.TYPE_MESSAGE
        assert fd.message_type.full_name == kind
    else:
        assert fd.type == kind
    assert fd.is_repeated == repeated


@pytest.mark.parametrize("key", sorted(MAPS), ids=lambda k: ".".join(k))
def test_map_fields(pool: descriptor_pool.DescriptorPool, key: tuple[str, str]) -> None:
    message, field = key
    fd = pool.FindMessageTypeByName(message).fields_by_name[field]
    assert fd.message_type is not None and fd.message_type.GetOptions().map_entry
    assert fd.message_type.fields_by_name["key"].type == T.TYPE_STRING


@pytest.mark.parametrize("enum", sorted(ENUMS))
def test_enum_values(pool: descriptor_pool.DescriptorPool, enum: str) -> None:
    ed = pool.FindEnumTypeByName(enum)
    assert {v.name: v.number for v in ed.values} == ENUMS[enum]


def test_event_type_urls() -> None:
    # containerd (typeurl) puts the bare message full name in Any.type_url,
    # with no "type.googleapis.com/" prefix, so the full names are the URLs.
    from pycontainerd.api.events import image_pb2, task_pb2

    assert task_pb2.TaskExit.DESCRIPTOR.full_name == "containerd.events.TaskExit"
    assert image_pb2.ImageCreate.DESCRIPTOR.full_name == "containerd.services.images.v1.ImageCreate"


def test_known_encoding() -> None:
    from pycontainerd.api.types import mount_pb2

    # type=1 "bind", options=4 ["ro"]: bytes as a Go client would produce.
    m = mount_pb2.Mount(type="bind", options=["ro"])
    assert m.SerializeToString() == b"\x0a\x04bind\x22\x02ro"
