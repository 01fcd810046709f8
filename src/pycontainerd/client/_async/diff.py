"""The diff service: ``client.diff``.

``apply`` unpacks a layer blob (already in the content store) onto mounts,
usually a snapshot's; ``compare`` writes the changes between two mount sets
as a new layer blob.  The daemon does the work: the mounts must make sense
on its host.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from google.protobuf import any_pb2

from pycontainerd.api.services.diff.v1 import diff_pb2, diff_pb2_grpc
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount
from pycontainerd.wire.images import descriptor_from_pb, descriptor_to_pb
from pycontainerd.wire.mounts import list_to_pb

if TYPE_CHECKING:
    from pycontainerd.client._async.client import _Call

__all__ = ["AsyncDiff"]


class AsyncDiff:
    """``client.diff``: apply layers onto mounts and turn mount changes into layers."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._stub = diff_pb2_grpc.DiffStub(call.channel)

    async def apply(
        self,
        desc: Descriptor,
        mounts: Sequence[Mount],
        payloads: Mapping[str, any_pb2.Any] | None = None,
    ) -> Descriptor:
        """Unpack the layer ``desc`` onto ``mounts``; returns the descriptor of
        the uncompressed tar that was applied (its digest is the diff ID)."""
        req = diff_pb2.ApplyRequest(
            diff=descriptor_to_pb(desc), mounts=list_to_pb(mounts), payloads=dict(payloads or {})
        )
        resp = await self._call.unary(self._stub.Apply, req)
        return descriptor_from_pb(resp.applied)

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """Write the changes from ``lower`` to ``upper`` as a layer blob.

        ``media_type`` picks the format (empty: a gzip OCI layer); ``ref``
        names the ingest (empty: a fresh one); ``labels`` go on the blob.
        The blob is held by the context's lease, if any.
        """
        req = diff_pb2.DiffRequest(
            left=list_to_pb(lower),
            right=list_to_pb(upper),
            media_type=media_type,
            ref=ref,
            labels=dict(labels or {}),
        )
        resp = await self._call.unary(self._stub.Diff, req)
        return descriptor_from_pb(resp.diff)
