"""The in-process transport: the edge's methods as a ``grpc.aio`` channel.

A program that embeds the daemon -- what Docker Engine does with containerd
in Go -- hands :class:`~pycontainerd.client.AsyncClient` an
:class:`InProcessChannel` instead of a socket address.  The generated stubs
call it as they call a ``grpc.aio`` channel, and each call takes the path a
call takes through :mod:`pycontainerd.edge.grpc_server`: the stub serializes
the request, :func:`~pycontainerd.edge.decode_request` decodes it, the method
runs through :func:`~pycontainerd.edge.unary` or
:func:`~pycontainerd.edge.stream` with the caller's metadata and deadline,
and its responses are serialized and decoded again by the stub.  So a caller
sees the messages, status codes, error messages and events it would see over
the socket, and shares no message object with the daemon.

What a socket does by itself is done here on purpose:

- message limits: the client's send and receive limits (16 MiB, as
  ``AsyncClient`` dials) and the daemon's receive limit fail the call with
  RESOURCE_EXHAUSTED and grpcio's or our server's words;
- flow control: each direction of a call buffers at most :data:`WINDOW`
  bytes, so a fast side waits for a slow one as HTTP/2 makes it wait;
- isolation: the method runs in a task of its own in an empty
  :mod:`contextvars` context, so nothing of the caller's context (its
  namespace or lease variables) reaches the daemon except as metadata;
- ends: ``cancel()``, the deadline, a too-large response and
  :meth:`InProcessChannel.close` cancel the method's task.

The channel must be used on the event loop that runs the daemon; for the
sync ``Client``, see :mod:`pycontainerd.edge.inprocess_sync`.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any

import grpc

from pycontainerd import edge
from pycontainerd.edge import Frames, Method

__all__ = ["MAX_MESSAGE_SIZE", "WINDOW", "InProcessChannel"]

log = logging.getLogger(__name__)

#: The client's send and receive limits, as ``AsyncClient`` sets them on its socket channel.
MAX_MESSAGE_SIZE = 16 << 20
#: Bytes one direction of a call buffers before its writer waits (one message always fits).
WINDOW = 1 << 20

Serializer = Callable[[Any], bytes]
Deserializer = Callable[[bytes], Any]
Metadata = grpc.aio.Metadata | Sequence[tuple[str, str | bytes]]

_STATUS = {code.value[0]: code for code in grpc.StatusCode}
# grpcio's own words, so a caller cannot tell the transports apart by them.
_CANCELLED = "Locally cancelled by application!"
_DEADLINE = "Deadline Exceeded"
_FINISHED = "RPC already finished."
_HALF_CLOSED = 'RPC is half closed after calling "done_writing".'


def _same(data: Any) -> Any:
    return data


class _Pipe:
    """The messages of one direction of a call, at most ``window`` bytes of them."""

    def __init__(self, window: int = WINDOW) -> None:
        self._items: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._window = window
        self._ended = False
        self._changed = asyncio.Event()

    async def put(self, data: bytes) -> bool:
        """Queue ``data`` once there is room; False if the pipe has ended."""
        while self._size >= self._window and not self._ended:
            await self._wait()
        if self._ended:
            return False
        self._items.append(data)
        self._size += len(data)
        self._changed.set()
        return True

    async def get(self) -> bytes | None:
        """The next message; None once the pipe has ended and is drained."""
        while not self._items and not self._ended:
            await self._wait()
        if not self._items:
            return None
        data = self._items.popleft()
        self._size -= len(data)
        self._changed.set()
        return data

    def end(self, *, drop: bool = False) -> None:
        """No more messages; ``drop`` also discards the ones not read yet."""
        self._ended = True
        if drop:
            self._items.clear()
            self._size = 0
        self._changed.set()

    async def _wait(self) -> None:
        # One side waits at a time (an empty pipe has room), so one event serves both.
        self._changed.clear()
        await self._changed.wait()


class _Call(grpc.aio.Call):
    """One call: the caller's face (``grpc.aio``'s call API) and the method's task.

    The cardinality classes below expose the parts of it their kind of call
    has; ``request`` is the serialized request of a unary-request call, or
    None for a client stream, whose requests come from :meth:`_write` (or
    from ``request_iterator``).
    """

    def __init__(
        self,
        channel: InProcessChannel,
        path: str,
        request: bytes | None,
        serializer: Serializer,
        deserializer: Deserializer,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        request_iterator: AsyncIterable[Any] | Iterable[Any] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._channel = channel
        self._path = path
        self._serialize = serializer
        self._deserialize = deserializer
        self._requests = _Pipe()
        self._responses = _Pipe()
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._cancelled = False
        self._half_closed = False
        self._finished = asyncio.Event()
        self._callbacks: list[Callable[[Any], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timer = None if timeout is None else loop.call_later(timeout, self._expire)
        channel._calls.add(self)
        if request is not None and len(request) > channel._max_send:
            message = _too_large("Sent", request, channel._max_send)
            self._terminate(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
            return
        # The method's task starts from an empty context: nothing of the caller's
        # crosses except the metadata, as over a socket.
        self._tasks.append(
            loop.create_task(
                self._serve(channel._methods.get(path), request, _metadata(metadata)),
                name=f"inprocess {path}",
                context=contextvars.Context(),
            )
        )
        if request_iterator is not None:
            self._tasks.append(loop.create_task(self._feed(request_iterator)))

    # --- the method's side ----------------------------------------------------

    async def _serve(
        self, method: Method | None, request: bytes | None, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        try:
            if method is None:
                raise edge.unknown_method(self._path, self._channel._services)
            call = edge.Call(metadata=metadata, deadline=self._deadline)
            message = (
                self._received(method)
                if request is None
                else edge.decode_request(method, self._check_received(request))
            )
            if method.cardinality.server_streams:
                items = edge.stream(method, message, call)
                try:
                    async for item in items:
                        for data in _encoded(method, item):
                            if not await self._responses.put(data):
                                return
                finally:
                    await items.aclose()  # type: ignore[attr-defined]
            else:
                for data in _encoded(method, await edge.unary(method, message, call)):
                    await self._responses.put(data)
        except Exception as exc:
            status = edge.status_of(exc, self._path)
            self._finish(_STATUS.get(status.code, grpc.StatusCode.UNKNOWN), status.message)
        else:
            self._finish(grpc.StatusCode.OK, "")
        finally:
            # Cancelled from elsewhere than this call (the loop shutting down).
            self._finish(grpc.StatusCode.CANCELLED, "call cancelled by the daemon")

    async def _received(self, method: Method) -> AsyncIterator[Any]:
        while (data := await self._requests.get()) is not None:
            yield edge.decode_request(method, self._check_received(data))

    def _check_received(self, data: bytes) -> bytes:
        limit = self._channel._max_server_receive
        if len(data) > limit:
            raise edge.message_too_large(len(data), limit)
        return data

    async def _feed(self, requests: AsyncIterable[Any] | Iterable[Any]) -> None:
        """Write ``request_iterator``'s requests, as grpc.aio does in a task."""
        try:
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    await self._write(request)
            else:
                for request in requests:
                    await self._write(request)
            await self._done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass  # the call has ended; its status says why

    # --- ending -----------------------------------------------------------------

    def _finish(self, code: grpc.StatusCode, details: str, *, drop: bool = False) -> None:
        """Set the call's status, once; the responses already sent stay readable
        unless ``drop``."""
        if self._code is not None:
            return
        self._code, self._details = code, details
        self._responses.end(drop=drop)
        self._requests.end(drop=True)
        if self._timer is not None:
            self._timer.cancel()
        self._finished.set()
        self._channel._calls.discard(self)
        for task in self._tasks[1:]:
            task.cancel()  # the request feeder: nobody reads what it would write
        for callback in self._callbacks:
            callback(self)

    def _terminate(self, code: grpc.StatusCode, details: str) -> None:
        """End the call from the caller's side: the method's task is cancelled."""
        self._finish(code, details, drop=True)
        for task in self._tasks:
            task.cancel()

    def _expire(self) -> None:
        self._terminate(grpc.StatusCode.DEADLINE_EXCEEDED, _DEADLINE)

    def _raise_for_status(self) -> None:
        if self._cancelled:
            raise asyncio.CancelledError
        if self._code is not None and self._code != grpc.StatusCode.OK:
            raise grpc.aio.AioRpcError(
                self._code, grpc.aio.Metadata(), grpc.aio.Metadata(), self._details
            )

    # --- the caller's side --------------------------------------------------------

    async def _read(self) -> Any:
        try:
            data = await self._responses.get()
        except asyncio.CancelledError:
            self.cancel()  # as grpc.aio: a reader cancelled cancels its call
            raise
        if data is None:
            self._raise_for_status()
            return grpc.aio.EOF
        limit = self._channel._max_receive
        if len(data) > limit:
            self._refuse_response(f"Stream removed ({_too_large('Received', data, limit)})")
            self._raise_for_status()
        return self._deserialize(data)

    def _refuse_response(self, details: str) -> None:
        """Fail the call over a response too large for the caller -- even when
        the method has finished: the caller never gets that message."""
        if self._code is None:
            self._terminate(grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        else:
            self._code, self._details = grpc.StatusCode.RESOURCE_EXHAUSTED, details
            self._responses.end(drop=True)

    async def _responses_of(self) -> AsyncIterator[Any]:
        while (message := await self._read()) is not grpc.aio.EOF:
            yield message

    async def _response(self) -> Any:
        message = await self._read()
        try:
            await self._finished.wait()
        except asyncio.CancelledError:
            self.cancel()
            raise
        self._raise_for_status()
        return message

    async def _write(self, request: Any) -> None:
        if self.done():
            raise asyncio.InvalidStateError(_FINISHED)
        if self._half_closed:
            raise asyncio.InvalidStateError(_HALF_CLOSED)
        data = self._serialize(request)
        limit = self._channel._max_send
        if len(data) > limit:
            self._terminate(grpc.StatusCode.RESOURCE_EXHAUSTED, _too_large("Sent", data, limit))
            self._raise_for_status()
        try:
            sent = await self._requests.put(data)
        except asyncio.CancelledError:
            self.cancel()
            raise
        if not sent:
            self._raise_for_status()
            raise asyncio.InvalidStateError(_FINISHED)

    async def _done_writing(self) -> None:
        if not self.done() and not self._half_closed:
            self._half_closed = True
            self._requests.end()

    # --- grpc.aio.Call ------------------------------------------------------------

    def cancel(self) -> bool:
        if self._code is not None:
            return False
        self._cancelled = True
        self._terminate(grpc.StatusCode.CANCELLED, _CANCELLED)
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._code is not None

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self.done():
            callback(self)
        else:
            self._callbacks.append(callback)

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        await self._finished.wait()
        return grpc.aio.Metadata()

    async def code(self) -> grpc.StatusCode:
        await self._finished.wait()
        assert self._code is not None
        return self._code

    async def details(self) -> str:
        await self._finished.wait()
        return self._details

    async def wait_for_connection(self) -> None:
        """Always connected: there is no connection to wait for."""


class _UnaryUnaryCall(_Call, grpc.aio.UnaryUnaryCall[Any, Any]):
    def __await__(self) -> Generator[Any, None, Any]:
        return self._response().__await__()


class _UnaryStreamCall(_Call, grpc.aio.UnaryStreamCall[Any, Any]):
    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses_of()

    async def read(self) -> Any:
        return await self._read()


class _StreamUnaryCall(_Call, grpc.aio.StreamUnaryCall[Any, Any]):
    def __await__(self) -> Generator[Any, None, Any]:
        return self._response().__await__()

    async def write(self, request: Any) -> None:
        await self._write(request)

    async def done_writing(self) -> None:
        await self._done_writing()


class _StreamStreamCall(_Call, grpc.aio.StreamStreamCall[Any, Any]):
    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses_of()

    async def read(self) -> Any:
        return await self._read()

    async def write(self, request: Any) -> None:
        await self._write(request)

    async def done_writing(self) -> None:
        await self._done_writing()


# --- multi-callables: what a stub holds for each method ------------------------------


class _Callable:
    def __init__(
        self,
        channel: InProcessChannel,
        path: str,
        serializer: Serializer | None,
        deserializer: Deserializer | None,
    ) -> None:
        self._channel = channel
        self._path = path
        self._serialize = serializer or _same
        self._deserialize = deserializer or _same

    def _check_open(self) -> None:
        if self._channel._closed:
            raise grpc.aio.UsageError("Channel is closed.")


class _UnaryUnary(_Callable, grpc.aio.UnaryUnaryMultiCallable[Any, Any]):
    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **_ignored: Any,  # credentials, wait_for_ready, compression: no meaning in-process
    ) -> _UnaryUnaryCall:
        self._check_open()
        return _UnaryUnaryCall(
            self._channel,
            self._path,
            self._serialize(request),
            self._serialize,
            self._deserialize,
            timeout=timeout,
            metadata=metadata,
        )


