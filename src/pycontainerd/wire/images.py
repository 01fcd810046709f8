"""Image messages <-> :class:`pycontainerd.images.Image`."""

from __future__ import annotations

from pycontainerd.api.services.images.v1 import images_pb2 as pb
from pycontainerd.api.types import descriptor_pb2
from pycontainerd.images import Descriptor, Image
from pycontainerd.wire._time import from_timestamp, to_timestamp

__all__ = ["descriptor_from_pb", "descriptor_to_pb", "from_pb", "to_pb"]


def descriptor_to_pb(d: Descriptor) -> descriptor_pb2.Descriptor:
    return descriptor_pb2.Descriptor(
        media_type=d.media_type, digest=d.digest, size=d.size, annotations=d.annotations
    )


def descriptor_from_pb(msg: descriptor_pb2.Descriptor) -> Descriptor:
    return Descriptor(msg.media_type, msg.digest, msg.size, dict(msg.annotations))


def to_pb(image: Image) -> pb.Image:
    return pb.Image(
        name=image.name,
        labels=image.labels,
        target=descriptor_to_pb(image.target),
        created_at=to_timestamp(image.created_at),
        updated_at=to_timestamp(image.updated_at),
    )


def from_pb(msg: pb.Image) -> Image:
    return Image(
        name=msg.name,
        labels=dict(msg.labels),
        target=descriptor_from_pb(msg.target),
        created_at=from_timestamp(msg.created_at),
        updated_at=from_timestamp(msg.updated_at),
    )
