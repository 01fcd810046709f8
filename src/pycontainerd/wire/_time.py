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


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)


def from_timestamp(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    """The time ``ts`` names, to the microsecond.

    A gRPC request holding a time outside years 1 to 9999 or nanos outside
    [0, 1e9) never gets here: the daemon's transport refuses it as
    undecodable, as containerd does.  On any other path such a time is
    clamped to the nearest one a datetime can hold instead of raising.
    """
    try:
        return EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    except OverflowError:
        return _EARLIEST if ts.seconds < 0 else _LATEST
