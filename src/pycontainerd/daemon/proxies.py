"""Proxy plugins: ``[proxy_plugins.NAME]`` entries become plugins.

containerd lets a config name external gRPC servers as plugins.  An entry
of ``type = "snapshot"`` becomes the snapshotter ``NAME``
(``io.containerd.snapshotter.v1.NAME``), a :class:`ProxySnapshotter` over
the entry's ``address``; the metadata layer then wraps it like any other
snapshotter.  Other types are not supported yet and are logged and ignored.

:class:`ProxySnapshotter` keeps the core snapshotter contract
(:class:`~pycontainerd.snapshots.Snapshotter`) over the Snapshots service,
so it lives here, above the wire converters it speaks through, and not in
:mod:`pycontainerd.snapshots`, which they import.  Like any core
snapshotter it knows nothing of namespaces: the metadata layer hands it
backend keys, and every request names the snapshotter ``NAME``.
Requests and replies are built by :mod:`pycontainerd.wire.snapshots`, which
the client's snapshot service shares.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from pycontainerd import errdefs, plugin
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from pycontainerd.daemon.config import ProxyPlugin
from pycontainerd.dialer import channel_target
from pycontainerd.mount import Mount
from pycontainerd.snapshots import Info, Usage
from pycontainerd.wire import mounts as mounts_wire
from pycontainerd.wire import snapshots as wire

__all__ = ["ProxySnapshotter", "register"]

log = logging.getLogger(__name__)

# Registrations are process-wide; the address a name stands for is looked up
# at init, so a later config (an embedder's second daemon) is honoured.
_addresses: dict[str, str] = {}


def _init_snapshot(name: str) -> plugin.InitFunc:
    def init(ctx: plugin.InitContext) -> ProxySnapshotter:
        address = _addresses[name]
        ctx.exports["address"] = address
        return ProxySnapshotter(address, name)

    return init


def register(proxies: Mapping[str, ProxyPlugin]) -> None:
    """Register a plugin for each proxy entry of a type we know."""
    for name, proxy in proxies.items():
        if proxy.type != "snapshot":
            log.warning("unsupported proxy plugin type", extra={"name": name, "type": proxy.type})
            continue
        first = name not in _addresses
        _addresses[name] = proxy.address
        if not first:
            continue
        try:
            plugin.register(
                plugin.Registration(
                    type=plugin.PluginType.SNAPSHOT, id=name, init=_init_snapshot(name)
                )
            )
        except errdefs.AlreadyExists:
            log.warning("proxy plugin shadows a built-in", extra={"name": name})


class ProxySnapshotter:
    """The :class:`~pycontainerd.snapshots.Snapshotter` at ``address``, known as ``name``."""

    def __init__(self, address: str, name: str) -> None:
        self.address = address
        self.name = name
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.SnapshotsStub | None = None

    def _snapshots(self) -> pb_grpc.SnapshotsStub:
        # The channel binds to the running loop, so it is made on first use.
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                channel_target(self.address), options=[("grpc.default_authority", "localhost")]
            )
            self._stub = pb_grpc.SnapshotsStub(self._channel)
        return self._stub

    async def _unary(self, method: str, request: Message) -> Any:
        fn = getattr(self._snapshots(), method)
        try:
            return await fn(request)
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc

    async def stat(self, key: str) -> Info:
        resp = await self._unary("Stat", pb.StatSnapshotRequest(snapshotter=self.name, key=key))
        return wire.info_from_pb(resp.info)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        resp = await self._unary("Update", wire.update_request(self.name, info, fieldpaths))
        return wire.info_from_pb(resp.info)

    async def usage(self, key: str) -> Usage:
        req = pb.UsageRequest(snapshotter=self.name, key=key)
        return wire.usage_from_pb(await self._unary("Usage", req))

    async def mounts(self, key: str) -> list[Mount]:
        resp = await self._unary("Mounts", pb.MountsRequest(snapshotter=self.name, key=key))
        return mounts_wire.list_from_pb(resp.mounts)

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        resp = await self._unary("Prepare", wire.prepare_request(self.name, key, parent, labels))
        return mounts_wire.list_from_pb(resp.mounts)

    async def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        resp = await self._unary("View", wire.view_request(self.name, key, parent, labels))
        return mounts_wire.list_from_pb(resp.mounts)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        await self._unary("Commit", wire.commit_request(self.name, name, key, labels))

    async def remove(self, key: str) -> None:
        await self._unary("Remove", pb.RemoveSnapshotRequest(snapshotter=self.name, key=key))

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        call = self._snapshots().List(wire.list_request(self.name, filters))
        try:
            async for resp in call:
                for info in resp.info:
                    yield wire.info_from_pb(info)
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc
        finally:
            call.cancel()

    async def cleanup(self) -> None:
        # A remote snapshotter need not clean up.
        with contextlib.suppress(errdefs.NotImplemented):
            await self._unary("Cleanup", pb.CleanupRequest(snapshotter=self.name))

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()
