"""Containers: the metadata record of a container and the store contract.

A container is only metadata (containerd's ``containers.Container``): an id,
labels, the image it came from, the runtime that will run its tasks, its OCI
spec, and the snapshot holding its root filesystem.  Running it is the task
service's business.  The daemon keeps these in the metadata database
(:mod:`pycontainerd.metadata.containers`); the client reads and writes them
over the containers service.  Both speak this module's types.

:class:`RawContainer` is the same record as the database holds it, its
``Any`` values still serialized: what the containers service lists from, so
that listing thousands of containers never decodes (and re-encodes) a spec.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycontainerd.times import EPOCH

if TYPE_CHECKING:
    from google.protobuf import any_pb2

__all__ = ["Container", "RawContainer", "RuntimeInfo"]


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """The runtime (``io.containerd.runc.v2``) and its options as an Any."""

    name: str = ""
    options: any_pb2.Any | None = None


@dataclass(frozen=True, slots=True)
class Container:
    """One container record; ``spec`` is the OCI spec packed in an Any."""

    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    image: str = ""
    runtime: RuntimeInfo = field(default_factory=RuntimeInfo)
    spec: any_pb2.Any | None = None
    snapshotter: str = ""
    snapshot_key: str = ""
    created_at: dt.datetime = EPOCH
    updated_at: dt.datetime = EPOCH
    extensions: Mapping[str, any_pb2.Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RawContainer:
    """A container record with its ``google.protobuf.Any`` values still serialized.

    ``runtime_options``, ``spec`` and the ``extensions`` values are serialized
    ``Any`` messages (None when unset); times are integer nanoseconds since
    the epoch.  Only listings use it (see ``ContainerStore.list_raw``).
    """

    id: str
    labels: Mapping[str, str]
    image: str
    runtime_name: str
    runtime_options: bytes | None
    spec: bytes | None
    snapshotter: str
    snapshot_key: str
    created_at: int
    updated_at: int
    extensions: Mapping[str, bytes]
