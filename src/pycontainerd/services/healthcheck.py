"""grpc.health.v1.Health, serving while the daemon is up."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pycontainerd import plugin


class HealthService:
    def __init__(self) -> None:
        self._servicer = health.aio.HealthServicer()

    def register(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def serving(self) -> None:
        await self._servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    async def aclose(self) -> None:
        await self._servicer.enter_graceful_shutdown()


async def _init(ctx: plugin.InitContext) -> HealthService:
    svc = HealthService()
    await svc.serving()
    return svc


plugin.register(plugin.Registration(type=plugin.PluginType.GRPC, id="healthcheck", init=_init))
