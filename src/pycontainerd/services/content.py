"""containerd.services.content.v1.Content.

A thin adapter over the namespaced content store (``Metadata.content``);
the Write stream follows containerd 1.6's ``services/content/service.go``
message by message, because ``ctr`` and every Go client drive it that way:
the first message names the ref (and may carry the expected size and
digest), each later one stats, writes at the current offset or commits, and
every message gets one response carrying the offset reached.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd import content, errdefs, plugin
from pycontainerd.api.events import content_pb2 as events_pb
from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.digest import validate as validate_digest
from pycontainerd.errdefs import q
from pycontainerd.events import Exchange
from pycontainerd.metadata import Metadata
from pycontainerd.metadata.content import ContentStore
from pycontainerd.services._edge import servicer
from pycontainerd.wire._time import to_timestamp
from pycontainerd.wire.content import info_from_pb, info_to_pb, status_to_pb

__all__ = ["ContentService"]

log = logging.getLogger(__name__)

#: Infos per List response, as containerd batches them.
LIST_BATCH = 100

STAT = pb.WriteAction.STAT
WRITE = pb.WriteAction.WRITE
COMMIT = pb.WriteAction.COMMIT


def _digest_arg(dgst: str) -> None:
    try:
        validate_digest(dgst)
    except errdefs.InvalidArgument:
        raise errdefs.InvalidArgument(f"{q(dgst)} failed validation") from None


@servicer("containerd.services.content.v1.Content")
class ContentService(pb_grpc.ContentServicer):
    def __init__(self, store: ContentStore, exchange: Exchange) -> None:
        self._store = store
        self._events = exchange

    async def Info(self, request: pb.InfoRequest, context: Any) -> pb.InfoResponse:
        _digest_arg(request.digest)
        return pb.InfoResponse(info=info_to_pb(await self._store.info(request.digest)))

    async def Update(self, request: pb.UpdateRequest, context: Any) -> pb.UpdateResponse:
        _digest_arg(request.info.digest)
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        info = await self._store.update(info_from_pb(request.info), paths)
        return pb.UpdateResponse(info=info_to_pb(info))

    async def List(
        self, request: pb.ListContentRequest, context: Any
    ) -> AsyncIterator[pb.ListContentResponse]:
        batch: list[pb.Info] = []
        async for info in self._store.walk(*request.filters):
            batch.append(info_to_pb(info))
            if len(batch) >= LIST_BATCH:
                yield pb.ListContentResponse(info=batch)
                batch = []
        if batch:
            yield pb.ListContentResponse(info=batch)

    async def Delete(self, request: pb.DeleteContentRequest, context: Any) -> empty_pb2.Empty:
        validate_digest(request.digest)
        await self._store.delete(request.digest)
        await self._events.publish(
            "/content/delete", events_pb.ContentDelete(digest=request.digest)
        )
        return empty_pb2.Empty()

    async def Read(
        self, request: pb.ReadContentRequest, context: Any
    ) -> AsyncIterator[pb.ReadContentResponse]:
        try:
            validate_digest(request.digest)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"{request.digest}: {exc.message}") from None
        info = await self._store.info(request.digest)
        offset = max(request.offset, 0)
        if offset > info.size:
            raise errdefs.OutOfRange(f"read past object length {info.size} bytes")
        size = request.size
        if size <= 0 or offset + size > info.size:
            size = info.size - offset
        reader = await self._store.reader_at(request.digest)
        try:
            end = offset + size
            while offset < end:
                data = await reader.read_at(offset, min(content.READ_CHUNK, end - offset))
                if not data:
                    raise errdefs.Unknown(f"content {request.digest}: unexpected end of blob")
                yield pb.ReadContentResponse(offset=offset, data=data)
                offset += len(data)
        finally:
            await reader.close()

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        try:
            st = await self._store.status(request.ref)
        except errdefs.ContainerdError as exc:
            raise type(exc)(
                f"could not get status for ref {q(request.ref)}: {exc.message}"
            ) from None
        return pb.StatusResponse(status=status_to_pb(st))

    async def ListStatuses(
        self, request: pb.ListStatusesRequest, context: Any
    ) -> pb.ListStatusesResponse:
        statuses = await self._store.list_statuses(*request.filters)
        return pb.ListStatusesResponse(statuses=[status_to_pb(s) for s in statuses])

    async def Abort(self, request: pb.AbortRequest, context: Any) -> empty_pb2.Empty:
        await self._store.abort(request.ref)
        return empty_pb2.Empty()

    async def Write(
        self, request_iterator: AsyncIterator[pb.WriteContentRequest], context: Any
    ) -> AsyncIterator[pb.WriteContentResponse]:
        requests = aiter(request_iterator)
        req = await anext(requests, None)
        if req is None:
            return
        ref = req.ref
        if not ref:
            raise errdefs.InvalidArgument("first message must have a reference")
        total, expected = req.total, req.expected
        # Holds the ingest for the whole stream: a second stream on ref gets Unavailable.
        wr = await self._store.writer(ref, total=total, expected=expected)
        try:
            while True:
                ws = await wr.status()
                resp = pb.WriteContentResponse(action=req.action, offset=ws.offset)
                if req.expected:
                    expected = req.expected
                    if await self._exists(expected):
                        await wr.close()
                        await self._store.abort(ref)
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
                        await wr.commit(total, expected, labels=dict(req.labels) or None)
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

    async def _exists(self, dgst: str) -> bool:
        try:
            await self._store.info(dgst)
        except errdefs.NotFound:
            return False
        return True

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ContentServicer_to_server(self, server)


def _init(ctx: plugin.InitContext) -> ContentService:
    metadata: Metadata = ctx.get(plugin.PluginType.METADATA)
    if metadata.content is None:
        raise plugin.SkipPlugin("metadata has no content store")
    return ContentService(metadata.content, ctx.events)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.GRPC,
        id="content",
        init=_init,
        requires=(plugin.PluginType.METADATA,),
    )
)