class _UnaryStream(_Callable, grpc.aio.UnaryStreamMultiCallable[Any, Any]):
    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **_ignored: Any,
    ) -> _UnaryStreamCall:
        self._check_open()
        return _UnaryStreamCall(
            self._channel,
            self._path,
            self._serialize(request),
            self._serialize,
            self._deserialize,
            timeout=timeout,
            metadata=metadata,
        )


class _StreamUnary(_Callable, grpc.aio.StreamUnaryMultiCallable[Any, Any]):
    def __call__(
        self,
        request_iterator: AsyncIterable[Any] | Iterable[Any] | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        *_ignored: Any,
        **_ignored_kw: Any,
    ) -> _StreamUnaryCall:
        self._check_open()
        return _StreamUnaryCall(
            self._channel,
            self._path,
            None,
            self._serialize,
            self._deserialize,
            timeout=timeout,
            metadata=metadata,
            request_iterator=request_iterator,
        )


class _StreamStream(_Callable, grpc.aio.StreamStreamMultiCallable[Any, Any]):
    def __call__(
        self,
        request_iterator: AsyncIterable[Any] | Iterable[Any] | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        *_ignored: Any,
        **_ignored_kw: Any,
    ) -> _StreamStreamCall:
        self._check_open()
        return _StreamStreamCall(
            self._channel,
            self._path,
            None,
            self._serialize,
            self._deserialize,
            timeout=timeout,
            metadata=metadata,
            request_iterator=request_iterator,
        )


