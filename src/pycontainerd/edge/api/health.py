"""grpc.health.v1.Health: SERVING while the daemon is up, NOT_SERVING once
it begins to stop.  Check, Watch and List, as grpc-go serves them."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from grpc_health.v1 import health_pb2 as pb

from pycontainerd import errdefs, plugin
from pycontainerd.edge import Call, Method, describe

__all__ = ["HealthAPI"]

SERVING = pb.HealthCheckResponse.SERVING
NOT_SERVING = pb.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = pb.HealthCheckResponse.SERVICE_UNKNOWN


class HealthAPI:
    def __init__(self) -> None:
        self._statuses: dict[str, int] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._final = False
        self._version = 0  # counts changes, so a watcher misses none

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Health"],
            {"Check": self.check, "Watch": self.watch, "List": self.list},
        )

    async def set(self, service: str, status: int) -> None:
        if self._final:  # nothing changes once shutdown began
            return
        async with self._changed:
            self._statuses[service] = status
            self._version += 1
            self._changed.notify_all()

    async def aclose(self) -> None:
        async with self._changed:
            self._final = True
            self._statuses = dict.fromkeys(self._statuses, NOT_SERVING)
            self._version += 1
            self._changed.notify_all()

    async def check(self, request: pb.HealthCheckRequest, call: Call) -> pb.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            raise errdefs.NotFound("unknown service")
        return pb.HealthCheckResponse(status=status)

    async def watch(
        self, request: pb.HealthCheckRequest, call: Call
    ) -> AsyncIterator[pb.HealthCheckResponse]:
        last = None
        while True:
            seen = self._version
            status = self._statuses.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                last = status
                yield pb.HealthCheckResponse(status=status)
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._changed_since, seen))

    def _changed_since(self, version: int) -> bool:
        return self._version != version

    async def list(self, request: pb.HealthListRequest, call: Call) -> pb.HealthListResponse:
        return pb.HealthListResponse(
            statuses={
                service: pb.HealthCheckResponse(status=status)
                for service, status in self._statuses.items()
            }
        )


plugin.register(
    plugin.Registration(type=plugin.PluginType.GRPC, id="healthcheck", init=lambda ctx: HealthAPI())
)
