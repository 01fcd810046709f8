"""Images over the images service: ``client.images``.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING

from google.protobuf import field_mask_pb2

from pycontainerd.api.services.images.v1 import images_pb2, images_pb2_grpc
from pycontainerd.images import Descriptor, Image
from pycontainerd.wire import images as wire

if TYPE_CHECKING:
    from pycontainerd.client._async.client import _Call

__all__ = ["AsyncImages"]


class AsyncImages:
    """``client.images``: image records (a name pointing at a target descriptor)."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._stub = images_pb2_grpc.ImagesStub(call.channel)

    async def create(
        self, name: str, target: Descriptor, labels: Mapping[str, str] | None = None
    ) -> Image:
        image = Image(name=name, target=target, labels=dict(labels or {}))
        req = images_pb2.CreateImageRequest(image=wire.to_pb(image))
        resp = await self._call.unary(self._stub.Create, req)
        return wire.from_pb(resp.image)

    async def get(self, name: str) -> Image:
        resp = await self._call.unary(self._stub.Get, images_pb2.GetImageRequest(name=name))
        return wire.from_pb(resp.image)

    async def list(self, *filters: str) -> builtins.list[Image]:
        """Images matching any of ``filters`` (``name==...``, ``labels.k==v``...)."""
        req = images_pb2.ListImagesRequest(filters=list(filters))
        resp = await self._call.unary(self._stub.List, req)
        return [wire.from_pb(i) for i in resp.images]

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        """Change the fields named by ``fieldpaths`` (``labels``, ``labels.KEY``,
        ``target``, ``annotations``...), or replace the record when none are given."""
        req = images_pb2.UpdateImageRequest(image=wire.to_pb(image))
        if fieldpaths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(fieldpaths)))
        resp = await self._call.unary(self._stub.Update, req)
        return wire.from_pb(resp.image)

    async def set_labels(
        self, name: str, labels: Mapping[str, str], *, replace_all: bool = False
    ) -> Image:
        """Set labels (an empty value removes one), or replace them all."""
        current = await self.get(name)
        image = Image(name=name, target=current.target, labels=dict(labels))
        paths = ["labels"] if replace_all else [f"labels.{k}" for k in labels]
        return await self.update(image, *paths)

    async def delete(self, name: str, *, sync: bool = False) -> None:
        """Delete the record; ``sync`` waits for garbage collection to run."""
        req = images_pb2.DeleteImageRequest(name=name, sync=sync)
        await self._call.unary(self._stub.Delete, req)
