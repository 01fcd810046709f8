"""containerd.services.content.v1.Content over the local content service.

The Write stream follows containerd 1.6's content service message by
message, because ``ctr`` and every Go client drive it that way: the first
message names the ref (and may carry the expected size and digest), each
later one stats, writes at the current offset or commits, and every message
gets one response carrying the offset reached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import empty_pb2

from pycontainerd import errdefs, plugin
from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.edge import Call, Method, describe
from pycontainerd.services import content as local
from pycontainerd.wire._time import to_timestamp
from pycontainerd.wire.content import info_from_pb, info_to_pb, status_to_pb

__all__ = ["ContentAPI"]

#: Infos per List response, as containerd batches them.
LIST_BATCH = 100

STAT = pb.WriteAction.STAT
WRITE = pb.WriteAction.WRITE
COMMIT = pb.WriteAction.COMMIT


class ContentAPI:
    def __init__(self, service: local.ContentService) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        return describe(
            pb.DESCRIPTOR.services_by_name["Content"],
            {
                "Info": self.info,
                "Update": self.update,
                "List": self.list,
                "Delete": self.delete,
                "Read": self.read,
                "Status": self.status,
                "ListStatuses": self.list_statuses,
                "Write": self.write,
                "Abort": self.abort,
            },
        )

    async def info(self, request: pb.InfoRequest, call: Call) -> pb.InfoResponse:
        return pb.InfoResponse(info=info_to_pb(await self._service.info(request.digest)))

    async def update(self, request: pb.UpdateRequest, call: Call) -> pb.UpdateResponse:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        info = await self._service.update(info_from_pb(request.info), paths)
        return pb.UpdateResponse(info=info_to_pb(info))

    async def list(
        self, request: pb.ListContentRequest, call: Call
    ) -> AsyncIterator[pb.ListContentResponse]:
        batch: list[pb.Info] = []
        async for info in self._service.walk(*request.filters):
            batch.append(info_to_pb(info))
            if len(batch) >= LIST_BATCH:
                yield pb.ListContentResponse(info=batch)
                batch = []
        if batch:
            yield pb.ListContentResponse(info=batch)

    async def delete(self, request: pb.DeleteContentRequest, call: Call) -> empty_pb2.Empty:
        await self._service.delete(request.digest)
        return empty_pb2.Empty()

    async def read(
        self, request: pb.ReadContentRequest, call: Call
    ) -> AsyncIterator[pb.ReadContentResponse]:
        chunks = self._service.read(request.digest, request.offset, request.size)
        try:
            async for offset, data in chunks:
                yield pb.ReadContentResponse(offset=offset, data=data)
        finally:
            await chunks.aclose()

    async def status(self, request: pb.StatusRequest, call: Call) -> pb.StatusResponse:
        return pb.StatusResponse(status=status_to_pb(await self._service.status(request.ref)))

    async def list_statuses(
        self, request: pb.ListStatusesRequest, call: Call
    ) -> pb.ListStatusesResponse:
        statuses = await self._service.list_statuses(*request.filters)
        return pb.ListStatusesResponse(statuses=[status_to_pb(s) for s in statuses])

    async def abort(self, request: pb.AbortRequest, call: Call) -> empty_pb2.Empty:
        await self._service.abort(request.ref)
        return empty_pb2.Empty()

    async def write(
        self, requests: AsyncIterator[pb.WriteContentRequest], call: Call
    ) -> AsyncIterator[pb.WriteContentResponse]:
        req = await anext(requests, None)
        if req is None:
            return
        ref = req.ref
        total, expected = req.total, req.expected
        wr = await self._service.writer(ref, total, expected)
        try:
            while True:
                ws = await wr.status()
                resp = pb.WriteContentResponse(action=req.action, offset=ws.offset)
                if req.expected:
                    expected = req.expected
                    if await self._service.exists(expected):
                        await wr.close()
                        await self._service.abort(ref)
                        raise errdefs.AlreadyExists(f"blob with expected digest {expected} exists")
                if req.total > 0:
                    total = req.total
                if req.action == STAT:
                    resp.digest = wr.digest
                    resp.started_at.CopyFrom(to_timestamp(ws.started_at))
                    resp.updated_at.CopyFrom(to_timestamp(ws.updated_at))
                    resp.total = total
                elif req.action in (WRITE, COMMIT):
                    if req.offset > 0 and req.offset != ws.offset:
                        raise errdefs.OutOfRange(
                            f"write @{req.offset} must occur at current offset {ws.offset}"
                        )
                    if req.offset == 0 and ws.offset > 0:
                        await wr.truncate(0)
                        resp.offset = 0
                    if req.data:
                        resp.offset += await wr.write(req.data)
                    if req.action == COMMIT:
                        await self._service.commit(wr, total, expected, req.labels)
                    resp.digest = wr.digest
                else:
                    raise errdefs.InvalidArgument(f"unknown write action {req.action}")
                yield resp
                req = await anext(requests, None)
                if req is None:
                    # containerd answers the end of the stream with the last response again.
                    yield resp
                    return
        finally:
            await wr.close()


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="content",
        init=lambda ctx: ContentAPI(ctx.plugins.get_by_id(plugin.PluginType.SERVICE, local.ID)),
        requires=(plugin.PluginType.SERVICE,),
    )
)
