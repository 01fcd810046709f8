"""``client.content``: the content store over gRPC.

The same interface as the daemon's stores (:class:`pycontainerd.content.Store`):
info, label updates, listing, deletion, reads at any offset, and resumable
writes through a ref.  Written async; ``tools/unasync.py`` generates the
sync twin in ``client/_sync/content.py``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import field_mask_pb2

from pycontainerd import errdefs
from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.client._streams import AsyncBidiStream, AsyncPause
from pycontainerd.content import Info, Status
from pycontainerd.wire._time import from_timestamp
from pycontainerd.wire.content import info_from_pb, info_to_pb, status_from_pb

if TYPE_CHECKING:
    from pycontainerd.client._async.client import _Call

__all__ = ["AsyncContent", "AsyncContentReader", "AsyncContentWriter"]

#: The largest piece one Write message carries (ctr copies with a 1 MiB buffer).
WRITE_CHUNK = 1 << 20


def _wrap(exc: errdefs.ContainerdError, context: str) -> errdefs.ContainerdError:
    """The same error class with ctr's context in front of the message."""
    return type(exc)(f"{context}: {exc.message}")


class AsyncContentReader:
    """A committed blob opened for reading; each read is one Read call."""

    def __init__(self, content: AsyncContent, info: Info) -> None:
        self._content = content
        self.info = info

    @property
    def size(self) -> int:
        return self.info.size

    async def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer only at the end of the blob)."""
        if size <= 0 or offset >= self.info.size:
            return b""
        return await self._content.read(self.info.digest, offset=offset, size=size)

    async def read(self) -> bytes:
        """The whole blob."""
        return await self._content.read(self.info.digest)

    def chunks(self, *, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        return self._content.chunks(self.info.digest, offset=offset, size=size)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncContentReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncContentWriter:
    """One ingest held over a Write stream until commit or close.

    Opening sends the ref (and the expected size and digest, if known); the
    daemon answers with the offset the ingest has already reached, so an
    interrupted write resumes by sending only the rest (see
    :meth:`AsyncContent.write_blob`).
    """

    def __init__(
        self, content: AsyncContent, stream: AsyncBidiStream, ref: str, opened: Any
    ) -> None:
        self._content = content
        self._stream = stream
        self._ref = ref
        self._offset: int = opened.offset
        self._digest: str = opened.digest
        self._total: int = opened.total

    @property
    def ref(self) -> str:
        return self._ref

    @property
    def offset(self) -> int:
        """Bytes the daemon holds for this ingest."""
        return self._offset

    @property
    def digest(self) -> str:
        """The digest of the bytes written so far."""
        return self._digest

    async def _send(self, request: content_pb2.WriteContentRequest) -> Any:
        resp = await self._stream.send(request)
        if resp.digest:
            self._digest = resp.digest
        return resp

    async def status(self) -> Status:
        resp = await self._send(content_pb2.WriteContentRequest(action=content_pb2.STAT))
        self._offset = resp.offset
        return Status(
            ref=self._ref,
            offset=resp.offset,
            total=resp.total,
            started_at=from_timestamp(resp.started_at),
            updated_at=from_timestamp(resp.updated_at),
        )

    async def _write_chunk(self, data: bytes) -> int:
        offset = self._offset
        resp = await self._send(
            content_pb2.WriteContentRequest(action=content_pb2.WRITE, offset=offset, data=data)
        )
        n: int = resp.offset - offset
        self._offset = resp.offset
        if n < len(data):
            raise errdefs.Unknown(f"short write: {n} of {len(data)} bytes")
        return n

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` (sent in pieces of at most 1 MiB); returns ``len(data)``."""
        if len(data) <= WRITE_CHUNK:
            return await self._write_chunk(bytes(data) if not isinstance(data, bytes) else data)
        view = memoryview(data)
        for i in range(0, len(view), WRITE_CHUNK):
            await self._write_chunk(bytes(view[i : i + WRITE_CHUNK]))
        return len(view)

    async def commit(
        self, size: int = 0, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> str:
        """Verify and commit; returns the digest.  The writer is closed afterwards,
        even on failure (a digest mismatch leaves the ingest behind, resumable)."""
        try:
            resp = await self._send(
                content_pb2.WriteContentRequest(
                    action=content_pb2.COMMIT,
                    total=size,
                    offset=self._offset,
                    expected=expected,
                    labels=dict(labels or {}),
                )
            )
            if size and resp.offset != size:
                raise errdefs.FailedPrecondition(f"unexpected size: {resp.offset} != {size}")
            if expected and resp.digest != expected:
                raise errdefs.FailedPrecondition(
                    f"unexpected digest: {resp.digest} != {expected}"
                )
            self._offset = resp.offset
            return self._digest
        finally:
            await self.close()

    async def truncate(self, size: int) -> None:
        """Start over: the next write goes to offset 0 (only 0 is supported)."""
        if size != 0:
            raise errdefs.InvalidArgument("truncate: unsupported size")
        self._offset = 0

    async def close(self) -> None:
        """Let the ingest go without committing; it stays resumable."""
        await self._stream.close()

    async def abort(self) -> None:
        """Close and discard the ingest."""
        await self.close()
        await self._content.abort(self._ref)

    async def __aenter__(self) -> AsyncContentWriter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncContent:
    """``client.content``: the namespaced content store of the daemon."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._stub = content_pb2_grpc.ContentStub(call.channel)

    # -- blobs

    async def info(self, digest: str) -> Info:
        resp = await self._call.unary(self._stub.Info, content_pb2.InfoRequest(digest=digest))
        return info_from_pb(resp.info)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Change labels: no paths replaces them all, ``labels.KEY`` one key."""
        req = content_pb2.UpdateRequest(info=info_to_pb(info))
        if fieldpaths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(fieldpaths)))
        resp = await self._call.unary(self._stub.Update, req)
        return info_from_pb(resp.info)

    async def set_labels(self, digest: str, labels: Mapping[str, str]) -> Info:
        """Set (value) or remove (empty value) the given labels, keeping the rest."""
        info = Info(digest=digest, size=0, labels={k: v for k, v in labels.items() if v})
        return await self.update(info, [f"labels.{k}" for k in labels])

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Blobs matching any of ``filters``, streamed as the daemon sends them."""
        call = self._stub.List(
            content_pb2.ListContentRequest(filters=list(filters)), metadata=self._call.metadata()
        )
        try:
            async for resp in call:
                for info in resp.info:
                    yield info_from_pb(info)
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc
        finally:
            call.cancel()

    async def delete(self, digest: str) -> None:
        req = content_pb2.DeleteContentRequest(digest=digest)
        await self._call.unary(self._stub.Delete, req)

    # -- reading

    async def chunks(self, digest: str, *, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        """The blob from ``offset``, ``size`` bytes of it (0: to the end), as it arrives."""
        call = self._stub.Read(
            content_pb2.ReadContentRequest(digest=digest, offset=offset, size=size),
            metadata=self._call.metadata(),
        )
        try:
            async for resp in call:
                yield resp.data
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc
        finally:
            call.cancel()

    async def read(self, digest: str, *, offset: int = 0, size: int = 0) -> bytes:
        """A blob (or a range of it) in memory."""
        return b"".join([c async for c in self.chunks(digest, offset=offset, size=size)])

    async def reader_at(self, digest: str) -> AsyncContentReader:
        return AsyncContentReader(self, await self.info(digest))

    # -- writing

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> AsyncContentWriter:
        """Open (or resume) the ingest ``ref``.

        Unavailable while another writer holds it; AlreadyExists when
        ``expected`` is already in the namespace.
        """
        stream = AsyncBidiStream(self._stub.Write, self._call.metadata())
        try:
            opened = await stream.send(
                content_pb2.WriteContentRequest(
                    action=content_pb2.STAT, ref=ref, total=total, expected=expected
                )
            )
        except BaseException:
            await stream.close()
            raise
        return AsyncContentWriter(self, stream, ref, opened)

    async def write_blob(
        self,
        ref: str,
        data: bytes | AsyncIterable[bytes],
        *,
        size: int = 0,
        expected: str = "",
        labels: Mapping[str, str] | None = None,
        lock_timeout: float = 10.0,
    ) -> str:
        """Write a whole blob, as containerd's ``content.WriteBlob``; returns its digest.

        Waits up to ``lock_timeout`` seconds for another writer of ``ref``,
        resumes an interrupted ingest (skipping the bytes the daemon already
        has) and treats a blob that is already there as success.
        """
        deadline = time.monotonic() + lock_timeout
        delay = 0.001
        while True:
            try:
                w = await self.writer(ref, total=size, expected=expected)
                break
            except errdefs.AlreadyExists:
                return expected
            except errdefs.Unavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise _wrap(exc, "failed to open writer") from exc
                await AsyncPause.sleep(delay)
                delay = min(delay * 2, 0.5)
            except errdefs.ContainerdError as exc:
                raise _wrap(exc, "failed to open writer") from exc
        try:
            start = skip = w.offset
            if isinstance(data, bytes | bytearray | memoryview):
                if len(data) > skip:
                    await w.write(memoryview(data)[skip:])
                skip = max(skip - len(data), 0)
            else:
                async for chunk in data:
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    await w.write(chunk[skip:] if skip else chunk)
                    skip = 0
            if skip or (size and w.offset < size):
                raise errdefs.FailedPrecondition(
                    "failed to read expected number of bytes: unexpected EOF"
                    if not start
                    else f"unable to resume write to {ref} at {start}: unexpected EOF"
                )
            try:
                return await w.commit(size, expected, labels=labels)
            except errdefs.AlreadyExists:
                return w.digest
            except errdefs.ContainerdError as exc:
                raise _wrap(exc, f"failed commit on ref {errdefs.q(ref)}") from exc
        finally:
            await w.close()

    # -- ingests

    async def status(self, ref: str) -> Status:
        resp = await self._call.unary(self._stub.Status, content_pb2.StatusRequest(ref=ref))
        return status_from_pb(resp.status)

    async def list_statuses(self, *filters: str) -> builtins.list[Status]:
        req = content_pb2.ListStatusesRequest(filters=list(filters))
        resp = await self._call.unary(self._stub.ListStatuses, req)
        return [status_from_pb(s) for s in resp.statuses]

    async def abort(self, ref: str) -> None:
        await self._call.unary(self._stub.Abort, content_pb2.AbortRequest(ref=ref))

    async def list(self, *filters: str) -> builtins.list[Info]:
        """Every blob matching any of ``filters``."""
        return [info async for info in self.walk(*filters)]
