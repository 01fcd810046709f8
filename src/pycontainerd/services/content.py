"""The local content service (containerd's ``content-service``).

The namespaced content store (``Metadata.content``) with the argument
checks containerd's service makes, and the ``/content/delete`` event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence

from pycontainerd import content, errdefs, plugin
from pycontainerd.api.events import content_pb2 as events_pb
from pycontainerd.digest import validate as validate_digest
from pycontainerd.errdefs import q
from pycontainerd.events import Exchange
from pycontainerd.metadata import Metadata
from pycontainerd.metadata.content import ContentStore

__all__ = ["ContentService"]

ID = "content-service"


def _digest_arg(dgst: str) -> None:
    try:
        validate_digest(dgst)
    except errdefs.InvalidArgument:
        raise errdefs.InvalidArgument(f"{q(dgst)} failed validation") from None


class ContentService:
    def __init__(self, store: ContentStore, exchange: Exchange) -> None:
        self._store = store
        self._events = exchange

    async def info(self, dgst: str) -> content.Info:
        _digest_arg(dgst)
        return await self._store.info(dgst)

    async def exists(self, dgst: str) -> bool:
        try:
            await self._store.info(dgst)
        except errdefs.NotFound:
            return False
        return True

    async def update(self, info: content.Info, paths: Sequence[str]) -> content.Info:
        _digest_arg(info.digest)
        return await self._store.update(info, list(paths))

    def walk(self, *filters: str) -> AsyncIterator[content.Info]:
        return self._store.walk(*filters)

    async def delete(self, dgst: str) -> None:
        validate_digest(dgst)
        await self._store.delete(dgst)
        await self._events.publish("/content/delete", events_pb.ContentDelete(digest=dgst))

    async def read(
        self, dgst: str, offset: int, size: int
    ) -> AsyncGenerator[tuple[int, bytes], None]:
        """``(offset, data)`` chunks of ``size`` bytes from ``offset`` (to the
        end when ``size`` is not positive or reaches past it)."""
        try:
            validate_digest(dgst)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"{dgst}: {exc.message}") from None
        # The reader knows the size: no second lookup of the blob's record.
        reader = await self._store.reader_at(dgst)
        try:
            total = reader.size
            offset = max(offset, 0)
            if offset > total:
                raise errdefs.OutOfRange(f"read past object length {total} bytes")
            if size <= 0 or offset + size > total:
                size = total - offset
            end = offset + size
            while offset < end:
                data = await reader.read_at(offset, min(content.READ_CHUNK, end - offset))
                if not data:
                    raise errdefs.Unknown(f"content {dgst}: unexpected end of blob")
                yield offset, data
                offset += len(data)
        finally:
            await reader.close()

    async def status(self, ref: str) -> content.Status:
        try:
            return await self._store.status(ref)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"could not get status for ref {q(ref)}: {exc.message}") from None

    async def list_statuses(self, *filters: str) -> Sequence[content.Status]:
        return await self._store.list_statuses(*filters)

    async def abort(self, ref: str) -> None:
        await self._store.abort(ref)

    async def writer(self, ref: str, total: int, expected: str) -> content.Writer:
        """The ingest ``ref``, held until the writer is closed (a second
        writer on it is Unavailable meanwhile)."""
        if not ref:
            raise errdefs.InvalidArgument("first message must have a reference")
        return await self._store.writer(ref, total=total, expected=expected)

    async def commit(
        self, writer: content.Writer, total: int, expected: str, labels: Mapping[str, str]
    ) -> None:
        await writer.commit(total, expected, labels=dict(labels) or None)


def _init(ctx: plugin.InitContext) -> ContentService:
    metadata: Metadata = ctx.get(plugin.PluginType.METADATA)
    if metadata.content is None:
        raise plugin.SkipPlugin("metadata has no content store")
    return ContentService(metadata.content, ctx.events)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SERVICE,
        id=ID,
        init=_init,
        requires=(plugin.PluginType.METADATA,),
    )
)
