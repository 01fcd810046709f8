"""Requests the fuzz pass (tests/fuzz/test_daemon.py) found answered UNKNOWN or
crashing a walk: each now gets the answer containerd gives, and the daemon
logs no unexpected error for it.  Where containerd's answer is the point, the
same request goes to Debian's containerd too.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd import typeurl
from pycontainerd.api.events import namespace_pb2 as ns_events
from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.images.v1 import images_pb2, images_pb2_grpc
from pycontainerd.api.types import descriptor_pb2
from pycontainerd.client import Client
from tests.support import launch
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

NS = (("containerd-namespace", "default"),)
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


@pytest.fixture
def channel(shared_daemon: RunningDaemon) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix://{shared_daemon.address}") as ch:
        yield ch


@pytest.fixture(autouse=True)
def keeps_serving(shared_daemon: RunningDaemon) -> Iterator[None]:
    """After each: the same process serves, and logged no unhandled exception."""
    start = shared_daemon.log.stat().st_size
    yield
    assert shared_daemon.process.poll() is None, shared_daemon.logs()
    launch.assert_serving(shared_daemon.address)
    with open(shared_daemon.log, "rb") as f:
        f.seek(start)
        log = f.read().decode(errors="replace")
    assert "unexpected error" not in log and "Application error" not in log, log


@pytest.fixture(params=["pycontainerd", pytest.param("containerd", marks=pytest.mark.interop)])
def any_channel(
    request: pytest.FixtureRequest, shared_daemon: RunningDaemon
) -> Iterator[grpc.Channel]:
    """A channel to our daemon, and to Debian's containerd as the reference."""
    daemon = (
        shared_daemon if request.param == "pycontainerd" else request.getfixturevalue("containerd")
    )
    with grpc.insecure_channel(f"unix://{daemon.address}") as ch:
        yield ch


def test_health_list_answers_every_status(channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10)
    assert reply.statuses[""].status == health_pb2.HealthCheckResponse.SERVING


