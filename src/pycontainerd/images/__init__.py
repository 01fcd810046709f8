"""Images: a name pointing at a target descriptor, and the descriptor itself.

An image record is what containerd's ``images.Image`` is: a name
(``docker.io/library/busybox:latest``), labels, and the descriptor of its
root manifest or index in the content store.  The record lives in the
metadata database (:mod:`pycontainerd.metadata.images`); the client reads
and writes it over the images service.  Manifest handling, unpacking and
import/export belong in this package too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from pycontainerd.platforms import Platform
from pycontainerd.times import EPOCH

__all__ = ["Descriptor", "Image"]


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and its size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: The platform an index entry is for (only in indexes; not on the wire).
    platform: Platform | None = None


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    target: Descriptor
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: dt.datetime = EPOCH
    updated_at: dt.datetime = EPOCH
