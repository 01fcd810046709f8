"""One snapshotter over the snapshots service: ``client.snapshot_service(name)``.

The object keeps :class:`pycontainerd.snapshots.Snapshotter`'s contract, so
code written against the protocol (image unpack, tests) runs the same over
the wire; requests carry the client's namespace and the context's lease.
What goes on the wire is built by :mod:`pycontainerd.wire.snapshots`, which
the daemon's proxy snapshotter shares.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

import grpc

from pycontainerd import errdefs
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from pycontainerd.mount import Mount
from pycontainerd.snapshots import Info, Usage
from pycontainerd.wire import mounts as mounts_wire
from pycontainerd.wire import snapshots as wire

if TYPE_CHECKING:
    from pycontainerd.client._async.client import _Call

__all__ = ["AsyncSnapshotService"]


class AsyncSnapshotService:
    """A named snapshotter of the daemon, in the client's namespace."""

    def __init__(self, call: _Call, name: str) -> None:
        self._call = call
        self.name = name
        self._stub = snapshots_pb2_grpc.SnapshotsStub(call.channel)

    async def stat(self, key: str) -> Info:
        req = snapshots_pb2.StatSnapshotRequest(snapshotter=self.name, key=key)
        resp = await self._call.unary(self._stub.Stat, req)
        return wire.info_from_pb(resp.info)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        req = wire.update_request(self.name, info, fieldpaths)
        resp = await self._call.unary(self._stub.Update, req)
        return wire.info_from_pb(resp.info)

    async def usage(self, key: str) -> Usage:
        req = snapshots_pb2.UsageRequest(snapshotter=self.name, key=key)
        return wire.usage_from_pb(await self._call.unary(self._stub.Usage, req))

    async def mounts(self, key: str) -> list[Mount]:
        req = snapshots_pb2.MountsRequest(snapshotter=self.name, key=key)
        resp = await self._call.unary(self._stub.Mounts, req)
        return mounts_wire.list_from_pb(resp.mounts)

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        req = wire.prepare_request(self.name, key, parent, labels)
        resp = await self._call.unary(self._stub.Prepare, req)
        return mounts_wire.list_from_pb(resp.mounts)

    async def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        req = wire.view_request(self.name, key, parent, labels)
        resp = await self._call.unary(self._stub.View, req)
        return mounts_wire.list_from_pb(resp.mounts)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        req = wire.commit_request(self.name, name, key, labels)
        await self._call.unary(self._stub.Commit, req)

    async def remove(self, key: str) -> None:
        req = snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.name, key=key)
        await self._call.unary(self._stub.Remove, req)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Snapshots matching any of ``filters``, streamed as the daemon sends them."""
        call = self._stub.List(
            wire.list_request(self.name, filters),
            metadata=self._call.metadata(),
            timeout=self._call.timeout,
        )
        try:
            async for resp in call:
                for info in resp.info:
                    yield wire.info_from_pb(info)
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc
        finally:
            call.cancel()

    async def list(self, *filters: str) -> list[Info]:
        return [info async for info in self.walk(*filters)]

    async def cleanup(self) -> None:
        req = snapshots_pb2.CleanupRequest(snapshotter=self.name)
        await self._call.unary(self._stub.Cleanup, req)

    async def close(self) -> None:
        """The channel belongs to the client."""
