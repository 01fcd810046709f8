"""The service edge: method descriptions, the one error mapping, the call runners."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf import empty_pb2

from pycontainerd import edge, errdefs, leases, namespaces
from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2
from pycontainerd.edge import Call, Cardinality, Method, Status
from pycontainerd.metrics import REGISTRY

pytestmark = pytest.mark.unit

CONTAINERS = pb.DESCRIPTOR.services_by_name["Containers"]


async def _nothing(request: Any, call: Call) -> Any:
    return empty_pb2.Empty()


def _method(handler: Any, cardinality: Cardinality = Cardinality.UNARY) -> Method:
    return Method(
        name="/test.v1.Test/Do",
        request=pb.GetContainerRequest,
        response=pb.GetContainerResponse,
        cardinality=cardinality,
        handler=handler,
    )


def test_methods_are_described_from_the_generated_service() -> None:
    methods = {
        m.name: m
        for m in edge.describe(
            CONTAINERS, {"Get": _nothing, "ListStream": _nothing}, preserialized=("ListStream",)
        )
    }
    get = methods["/containerd.services.containers.v1.Containers/Get"]
    assert (get.request, get.response) == (pb.GetContainerRequest, pb.GetContainerResponse)
    assert get.cardinality is Cardinality.UNARY and not get.preserialized
    assert get.service == "containerd.services.containers.v1.Containers"
    stream = methods["/containerd.services.containers.v1.Containers/ListStream"]
    assert stream.cardinality is Cardinality.SERVER_STREAM and stream.preserialized
    write = edge.describe(content_pb2.DESCRIPTOR.services_by_name["Content"], {"Write": _nothing})
    assert write[0].cardinality is Cardinality.BIDI_STREAM


def test_an_unknown_method_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no method Lsit"):
        edge.describe(CONTAINERS, {"Get": _nothing}, preserialized=("Lsit",))


def test_typed_errors_keep_their_code_and_suffix() -> None:
    status = edge.status_of(errdefs.NotFound('container "x"'), "/m")
    assert (status.name, status.message) == ("NOT_FOUND", 'container "x": not found')
    conflict = edge.status_of(errdefs.Conflict("busy"), "/m")
    assert (conflict.name, conflict.message) == ("FAILED_PRECONDITION", "busy: conflict")


def test_an_unexpected_exception_is_internal_without_its_class_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: Any, call: Call) -> Any:
        raise KeyError("boom")

    caplog.set_level(logging.ERROR, logger="pycontainerd.edge")
    with pytest.raises(Status) as excinfo:
        asyncio.run(edge.unary(_method(broken), pb.GetContainerRequest(), Call()))
    assert excinfo.value.name == "INTERNAL"
    assert "KeyError" not in excinfo.value.message and "boom" not in excinfo.value.message
    assert "/test.v1.Test/Do" in excinfo.value.message
    record = next(r for r in caplog.records if r.exc_info)
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_a_status_passes_as_it_is() -> None:
    async def refused(request: Any, call: Call) -> Any:
        raise Status(8, "too big")

    with pytest.raises(Status) as excinfo:
        asyncio.run(edge.unary(_method(refused), pb.GetContainerRequest(), Call()))
    assert (excinfo.value.code, excinfo.value.message) == (8, "too big")


def test_the_call_runs_in_the_namespace_and_lease_of_its_metadata() -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def look(request: Any, call: Call) -> Any:
        seen.append((namespaces.current(), leases.current()))
        return empty_pb2.Empty()

    md = ((namespaces.GRPC_HEADER, "ns1"), (leases.GRPC_HEADER, "l1"), ("other", "x"))
    asyncio.run(edge.unary(_method(look), pb.GetContainerRequest(), Call(metadata=md)))
    asyncio.run(edge.unary(_method(look), pb.GetContainerRequest(), Call()))
    assert seen == [("ns1", "l1"), (None, None)]


def test_a_stream_fails_with_a_status_after_what_it_sent() -> None:
    async def some(request: Any, call: Call) -> AsyncIterator[Any]:
        yield empty_pb2.Empty()
        raise errdefs.Unavailable("subscriber dropped")

    async def collect() -> list[Any]:
        got: list[Any] = []
        with pytest.raises(Status) as excinfo:
            async for item in edge.stream(
                _method(some, Cardinality.SERVER_STREAM), pb.GetContainerRequest(), Call()
            ):
                got.append(item)
        assert excinfo.value.name == "UNAVAILABLE"
        return got

    assert len(asyncio.run(collect())) == 1


def test_calls_are_counted_with_their_code() -> None:
    async def missing(request: Any, call: Call) -> Any:
        raise errdefs.NotFound("x")

    key = ("test.v1.Test", "Do", "unary", "NotFound")
    before = REGISTRY.handled.get(key, 0)
    with pytest.raises(Status):
        asyncio.run(edge.unary(_method(missing), pb.GetContainerRequest(), Call()))
    assert REGISTRY.handled[key] == before + 1


def test_requests_decode_or_fail_as_containerd_does() -> None:
    method = _method(_nothing)
    assert edge.decode_request(method, b"\n\x01x") == pb.GetContainerRequest(id="x")
    with pytest.raises(Status, match="failed to decode request") as excinfo:
        edge.decode_request(method, b"\xff\xff")
    assert excinfo.value.name == "INTERNAL"
