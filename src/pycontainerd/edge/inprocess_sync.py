"""The in-process transport for the sync ``Client``: a ``grpc.Channel`` whose
calls run on the daemon's event loop, in another thread.

Each call is an :class:`~pycontainerd.edge.inprocess.InProcessChannel` call,
made, read and cancelled on the daemon's loop with
:func:`asyncio.run_coroutine_threadsafe`; the calling thread blocks until the
loop answers, as it blocks on grpcio's sync channel until the socket does.
The requests of a client stream are pulled from the caller's iterator by a
thread of their own, as grpcio does.

A sync channel must not be used from the daemon loop's own thread: the call
would wait for a loop that is waiting for it.  It refuses with
``RuntimeError``; code on that loop uses the async channel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc

from pycontainerd.edge import Method
from pycontainerd.edge.inprocess import (
    MAX_MESSAGE_SIZE,
    Deserializer,
    InProcessChannel,
    Metadata,
    Serializer,
)

__all__ = ["InProcessRpcError", "SyncInProcessChannel"]

T = TypeVar("T")

# grpc's sync multi-callables are generic in its type stubs only.
if TYPE_CHECKING:
    _UnaryUnaryBase = grpc.UnaryUnaryMultiCallable[Any, Any]
    _UnaryStreamBase = grpc.UnaryStreamMultiCallable[Any, Any]
    _StreamUnaryBase = grpc.StreamUnaryMultiCallable[Any, Any]
    _StreamStreamBase = grpc.StreamStreamMultiCallable[Any, Any]
else:
    _UnaryUnaryBase = grpc.UnaryUnaryMultiCallable
    _UnaryStreamBase = grpc.UnaryStreamMultiCallable
    _StreamUnaryBase = grpc.StreamUnaryMultiCallable
    _StreamStreamBase = grpc.StreamStreamMultiCallable

_CANCELLED = "Locally cancelled by application!"


class InProcessRpcError(grpc.RpcError, grpc.Call):
    """A failed call, as grpcio's sync calls raise one: an ``RpcError`` that is
    also the finished ``Call`` (``code()``, ``details()``)."""

    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        super().__init__(details)
        self._code = code
        self._details = details or ""

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def debug_error_string(self) -> str:
        return f"{self._code.name}: {self._details}"

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


@contextlib.contextmanager
def _sync_errors() -> Iterator[None]:
    """Failures as the sync API raises them."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise InProcessRpcError(exc.code(), exc.details()) from None
    except (asyncio.CancelledError, concurrent.futures.CancelledError):
        raise InProcessRpcError(grpc.StatusCode.CANCELLED, _CANCELLED) from None


class _Stream(grpc.Call):
    """A call with a response stream, iterated from the calling thread."""

    def __init__(self, channel: SyncInProcessChannel, call: Any) -> None:
        self._channel = channel
        self._call = call

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        with _sync_errors():
            message = self._channel._run(self._call.read())
        if message is grpc.aio.EOF:
            raise StopIteration
        return message

    def _feed(self, requests: Iterable[Any]) -> None:
        """Write the caller's requests (in a thread of their own: the iterator may block)."""
        with contextlib.suppress(Exception):  # the call ended; its status says why
            for request in requests:
                self._channel._run(self._call.write(request))
            self._channel._run(self._call.done_writing())

    def result(self) -> Any:
        with _sync_errors():
            return self._channel._run(_awaited(self._call))

    def cancel(self) -> bool:
        return bool(self._channel._run(_now(self._call.cancel)))

    def is_active(self) -> bool:
        return not self._call.done()

    def time_remaining(self) -> float:
        remaining = self._call.time_remaining()
        return float("inf") if remaining is None else float(remaining)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self._call.done():
            return False
        self._channel._loop.call_soon_threadsafe(
            self._call.add_done_callback, lambda _call: callback()
        )
        return True

    def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = self._channel._run(self._call.code())
        return code

    def details(self) -> str:
        return str(self._channel._run(self._call.details()))

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()


async def _awaited(call: Any) -> Any:
    return await call


async def _now(fn: Callable[[], T]) -> T:
    return fn()


def _unsupported(what: str) -> NoReturn:
    raise NotImplementedError(f"{what} is not offered by the in-process channel")


