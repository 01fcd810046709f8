"""Runtime types <-> the tasks API's messages."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from pycontainerd.api.types.task import task_pb2
from pycontainerd.runtime import State

__all__ = ["process_to_pb", "timestamp"]


def timestamp(ns: int) -> timestamp_pb2.Timestamp:
    """Nanoseconds since the epoch as a Timestamp, exactly (Go's zero time too)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def process_to_pb(state: State) -> task_pb2.Process:
    return task_pb2.Process(
        id=state.id,
        pid=state.pid,
        status=int(state.status),  # type: ignore[arg-type]
        stdin=state.io.stdin,
        stdout=state.io.stdout,
        stderr=state.io.stderr,
        terminal=state.io.terminal,
        exit_status=state.exit_status,
        exited_at=timestamp(state.exited_at),
    )
