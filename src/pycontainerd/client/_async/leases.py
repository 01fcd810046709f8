"""Leases over the leases service: ``client.leases`` and ``client.lease()``.

``async with client.lease() as lease:`` creates a lease (expiring in 24 hours
unless told otherwise, as containerd's ``WithLease``), runs the block with
it as the context's lease, so every request carries the ``containerd-lease``
header and what the daemon creates is held by it, and deletes it after.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pycontainerd import leases
from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc
from pycontainerd.leases import Lease, Resource
from pycontainerd.wire import leases as wire

if TYPE_CHECKING:
    from pycontainerd.client._async.client import _Call

__all__ = ["AsyncLeaseScope", "AsyncLeases"]


class AsyncLeases:
    """``client.leases``: create, list and delete leases and their resources."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._stub = leases_pb2_grpc.LeasesStub(call.channel)

    async def create(
        self,
        id: str | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        expiration: dt.timedelta | None = None,
    ) -> Lease:
        """Create a lease; no ``id`` lets the daemon pick one.  ``expiration``
        adds the ``containerd.io/gc.expire`` label."""
        lbls = dict(labels or {})
        if expiration is not None:
            lbls[leases.EXPIRE_LABEL] = leases.expire_label(expiration)
        req = leases_pb2.CreateRequest(id=id or "", labels=lbls)
        resp = await self._call.unary(self._stub.Create, req)
        return wire.from_pb(resp.lease)

    async def list(self, *filters: str) -> builtins.list[Lease]:
        req = leases_pb2.ListRequest(filters=list(filters))
        resp = await self._call.unary(self._stub.List, req)
        return [wire.from_pb(lease) for lease in resp.leases]

    async def delete(self, id: str, *, sync: bool = False) -> None:
        """Delete a lease; ``sync`` waits for garbage collection to run."""
        await self._call.unary(self._stub.Delete, leases_pb2.DeleteRequest(id=id, sync=sync))

    async def add_resource(self, id: str, resource: Resource) -> None:
        req = leases_pb2.AddResourceRequest(id=id, resource=wire.resource_to_pb(resource))
        await self._call.unary(self._stub.AddResource, req)

    async def delete_resource(self, id: str, resource: Resource) -> None:
        req = leases_pb2.DeleteResourceRequest(id=id, resource=wire.resource_to_pb(resource))
        await self._call.unary(self._stub.DeleteResource, req)

    async def list_resources(self, id: str) -> builtins.list[Resource]:
        req = leases_pb2.ListResourcesRequest(id=id)
        resp = await self._call.unary(self._stub.ListResources, req)
        return [wire.resource_from_pb(r) for r in resp.resources]


class AsyncLeaseScope:
    """``async with client.lease() as lease``: a lease held for one block.

    Inside the block the lease is the context's lease (see
    :mod:`pycontainerd.leases`); on exit it is deleted, and with
    ``sync=True`` the delete waits for garbage collection.
    """

    def __init__(
        self,
        manager: AsyncLeases,
        id: str | None,
        labels: Mapping[str, str] | None,
        expiration: dt.timedelta | None,
        sync: bool,
    ) -> None:
        self._manager = manager
        self._id = id
        self._labels = labels
        self._expiration = expiration
        self._sync = sync
        self._scope: Any = None
        self.lease: Lease | None = None

    async def __aenter__(self) -> Lease:
        # Like containerd's WithLease, the client picks the id.
        lease = await self._manager.create(
            self._id or leases.random_id(), self._labels, expiration=self._expiration
        )
        self.lease = lease
        self._scope = leases.lease(lease.id)
        self._scope.__enter__()
        return lease

    async def __aexit__(self, *exc_info: object) -> None:
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.__exit__(None, None, None)
        if self.lease is not None:
            await self._manager.delete(self.lease.id, sync=self._sync)
