"""errdefs: each error class travels as its gRPC code with containerd's message
suffix, and comes back as the same class with the suffix stripped."""

from __future__ import annotations

import grpc
import pytest

from pycontainerd import errdefs

pytestmark = pytest.mark.unit

CODES = [
    (errdefs.Unknown, grpc.StatusCode.UNKNOWN, "unknown"),
    (errdefs.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, "invalid argument"),
    (errdefs.NotFound, grpc.StatusCode.NOT_FOUND, "not found"),
    (errdefs.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, "already exists"),
    (errdefs.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, "failed precondition"),
    (errdefs.Conflict, grpc.StatusCode.FAILED_PRECONDITION, "conflict"),
    (errdefs.Unavailable, grpc.StatusCode.UNAVAILABLE, "unavailable"),
    (errdefs.NotImplemented, grpc.StatusCode.UNIMPLEMENTED, "not implemented"),
    (errdefs.Aborted, grpc.StatusCode.ABORTED, "aborted"),
    (errdefs.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "permission denied"),
    (errdefs.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, "resource exhausted"),
    (errdefs.OutOfRange, grpc.StatusCode.OUT_OF_RANGE, "out of range"),
    (errdefs.Canceled, grpc.StatusCode.CANCELLED, "context canceled"),
    (errdefs.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded"),
    (errdefs.TaskStopTimeout, grpc.StatusCode.DEADLINE_EXCEEDED, "task stop timeout"),
]
IDS = [cls.__name__ for cls, _, _ in CODES]


def test_every_public_error_class_is_in_the_table() -> None:
    public = {
        getattr(errdefs, name)
        for name in errdefs.__all__
        if isinstance(getattr(errdefs, name), type)
        and issubclass(getattr(errdefs, name), errdefs.ContainerdError)
    }
    assert public - {errdefs.ContainerdError} == {cls for cls, _, _ in CODES}


@pytest.mark.parametrize(("cls", "code", "suffix"), CODES, ids=IDS)
def test_error_class_maps_to_its_grpc_code(
    cls: type[errdefs.ContainerdError], code: grpc.StatusCode, suffix: str
) -> None:
    assert errdefs.to_grpc_code(cls("x")) == code
    assert cls.code == code


@pytest.mark.parametrize(("cls", "code", "suffix"), CODES, ids=IDS)
def test_wire_message_adds_the_class_suffix(
    cls: type[errdefs.ContainerdError], code: grpc.StatusCode, suffix: str
) -> None:
    assert errdefs.wire_message(cls('container "web"')) == f'container "web": {suffix}'


@pytest.mark.parametrize(("cls", "code", "suffix"), CODES, ids=IDS)
def test_error_survives_the_round_trip_through_a_status(
    cls: type[errdefs.ContainerdError], code: grpc.StatusCode, suffix: str
) -> None:
    sent = cls('image "docker.io/library/busybox:latest"')
    back = errdefs.from_status(errdefs.to_grpc_code(sent), errdefs.wire_message(sent))
    assert type(back) is cls
    assert back.message == 'image "docker.io/library/busybox:latest"'


@pytest.mark.parametrize(("cls", "code", "suffix"), CODES, ids=IDS)
def test_error_without_a_message_travels_as_its_suffix(
    cls: type[errdefs.ContainerdError], code: grpc.StatusCode, suffix: str
) -> None:
    assert cls().message == suffix
    assert errdefs.wire_message(cls()) == suffix
    back = errdefs.from_status(code, suffix)
    assert type(back) is cls
    assert back.message == suffix


def test_wire_message_does_not_repeat_a_suffix_already_there() -> None:
    exc = errdefs.NotFound("content sha256:abc: not found")
    assert errdefs.wire_message(exc) == "content sha256:abc: not found"


def test_from_status_strips_the_suffix() -> None:
    exc = errdefs.from_status(grpc.StatusCode.NOT_FOUND, 'namespace "ns1": not found')
    assert isinstance(exc, errdefs.NotFound)
    assert exc.message == 'namespace "ns1"'
    assert str(exc) == 'namespace "ns1"'


def test_from_status_keeps_a_message_without_the_suffix() -> None:
    # e.g. grpc's own "Method not found!" for an unknown method
    exc = errdefs.from_status(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    assert isinstance(exc, errdefs.NotImplemented)
    assert exc.message == "Method not found!"


def test_from_status_strips_only_the_last_suffix() -> None:
    exc = errdefs.from_status(grpc.StatusCode.NOT_FOUND, "lease: not found in store: not found")
    assert exc.message == "lease: not found in store"


@pytest.mark.parametrize("details", [None, ""])
def test_from_status_without_details_uses_the_suffix(details: str | None) -> None:
    exc = errdefs.from_status(grpc.StatusCode.ALREADY_EXISTS, details)
    assert isinstance(exc, errdefs.AlreadyExists)
    assert exc.message == "already exists"


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNAUTHENTICATED]
)
def test_codes_without_a_class_come_back_as_unknown(code: grpc.StatusCode) -> None:
    exc = errdefs.from_status(code, "boom")
    assert type(exc) is errdefs.Unknown
    assert exc.message == "boom"


def test_conflict_travels_as_failed_precondition() -> None:
    exc = errdefs.Conflict('container "web": updated by another client')
    assert errdefs.to_grpc_code(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert errdefs.wire_message(exc) == 'container "web": updated by another client: conflict'
    back = errdefs.from_status(grpc.StatusCode.FAILED_PRECONDITION, errdefs.wire_message(exc))
    # a caller catching FailedPrecondition catches it, and can still tell it was a conflict
    assert isinstance(back, errdefs.FailedPrecondition)
    assert isinstance(back, errdefs.Conflict)
    assert back.message == 'container "web": updated by another client'


def test_plain_failed_precondition_is_not_mistaken_for_a_conflict() -> None:
    back = errdefs.from_status(
        grpc.StatusCode.FAILED_PRECONDITION, "namespace is required: failed precondition"
    )
    assert type(back) is errdefs.FailedPrecondition
    assert back.message == "namespace is required"


def test_non_containerd_errors_travel_as_unknown() -> None:
    exc = ValueError("bad thing")
    assert errdefs.to_grpc_code(exc) == grpc.StatusCode.UNKNOWN
    assert errdefs.wire_message(exc) == "bad thing"
    assert errdefs.wire_message(KeyError()) == "KeyError"


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_from_grpc_translates_a_failed_call() -> None:
    failed = _FakeRpcError(
        grpc.StatusCode.INVALID_ARGUMENT, 'identifier "-x" must match: invalid argument'
    )
    exc = errdefs.from_grpc(failed)
    assert isinstance(exc, errdefs.InvalidArgument)
    assert exc.message == 'identifier "-x" must match'


@pytest.mark.parametrize("cls", [cls for cls, _, _ in CODES], ids=IDS)
def test_errors_never_inherit_from_transport_errors(cls: type[errdefs.ContainerdError]) -> None:
    assert not issubclass(cls, grpc.RpcError)
    assert issubclass(cls, errdefs.ContainerdError)


def test_q_quotes_like_go() -> None:
    assert errdefs.q("web") == '"web"'
    assert errdefs.q('a"b') == '"a\\"b"'


def test_a_subclass_made_elsewhere_never_stands_in_for_ours() -> None:
    class Gone(errdefs.Unavailable):  # as the runtime's ShimGone
        pass

    back = errdefs.from_status(errdefs.Unavailable.code, "shim gone: unavailable")
    assert type(back) is errdefs.Unavailable
    assert back.message == "shim gone"
    assert Gone.__subclasses__() == []
