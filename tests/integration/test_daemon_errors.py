"""Bad requests get typed gRPC errors with clear messages, and the daemon keeps
serving after every one of them (each test is followed by a Version call)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

from pycontainerd import typeurl
from pycontainerd.api.events import namespace_pb2 as ns_events
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from tests.support import launch
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

NS = (("containerd-namespace", "default"),)


@pytest.fixture
def channel(shared_daemon: RunningDaemon) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix://{shared_daemon.address}") as ch:
        yield ch


@pytest.fixture(autouse=True)
def keeps_serving(shared_daemon: RunningDaemon) -> Iterator[None]:
    """After each bad request: the same daemon process still answers Version."""
    yield
    assert shared_daemon.process.poll() is None, shared_daemon.logs()
    launch.assert_serving(shared_daemon.address)


def failed(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """Make a call that must fail; return its error for inspection."""
    with pytest.raises(grpc.RpcError) as excinfo:
        result = call(*args, timeout=10, **kwargs)
        if hasattr(result, "__iter__") and not isinstance(result, bytes):
            list(result)  # a stream fails on its first read
    return excinfo.value


def raw_unary(channel: grpc.Channel, method: str) -> Any:
    return channel.unary_unary(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )


# --- namespace names ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["-bad", "a/b", "bad-", "a..b"])
def test_invalid_namespace_name_via_ctr_gets_invalid_argument_naming_it(
    shared_daemon: RunningDaemon, name: str
) -> None:
    ctr = shutil.which("ctr")
    assert ctr is not None, "Debian's ctr is not installed"
    result = subprocess.run(
        [ctr, "-a", shared_daemon.address, "namespaces", "create", "--", name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert f'identifier "{name}" must match' in result.stderr
    assert result.stderr.rstrip().endswith(": invalid argument")


def test_namespace_name_with_upper_case_and_underscore_is_valid(
    channel: grpc.Channel,
) -> None:
    stub = namespace_pb2_grpc.NamespacesStub(channel)
    ns = namespace_pb2.Namespace(name="Bad_NS")
    stub.Create(namespace_pb2.CreateNamespaceRequest(namespace=ns), timeout=10)
    try:
        got = stub.Get(namespace_pb2.GetNamespaceRequest(name="Bad_NS"), timeout=10)
        assert got.namespace.name == "Bad_NS"
    finally:
        stub.Delete(namespace_pb2.DeleteNamespaceRequest(name="Bad_NS"), timeout=10)


@pytest.mark.parametrize("name", ["-bad", "a/b", "x" * 77])
@pytest.mark.parametrize("method", ["Create", "Get", "Update", "Delete"])
def test_invalid_namespace_name_via_grpc_gets_invalid_argument_naming_it(
    channel: grpc.Channel, name: str, method: str
) -> None:
    stub = namespace_pb2_grpc.NamespacesStub(channel)
    ns = namespace_pb2.Namespace(name=name, labels={"a": "b"})
    request = {
        "Create": namespace_pb2.CreateNamespaceRequest(namespace=ns),
        "Get": namespace_pb2.GetNamespaceRequest(name=name),
        "Update": namespace_pb2.UpdateNamespaceRequest(namespace=ns),
        "Delete": namespace_pb2.DeleteNamespaceRequest(name=name),
    }[method]
    err = failed(getattr(stub, method), request, metadata=NS)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f'identifier "{name}"' in err.details()
    assert err.details().endswith(": invalid argument")


def test_namespace_label_over_the_size_limit_gets_invalid_argument(
    channel: grpc.Channel,
) -> None:
    stub = namespace_pb2_grpc.NamespacesStub(channel)
    ns = namespace_pb2.Namespace(name="too-big", labels={"big": "x" * 5000})
    err = failed(stub.Create, namespace_pb2.CreateNamespaceRequest(namespace=ns), metadata=NS)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "greater than maximum size" in err.details()


# --- unknown methods ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        "/containerd.services.nope.v1.Nope/Get",
        "/containerd.services.version.v1.Version/Nope",
        "/containerd.services.namespaces.v1.Namespaces/Rename",
        "/not-even-a-service",
    ],
)
def test_unknown_method_gets_unimplemented(channel: grpc.Channel, method: str) -> None:
    err = failed(raw_unary(channel, method), b"", metadata=NS)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unknown_streaming_method_gets_unimplemented(channel: grpc.Channel) -> None:
    call = channel.stream_stream(
        "/containerd.services.nope.v1.Nope/Watch",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    err = failed(call, iter([b"", b""]))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_request_bytes_that_are_not_the_message_are_refused(channel: grpc.Channel) -> None:
    method = "/containerd.services.namespaces.v1.Namespaces/Get"
    err = failed(raw_unary(channel, method), b"\xff\xff\xff\xff", metadata=NS)
    assert err.code() == grpc.StatusCode.INTERNAL  # as containerd answers
    assert "failed to decode request" in (err.details() or "")


def test_request_over_the_size_limit_is_refused_before_it_is_read(
    channel: grpc.Channel,
) -> None:
    """The default max_recv_message_size is 16 MiB, as containerd's."""
    method = "/containerd.services.namespaces.v1.Namespaces/Get"
    err = failed(raw_unary(channel, method), b"\x0a" * (17 << 20), metadata=NS)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "received message larger than max" in (err.details() or "")


