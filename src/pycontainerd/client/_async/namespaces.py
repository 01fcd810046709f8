"""Namespaces over the namespaces service: ``client.namespaces``.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING

from google.protobuf import field_mask_pb2

from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.wire.namespaces import NamespaceInfo, from_pb

if TYPE_CHECKING:
    from pycontainerd.client._async.client import _Call

__all__ = ["AsyncNamespaces"]


class AsyncNamespaces:
    """``client.namespaces``: create, get, list, update labels, delete."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._stub = namespace_pb2_grpc.NamespacesStub(call.channel)

    async def create(self, name: str, labels: Mapping[str, str] | None = None) -> NamespaceInfo:
        req = namespace_pb2.CreateNamespaceRequest(
            namespace=namespace_pb2.Namespace(name=name, labels=dict(labels or {}))
        )
        resp = await self._call.unary(self._stub.Create, req)
        return from_pb(resp.namespace)

    async def get(self, name: str) -> NamespaceInfo:
        req = namespace_pb2.GetNamespaceRequest(name=name)
        resp = await self._call.unary(self._stub.Get, req)
        return from_pb(resp.namespace)

    async def list(self, filter: str = "") -> builtins.list[NamespaceInfo]:
        req = namespace_pb2.ListNamespacesRequest(filter=filter)
        resp = await self._call.unary(self._stub.List, req)
        return [from_pb(ns) for ns in resp.namespaces]

    async def set_labels(self, name: str, labels: Mapping[str, str]) -> NamespaceInfo:
        """Set (value) or remove (empty value) the given labels, keeping the rest."""
        req = namespace_pb2.UpdateNamespaceRequest(
            namespace=namespace_pb2.Namespace(
                name=name, labels={k: v for k, v in labels.items() if v}
            ),
            update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels]),
        )
        resp = await self._call.unary(self._stub.Update, req)
        return from_pb(resp.namespace)

    async def delete(self, name: str) -> None:
        req = namespace_pb2.DeleteNamespaceRequest(name=name)
        await self._call.unary(self._stub.Delete, req)