class InProcessChannel(grpc.aio.Channel):
    """The edge's ``methods`` as a ``grpc.aio`` channel (see the module docstring).

    ``max_server_receive_message_length`` is the daemon's limit
    (``[grpc] max_recv_message_size``); the other two are the client's.
    Calls are made, awaited and cancelled on the loop that runs the daemon.
    """

    def __init__(
        self,
        methods: Mapping[str, Method] | Iterable[Method],
        *,
        max_send_message_length: int = MAX_MESSAGE_SIZE,
        max_receive_message_length: int = MAX_MESSAGE_SIZE,
        max_server_receive_message_length: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self._methods: Mapping[str, Method] = (
            methods if isinstance(methods, Mapping) else {m.name: m for m in methods}
        )
        self._max_send = max_send_message_length
        self._max_receive = max_receive_message_length
        self._max_server_receive = max_server_receive_message_length
        self._services = frozenset(m.service for m in self._methods.values())
        self._calls: set[_Call] = set()
        self._closed = False

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryUnary:
        return _UnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryStream:
        return _UnaryStream(self, method, request_serializer, response_deserializer)

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamUnary:
        return _StreamUnary(self, method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamStream:
        return _StreamStream(self, method, request_serializer, response_deserializer)

    async def close(self, grace: float | None = None) -> None:
        """Refuse new calls; give running ones ``grace`` seconds, then cancel
        them and wait until their methods have ended."""
        self._closed = True
        calls = list(self._calls)
        if grace:
            waits = [asyncio.ensure_future(c._finished.wait()) for c in calls if not c.done()]
            if waits:
                _, pending = await asyncio.wait(waits, timeout=grace)
                for wait in pending:
                    wait.cancel()
        tasks = self._cancel_calls()
        if tasks:
            await asyncio.wait(tasks)

    def _cancel_calls(self) -> list[asyncio.Task[None]]:
        """Refuse new calls and cancel the running ones; their tasks, to wait for."""
        self._closed = True
        calls = list(self._calls)
        for call in calls:
            call.cancel()
        return [task for call in calls for task in call._tasks]

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.SHUTDOWN if self._closed else grpc.ChannelConnectivity.READY

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """The state changes once, on close(); nothing to wait for before it."""
        raise NotImplementedError("an in-process channel has no connection states to watch")

    async def channel_ready(self) -> None:
        """Ready from the start: the methods are in this process."""

    async def __aenter__(self) -> InProcessChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()


def _too_large(direction: str, data: bytes, limit: int) -> str:
    return f"CLIENT: {direction} message larger than max ({len(data)} vs. {limit})"


def _encoded(method: Method, item: Any) -> Iterable[bytes]:
    """The serialized messages of one response item (a message, bytes or Frames)."""
    if type(item) is Frames:
        return item
    return (item if method.preserialized else item.SerializeToString(),)


def _metadata(metadata: Metadata | None) -> tuple[tuple[str, str], ...]:
    """The request metadata a method sees: text values, keys lower-case, as
    the socket server passes them."""
    if not metadata:
        return ()
    return tuple((key.lower(), value) for key, value in metadata if isinstance(value, str))