# --- the namespace header --------------------------------------------------------------


def publish_request(topic: str = "/test/event") -> events_pb2.PublishRequest:
    event = typeurl.marshal_any(ns_events.NamespaceCreate(name="x"))
    return events_pb2.PublishRequest(topic=topic, event=event)


def test_publish_without_namespace_header_fails_precondition(channel: grpc.Channel) -> None:
    err = failed(events_pb2_grpc.EventsStub(channel).Publish, publish_request())
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "namespace is required: failed precondition"


def test_publish_with_an_invalid_namespace_header_gets_invalid_argument(
    channel: grpc.Channel,
) -> None:
    err = failed(
        events_pb2_grpc.EventsStub(channel).Publish,
        publish_request(),
        metadata=(("containerd-namespace", "-bad"),),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'identifier "-bad"' in err.details()


@pytest.mark.parametrize("topic", ["", "no-slash", "/", "/a//b", "/a/-b"])
def test_publish_with_an_invalid_topic_gets_invalid_argument(
    channel: grpc.Channel, topic: str
) -> None:
    err = failed(events_pb2_grpc.EventsStub(channel).Publish, publish_request(topic), metadata=NS)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f'envelope topic "{topic}"' in err.details()


def test_publish_without_an_event_gets_invalid_argument(channel: grpc.Channel) -> None:
    # (containerd 1.6 crashes on this one; we answer it.)
    request = events_pb2.PublishRequest(topic="/test/event")
    err = failed(events_pb2_grpc.EventsStub(channel).Publish, request, metadata=NS)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_calls_that_need_no_namespace_work_without_the_header(channel: grpc.Channel) -> None:
    version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=10)
    namespace_pb2_grpc.NamespacesStub(channel).List(
        namespace_pb2.ListNamespacesRequest(), timeout=10
    )


# --- filters --------------------------------------------------------------------------------


def test_namespaces_list_with_a_bad_filter_gets_invalid_argument(channel: grpc.Channel) -> None:
    stub = namespace_pb2_grpc.NamespacesStub(channel)
    err = failed(stub.List, namespace_pb2.ListNamespacesRequest(filter="name=="), metadata=NS)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parse error" in err.details()


def test_plugins_with_a_bad_filter_gets_invalid_argument(channel: grpc.Channel) -> None:
    stub = introspection_pb2_grpc.IntrospectionStub(channel)
    err = failed(stub.Plugins, introspection_pb2.PluginsRequest(filters=["type~=/"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_subscribe_with_a_bad_filter_fails_at_once(channel: grpc.Channel) -> None:
    stub = events_pb2_grpc.EventsStub(channel)
    # No event is published: the status must arrive without one.
    err = failed(stub.Subscribe, events_pb2.SubscribeRequest(filters=["topic=="]), metadata=NS)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parse error" in err.details()
