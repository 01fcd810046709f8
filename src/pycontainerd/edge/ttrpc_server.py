"""The ttrpc transport: the edge's methods served by :mod:`pycontainerd.ttrpc`.

Each method becomes a ttrpc handler under its service and method name.  The
handler decodes the payload with :func:`pycontainerd.edge.decode_request`,
runs the call through the edge with the request's metadata and deadline,
and encodes the responses; a :class:`~pycontainerd.edge.Status` leaves as a
ttrpc status with the same code and message.

Over ttrpc, containerd reads the namespace from ``containerd-namespace-ttrpc``
(and a lease from ``containerd-lease-ttrpc``), never from the gRPC header
names; this adapter hands the first value of each to the edge under the
header names the edge reads, and drops the gRPC-named keys a ttrpc client
may have sent, so a call runs in the namespace containerd would run it in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from pycontainerd import edge, leases, namespaces, ttrpc
from pycontainerd.edge import Call, Frames, Method

__all__ = ["TtrpcServer", "call_of"]

#: ttrpc metadata key -> the key the edge reads it under.
_RENAMED = {
    namespaces.TTRPC_HEADER: namespaces.GRPC_HEADER,
    leases.TTRPC_HEADER: leases.GRPC_HEADER,
}
#: Keys containerd does not read over ttrpc: passing them on would let a
#: ttrpc caller pick a namespace containerd would not have given it.
_DROPPED = frozenset(_RENAMED.values())


def call_of(context: ttrpc.ServerContext) -> Call:
    """The edge's view of a ttrpc call: metadata keys lower-cased, the
    namespace and lease under the edge's names, the caller's deadline."""
    metadata: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, value in context.metadata:
        key = key.lower()
        if key in _DROPPED:
            continue
        renamed = _RENAMED.get(key)
        if renamed is not None:
            if renamed in seen:
                continue  # ttrpc's GetMetadataValue reads the first value
            seen.add(renamed)
            key = renamed
        metadata.append((key, value))
    return Call(metadata=tuple(metadata), deadline=context.deadline)


def _status_error(status: edge.Status) -> ttrpc.StatusError:
    return ttrpc.StatusError(status.code, status.message)


def _handler(method: Method) -> ttrpc.Handler:
    """A ttrpc handler serving ``method`` through the edge."""

    def encode(message: Any) -> bytes:
        return message if method.preserialized else message.SerializeToString()  # type: ignore[no-any-return]

    async def requests(payloads: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for data in payloads:
            yield edge.decode_request(method, data)

    async def unary(request: Any, context: ttrpc.ServerContext) -> bytes:
        try:
            message = (
                requests(request)
                if method.cardinality.client_streams
                else edge.decode_request(method, request)
            )
            return encode(await edge.unary(method, message, call_of(context)))
        except edge.Status as status:
            raise _status_error(status) from None

    async def stream(request: Any, context: ttrpc.ServerContext) -> AsyncIterator[bytes]:
        try:
            message = (
                requests(request)
                if method.cardinality.client_streams
                else edge.decode_request(method, request)
            )
            async for item in edge.stream(method, message, call_of(context)):
                if type(item) is Frames:
                    for data in item:
                        yield data
                else:
                    yield encode(item)
        except edge.Status as status:
            raise _status_error(status) from None

    return stream if method.cardinality.server_streams else unary


class TtrpcServer:
    """The edge's methods on a unix socket, over ttrpc."""

    def __init__(
        self,
        methods: Iterable[Method],
        *,
        max_streams: int = ttrpc.DEFAULT_MAX_STREAMS,
        max_connections: int = ttrpc.DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._server = ttrpc.Server(max_streams=max_streams, max_connections=max_connections)
        for method in methods:
            service, _, name = method.name[1:].rpartition("/")
            self._server.register(
                service,
                name,
                _handler(method),
                client_streaming=method.cardinality.client_streams,
                server_streaming=method.cardinality.server_streams,
            )

    @property
    def methods(self) -> list[str]:
        return self._server.methods

    async def start(self, path: str) -> None:
        await self._server.start(path)

    async def stop(self, grace: float) -> None:
        """Stop accepting calls; give running ones ``grace`` seconds, then cancel them."""
        await self._server.shutdown(grace)
