"""Event envelopes <-> :class:`pycontainerd.events.Envelope`."""

from __future__ import annotations

from pycontainerd.api.services.events.v1 import events_pb2 as pb
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2 as ttrpc_pb
from pycontainerd.events.exchange import ZERO_TIME, Envelope
from pycontainerd.wire._time import from_timestamp

__all__ = ["from_pb", "to_pb"]


def to_pb(env: Envelope) -> pb.Envelope:
    msg = pb.Envelope(namespace=env.namespace, topic=env.topic)
    msg.timestamp.FromDatetime(env.timestamp)
    msg.event.CopyFrom(env.event)
    return msg


def from_pb(msg: pb.Envelope | ttrpc_pb.Envelope) -> Envelope:
    """An envelope of the gRPC events API, or of the ttrpc one (same fields)."""
    ts = from_timestamp(msg.timestamp) if msg.HasField("timestamp") else ZERO_TIME
    return Envelope(timestamp=ts, namespace=msg.namespace, topic=msg.topic, event=msg.event)