def test_undecodable_message_in_a_request_stream_gets_internal(channel: grpc.Channel) -> None:
    write = channel.stream_stream(
        "/containerd.services.content.v1.Content/Write",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as excinfo:
        list(write(iter([b"\xff\xff\xff\xff"]), timeout=10, metadata=NS))
    err = excinfo.value
    assert err.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert "failed to decode request" in (err.details() or "")  # type: ignore[attr-defined]


def test_compressed_message_in_a_request_stream_is_refused_as_in_a_unary_call(
    channel: grpc.Channel,
) -> None:
    stub = content_pb2_grpc.ContentStub(channel)
    request = content_pb2.WriteContentRequest(action=content_pb2.WriteAction.STAT, ref="x" * 200)
    with pytest.raises(grpc.RpcError) as excinfo:
        list(
            stub.Write(iter([request]), timeout=10, metadata=NS, compression=grpc.Compression.Gzip)
        )
    assert excinfo.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


#: (seconds, nanos): times next to the first and the last containerd decodes
#: (gogoproto's stdtime bounds; the first itself is Go's zero time, which Forward
#: refuses as unset), and three it refuses to decode.
EDGES = [(-62135596799, 0), (253402300799, 999_999_999)]
OUT_OF_RANGE = [(-(1 << 63), 0), (253402300800, 0), (1_600_000_000, 1_000_000_000)]


def _timed(
    msg: containers_pb2.Container | images_pb2.Image | events_pb2.Envelope, when: tuple[int, int]
) -> None:
    for field in ("created_at", "updated_at", "timestamp"):
        if field in msg.DESCRIPTOR.fields_by_name:
            getattr(msg, field).seconds, getattr(msg, field).nanos = when


def _containers(channel: grpc.Channel, when: tuple[int, int]) -> None:
    stub = containers_pb2_grpc.ContainersStub(channel)
    container = containers_pb2.Container(
        id="fuzz-times",
        runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2"),
        spec=any_pb2.Any(type_url=SPEC_URL, value=b"{}"),
    )
    _timed(container, when)
    stub.Create(containers_pb2.CreateContainerRequest(container=container), timeout=10, metadata=NS)
    try:
        stub.Update(
            containers_pb2.UpdateContainerRequest(container=container), timeout=10, metadata=NS
        )
    finally:
        stub.Delete(containers_pb2.DeleteContainerRequest(id=container.id), timeout=10, metadata=NS)


def _images(channel: grpc.Channel, when: tuple[int, int]) -> None:
    stub = images_pb2_grpc.ImagesStub(channel)
    image = images_pb2.Image(
        name="fuzz/times:1",
        target=descriptor_pb2.Descriptor(
            media_type="application/vnd.oci.image.manifest.v1+json",
            digest="sha256:" + "0" * 64,
            size=1,
        ),
    )
    _timed(image, when)
    stub.Create(images_pb2.CreateImageRequest(image=image), timeout=10, metadata=NS)
    try:
        stub.Update(images_pb2.UpdateImageRequest(image=image), timeout=10, metadata=NS)
    finally:
        stub.Delete(images_pb2.DeleteImageRequest(name=image.name), timeout=10, metadata=NS)


def _forward(channel: grpc.Channel, when: tuple[int, int]) -> None:
    envelope = events_pb2.Envelope(
        namespace="default",
        topic="/fuzz/times",
        event=typeurl.marshal_any(ns_events.NamespaceCreate(name="x")),
    )
    _timed(envelope, when)
    events_pb2_grpc.EventsStub(channel).Forward(
        events_pb2.ForwardRequest(envelope=envelope), timeout=10, metadata=NS
    )


CALLS = {"containers": _containers, "images": _images, "events-forward": _forward}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_times_near_the_edges_of_the_calendar_are_taken(
    any_channel: grpc.Channel, call: str
) -> None:
    for when in EDGES:
        CALLS[call](any_channel, when)


@pytest.mark.parametrize("when", OUT_OF_RANGE)
@pytest.mark.parametrize("call", sorted(CALLS))
def test_times_out_of_the_calendar_fail_to_decode_as_in_containerd(
    any_channel: grpc.Channel, call: str, when: tuple[int, int]
) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        CALLS[call](any_channel, when)
    assert excinfo.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert "timestamp" in (excinfo.value.details() or "")  # type: ignore[attr-defined]


# --- a client walk ------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _deep_oci_archive(depth: int) -> bytes:
    """An OCI layout whose index.json reaches its manifest through ``depth`` indexes."""
    blobs: dict[str, bytes] = {}

    def add(media_type: str, data: bytes) -> dict[str, object]:
        blobs[_sha(data)] = data
        return {"mediaType": media_type, "digest": _sha(data), "size": len(data)}

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as tf:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    layer = layer_buf.getvalue()
    config = json.dumps(
        {
            "os": "linux",
            "architecture": "amd64",
            "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
        }
    ).encode()
    top = add(
        "application/vnd.oci.image.manifest.v1+json",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": add("application/vnd.oci.image.config.v1+json", config),
                "layers": [add("application/vnd.oci.image.layer.v1.tar", layer)],
            }
        ).encode(),
    )
    for _ in range(depth):
        top = add(
            "application/vnd.oci.image.index.v1+json",
            json.dumps({"schemaVersion": 2, "manifests": [top]}).encode(),
        )
    top["annotations"] = {"io.containerd.image.name": "docker.io/fuzz/deep:1"}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        files = {
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": json.dumps({"schemaVersion": 2, "manifests": [top]}).encode(),
        }
        files.update({f"blobs/sha256/{d.split(':')[1]}": b for d, b in blobs.items()})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_client_imports_an_archive_whose_indexes_nest_past_the_recursion_limit(
    shared_daemon: RunningDaemon,
) -> None:
    archive = _deep_oci_archive(1100)
    with Client(shared_daemon.address, namespace="fuzz-deep", timeout=60) as client:
        images = client.import_archive(io.BytesIO(archive), all_platforms=True)
        try:
            assert [i.name for i in images] == ["docker.io/fuzz/deep:1"]
        finally:
            for image in images:
                client.images.delete(image.name)
