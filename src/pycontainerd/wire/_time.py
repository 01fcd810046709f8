"""``google.protobuf.Timestamp`` <-> aware UTC datetimes."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from pycontainerd.times import EPOCH

__all__ = ["from_timestamp", "to_timestamp"]


def to_timestamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    delta = when - EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def from_timestamp(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