class _Callable:
    def __init__(self, channel: SyncInProcessChannel, callable_: Any) -> None:
        self._channel = channel
        self._callable = callable_

    def _start(self, *args: Any, timeout: float | None, metadata: Metadata | None) -> _Stream:
        async def start() -> Any:
            return self._callable(*args, timeout=timeout, metadata=metadata)

        return _Stream(self._channel, self._channel._run(start()))

    def _start_streaming(
        self, requests: Iterator[Any], *, timeout: float | None, metadata: Metadata | None
    ) -> _Stream:
        stream = self._start(None, timeout=timeout, metadata=metadata)
        threading.Thread(
            target=stream._feed, args=(requests,), name="inprocess-requests", daemon=True
        ).start()
        return stream


class _UnaryUnary(_Callable, _UnaryUnaryBase):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        *_ignored: Any,  # credentials, wait_for_ready, compression: no meaning in-process
        **_ignored_kw: Any,
    ) -> Any:
        return self._start(request, timeout=timeout, metadata=metadata).result()

    def future(self, *args: Any, **kwargs: Any) -> NoReturn:
        _unsupported("future()")

    def with_call(self, *args: Any, **kwargs: Any) -> NoReturn:
        _unsupported("with_call()")


class _UnaryStream(_Callable, _UnaryStreamBase):
    # _CallIterator, the declared return type, exists only in grpc's type stubs.
    def __call__(  # type: ignore[override]
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        *_ignored: Any,
        **_ignored_kw: Any,
    ) -> _Stream:
        return self._start(request, timeout=timeout, metadata=metadata)


class _StreamUnary(_Callable, _StreamUnaryBase):
    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        *_ignored: Any,
        **_ignored_kw: Any,
    ) -> Any:
        stream = self._start_streaming(request_iterator, timeout=timeout, metadata=metadata)
        return stream.result()

    def future(self, *args: Any, **kwargs: Any) -> NoReturn:
        _unsupported("future()")

    def with_call(self, *args: Any, **kwargs: Any) -> NoReturn:
        _unsupported("with_call()")


class _StreamStream(_Callable, _StreamStreamBase):
    def __call__(  # type: ignore[override]
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        *_ignored: Any,
        **_ignored_kw: Any,
    ) -> _Stream:
        return self._start_streaming(request_iterator, timeout=timeout, metadata=metadata)


class SyncInProcessChannel(grpc.Channel):
    """The edge's ``methods`` as a sync ``grpc`` channel, for use from threads
    other than the one running ``loop``, the daemon's event loop."""

    def __init__(
        self,
        methods: Mapping[str, Method] | Iterable[Method],
        loop: asyncio.AbstractEventLoop,
        *,
        max_send_message_length: int = MAX_MESSAGE_SIZE,
        max_receive_message_length: int = MAX_MESSAGE_SIZE,
        max_server_receive_message_length: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self._loop = loop
        self._channel = InProcessChannel(
            methods,
            max_send_message_length=max_send_message_length,
            max_receive_message_length=max_receive_message_length,
            max_server_receive_message_length=max_server_receive_message_length,
        )

    def _on_the_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the daemon's loop and wait for its result."""
        if self._on_the_loop():
            coro.close()
            raise RuntimeError(
                "the sync in-process channel is used from the daemon's own event loop, "
                "which it would block; use InProcessChannel (AsyncClient) there"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted while waiting (KeyboardInterrupt): end the call too
            raise

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryUnary:
        callable_ = self._channel.unary_unary(method, request_serializer, response_deserializer)
        return _UnaryUnary(self, callable_)

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryStream:
        callable_ = self._channel.unary_stream(method, request_serializer, response_deserializer)
        return _UnaryStream(self, callable_)

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamUnary:
        callable_ = self._channel.stream_unary(method, request_serializer, response_deserializer)
        return _StreamUnary(self, callable_)

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamStream:
        callable_ = self._channel.stream_stream(method, request_serializer, response_deserializer)
        return _StreamStream(self, callable_)

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        callback(self._channel.get_state())

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        """Nothing to undo: subscribe() reports the state once."""

    def close(self) -> None:
        """Cancel the calls still running and wait until their methods have ended
        (on the daemon's loop itself, where it cannot wait: only cancel them;
        once that loop has stopped, nothing runs to cancel)."""
        if self._on_the_loop():
            self._channel._cancel_calls()
        elif self._loop.is_running():
            self._run(self._channel.close())

    def __enter__(self) -> SyncInProcessChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()
