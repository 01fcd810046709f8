"""Listings go out pre-encoded: their bytes must parse to exactly what ``to_pb`` builds."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import any_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.containers import Container, RawContainer, RuntimeInfo
from pycontainerd.metadata._codec import to_datetime
from pycontainerd.wire import _protowire as w
from pycontainerd.wire.containers import encode_raw, list_message, list_response, to_pb

pytestmark = pytest.mark.unit

SPEC = any_pb2.Any(
    type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec",
    value=b"{" + b"x" * 300 + b"}",
)
OPTIONS = any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\x08\x01")


def pair(**kw: Any) -> tuple[RawContainer, Container]:
    """The same record as the store lists it raw and as it decodes it."""
    fields: dict[str, Any] = {
        "id": "web",
        "labels": {},
        "image": "",
        "runtime_name": "io.containerd.runc.v2",
        "runtime_options": None,
        "spec": SPEC,
        "snapshotter": "",
        "snapshot_key": "",
        "created_at": 1_700_000_000_123_456_789,
        "updated_at": 1_700_000_001_000_000_000,
        "extensions": {},
    }
    fields.update(kw)
    opts, spec = fields["runtime_options"], fields["spec"]
    raw = RawContainer(
        **{
            **fields,
            "runtime_options": None if opts is None else opts.SerializeToString(),
            "spec": None if spec is None else spec.SerializeToString(),
            "extensions": {k: v.SerializeToString() for k, v in fields["extensions"].items()},
        }
    )
    decoded = Container(
        id=fields["id"],
        labels=fields["labels"],
        image=fields["image"],
        runtime=RuntimeInfo(fields["runtime_name"], opts),
        spec=spec,
        snapshotter=fields["snapshotter"],
        snapshot_key=fields["snapshot_key"],
        created_at=to_datetime(fields["created_at"]),
        updated_at=to_datetime(fields["updated_at"]),
        extensions=fields["extensions"],
    )
    return raw, decoded


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint(value: int, encoded: bytes) -> None:
    assert w.varint(value) == encoded


def test_varint_refuses_negative() -> None:
    with pytest.raises(ValueError):
        w.varint(-1)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"spec": None, "runtime_name": "", "created_at": 0, "updated_at": 0},
        {
            "id": "wëb-1",
            "labels": {"a": "b", "ü": "ß", "long": "v" * 200},
            "image": "docker.io/library/busybox:latest",
            "runtime_options": OPTIONS,
            "snapshotter": "overlayfs",
            "snapshot_key": "web-snap",
            "extensions": {"x": OPTIONS, "empty": any_pb2.Any(), "big": SPEC},
        },
        # Before the epoch (negative seconds) and far after it; sub-microsecond
        # digits go, as they do through the decoded record.
        {"created_at": -1_500_999, "updated_at": 9_000_000_000_000_000_999},
    ],
    ids=["minimal-spec", "nothing-set", "every-field", "times"],
)
def test_encode_raw_parses_to_what_to_pb_builds(kw: dict[str, Any]) -> None:
    raw, decoded = pair(**kw)
    assert pb.Container.FromString(encode_raw(raw)) == to_pb(decoded)


def test_list_message_and_response_carry_the_containers_in_order() -> None:
    a, a_dec = pair(id="a", labels={"k": "v"})
    b, b_dec = pair(id="b", spec=None)
    assert pb.ListContainerMessage.FromString(list_message(a)) == pb.ListContainerMessage(
        container=to_pb(a_dec)
    )
    resp = pb.ListContainersResponse.FromString(list_response([a, b]))
    assert list(resp.containers) == [to_pb(a_dec), to_pb(b_dec)]
    assert list_response([]) == b""
