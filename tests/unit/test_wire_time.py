"""Timestamps a client sends are read whatever they hold, as Go reads them.

Found by the fuzz pass (tests/fuzz/test_daemon.py): a created_at before
year 1 or after 9999, or with nanos out of range, made containers and
images Create/Update and events Forward fail with UNKNOWN (OverflowError,
ValueError); containerd takes all of them.
"""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2

from pycontainerd.api.services.events.v1 import events_pb2
from pycontainerd.wire import events as wire_events
from pycontainerd.wire._time import from_timestamp, to_timestamp

pytestmark = pytest.mark.unit

EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        (-(1 << 63), -961, EARLIEST),
        (-62135596801, 0, EARLIEST),
        (-62135596800, -1, EARLIEST),
        (253402300800, 0, LATEST),
        ((1 << 63) - 1, 2147483647, LATEST),
        (1_600_000_000, 1_000_000_000, dt.datetime(2020, 9, 13, 12, 26, 41, tzinfo=dt.UTC)),
    ],
)
def test_times_a_datetime_cannot_hold_are_clamped(
    seconds: int, nanos: int, expected: dt.datetime
) -> None:
    assert from_timestamp(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)) == expected


def test_times_in_range_survive_the_round_trip() -> None:
    when = dt.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert from_timestamp(to_timestamp(when)) == when
    assert from_timestamp(to_timestamp(EARLIEST)) == EARLIEST
    assert from_timestamp(to_timestamp(LATEST)) == LATEST


def test_an_envelope_with_nanos_out_of_range_is_read() -> None:
    msg = events_pb2.Envelope(namespace="default", topic="/a")
    msg.timestamp.seconds, msg.timestamp.nanos = 10, 1_500_000_000
    env = wire_events.from_pb(msg)
    assert env.timestamp == dt.datetime(1970, 1, 1, 0, 0, 11, 500000, tzinfo=dt.UTC)
