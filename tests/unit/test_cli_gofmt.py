"""Go renderings: event JSON, times, durations and status codes as ctr prints them."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import any_pb2

from pycontainerd.api.events import container_pb2, namespace_pb2, task_pb2
from pycontainerd.cli import gofmt

pytestmark = pytest.mark.unit


def test_namespace_event_json_matches_ctr() -> None:
    # Captured from `ctr events` against containerd 1.6: empty fields are
    # omitted and <, >, & are escaped; other non-ASCII stays raw UTF-8.
    assert gofmt.marshal_event(namespace_pb2.NamespaceCreate(name="ns3")) == '{"name":"ns3"}'
    event = namespace_pb2.NamespaceCreate(name="ns4", labels={"y": "é", "x": "<&>"})
    assert gofmt.marshal_event(event) == (
        '{"name":"ns4","labels":{"x":"\\u003c\\u0026\\u003e","y":"é"}}'
    )


def test_map_entries_with_empty_values_are_kept() -> None:
    event = namespace_pb2.NamespaceUpdate(name="ns4", labels={"x": ""})
    assert gofmt.marshal_event(event) == '{"name":"ns4","labels":{"x":""}}'


def test_strings_escape_like_go_1_19() -> None:
    event = namespace_pb2.NamespaceDelete(name='a"b\\c\nd\te\x01\b\u2028')
    assert gofmt.marshal_event(event) == ('{"name":"a\\"b\\\\c\\nd\\te\\u0001\\u0008\\u2028"}')


def test_task_exit_time_is_rfc3339nano_and_never_omitted() -> None:
    event = task_pb2.TaskExit(container_id="c1", id="c1", pid=42, exit_status=0)
    # exit_status 0 is omitted (omitempty); the non-nullable time is not.
    assert gofmt.marshal_event(event) == (
        '{"container_id":"c1","id":"c1","pid":42,"exited_at":"0001-01-01T00:00:00Z"}'
    )
    event.exit_status = 137
    event.exited_at.FromNanoseconds(1_700_000_000_123_456_780)
    assert gofmt.marshal_event(event) == (
        '{"container_id":"c1","id":"c1","pid":42,"exit_status":137,'
        '"exited_at":"2023-11-14T22:13:20.12345678Z"}'
    )


def test_nested_messages_lists_and_any() -> None:
    event = container_pb2.ContainerCreate(
        id="c1",
        runtime=container_pb2.ContainerCreate.Runtime(
            name="io.containerd.runc.v2", options=any_pb2.Any(type_url="t", value=b"\x01\x02")
        ),
    )
    assert gofmt.marshal_event(event) == (
        '{"id":"c1","runtime":{"name":"io.containerd.runc.v2",'
        '"options":{"type_url":"t","value":"AQI="}}}'
    )
    create = task_pb2.TaskCreate(
        container_id="c1", rootfs=[{"type": "overlay", "options": ["ro"]}], io={}
    )
    assert gofmt.marshal_event(create) == (
        '{"container_id":"c1","rootfs":[{"type":"overlay","options":["ro"]}],"io":{}}'
    )


def test_time_string_is_go_time_string_in_utc() -> None:
    ts = dt.datetime(2026, 11, 23, 9, 28, 33, 593035, tzinfo=dt.UTC)
    assert gofmt.time_string(ts) == "2026-11-23 09:28:33.593035 +0000 UTC"
    assert gofmt.time_string(ts.replace(microsecond=500000)) == ("2026-11-23 09:28:33.5 +0000 UTC")
    assert gofmt.time_string(ts.replace(microsecond=0)) == "2026-11-23 09:28:33 +0000 UTC"
    assert gofmt.time_string(ts, nanos=515766328) == "2026-11-23 09:28:33.515766328 +0000 UTC"
    cet = ts.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert gofmt.time_string(cet) == "2026-11-23 09:28:33.593035 +0000 UTC"


def test_rfc3339nano() -> None:
    ts = dt.datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=dt.UTC)
    assert gofmt.rfc3339nano(ts) == "2026-01-02T03:04:05.12Z"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("10", 10.0),
        ("2.5", 2.5),
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1h2m3s4ms", 3723.004),
        ("-1s", -1.0),
        ("3\u00b5s", 3e-6),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert gofmt.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "10 s", "1s2", "inf", "nan", "-"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        gofmt.parse_duration(text)


def test_code_names_are_grpc_go_names() -> None:
    assert gofmt.code_name(2) == "Unknown"
    assert gofmt.code_name(5) == "NotFound"
    assert gofmt.code_name(12) == "Unimplemented"
    assert gofmt.code_name(99) == "Code(99)"
