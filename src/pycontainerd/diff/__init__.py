"""Diff: turning layer blobs into filesystems and filesystems into layer blobs.

Two small interfaces, as in containerd's ``diff`` package: an
:class:`Applier` unpacks a layer blob from the content store onto a set of
mounts (a snapshot), and a :class:`Comparer` writes the changes between two
mount sets into the content store as a new layer blob.  A differ plugin
(``io.containerd.differ.v1``) offers both; the walking differ
(:mod:`pycontainerd.diff.walking`) is the one built in.

Which layer media types can be applied is the archive's business
(:func:`pycontainerd.archive.compression.from_media_type`); which ones a
comparer can produce is decided here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from google.protobuf import any_pb2

from pycontainerd import errdefs
from pycontainerd.archive.compression import Compression
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount

__all__ = [
    "LABEL_UNCOMPRESSED",
    "MEDIA_TYPE_LAYER",
    "MEDIA_TYPE_LAYER_GZIP",
    "MEDIA_TYPE_LAYER_ZSTD",
    "Applier",
    "Comparer",
    "Differ",
    "Payloads",
    "output_compression",
]

MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = MEDIA_TYPE_LAYER + "+gzip"
MEDIA_TYPE_LAYER_ZSTD = MEDIA_TYPE_LAYER + "+zstd"

#: Content label holding the digest of a compressed layer's uncompressed tar.
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"

#: Extra data for stream processors, keyed by processor id (ApplyRequest.payloads).
Payloads = Mapping[str, any_pb2.Any]


def output_compression(media_type: str) -> Compression:
    """The compression a comparer applies to produce ``media_type``; the
    default (empty) type is a gzip layer.  NotImplemented for anything but
    the three OCI layer types."""
    if media_type == MEDIA_TYPE_LAYER:
        return Compression.UNCOMPRESSED
    if media_type in ("", MEDIA_TYPE_LAYER_GZIP):
        return Compression.GZIP
    if media_type == MEDIA_TYPE_LAYER_ZSTD:
        return Compression.ZSTD
    raise errdefs.NotImplemented(f"unsupported diff media type: {media_type}")


@runtime_checkable
class Applier(Protocol):
    """Unpacks layer blobs onto mounts."""

    async def apply(
        self, desc: Descriptor, mounts: Sequence[Mount], *, payloads: Payloads | None = None
    ) -> Descriptor:
        """Apply the blob ``desc`` names onto ``mounts``; returns the descriptor
        of the uncompressed tar that was applied (its digest is the layer's
        diff ID).  NotImplemented for a media type this applier cannot handle,
        so a chain of differs can try the next one."""
        ...


@runtime_checkable
class Comparer(Protocol):
    """Writes the difference between two mount sets as a layer blob."""

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """Store the changes from ``lower`` to ``upper`` in the content store
        (ingest ``ref``, or a fresh one) with ``labels``, and describe the
        blob.  NotImplemented for a media type this comparer cannot write."""
        ...


@runtime_checkable
class Differ(Applier, Comparer, Protocol):
    """Both halves: what a differ plugin provides."""
