"""grpc.health.v1.Health, serving while the daemon is up."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pycontainerd import plugin


class _Servicer(health.aio.HealthServicer):  # type: ignore[misc]
    """grpcio's asyncio health servicer, with ``List``.

    The proto has ``List`` and grpc-go serves it; grpcio's asyncio servicer
    leaves it to the generated base, whose stub raises NotImplementedError
    (an UNKNOWN status for the caller).  The statuses are kept here, as set,
    so the answer needs nothing private of the base class.
    """

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._final = False

    async def set(self, service: str, status: int) -> None:
        await super().set(service, status)
        if not self._final:  # as the base: nothing changes after shutdown began
            self._statuses[service] = status

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self._final = True
        self._statuses = dict.fromkeys(self._statuses, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def List(
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self._statuses.items()
            }
        )


class HealthService:
    def __init__(self) -> None:
        self._servicer = _Servicer()

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
