"""Request/response over a bidirectional gRPC stream, for both clients.

containerd's Write stream is a conversation: send one message, read its one
answer, repeat.  ``grpc.aio`` does that with ``write()``/``read()`` on the
call; sync ``grpc`` only takes a request iterator.  The two classes here give
both the same shape — ``send(request) -> response`` and ``close()`` — so the
async client can be written once and its sync twin generated from it
(``AsyncBidiStream`` becomes ``BidiStream``).

The other pairs follow the same trick for work that must not run on the
event loop: ``AsyncPause`` sleeps, ``AsyncOffload`` hands blocking file
and CPU work (tar parsing, gzip, file reads and writes) to a worker thread,
while their sync twins just do it in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import grpc

from pycontainerd import errdefs

__all__ = ["AsyncBidiStream", "AsyncOffload", "AsyncPause", "BidiStream", "Offload", "Pause"]

_DONE = object()

P = ParamSpec("P")
T = TypeVar("T")


def _ended() -> errdefs.ContainerdError:
    return errdefs.Unavailable("stream closed by the daemon before it answered")


class AsyncBidiStream:
    """One ``grpc.aio`` stream-stream call driven one message at a time."""

    def __init__(self, method: Callable[..., Any], metadata: Any) -> None:
        self._call = method(metadata=metadata)
        self._closed = False

    async def _status_error(self) -> errdefs.ContainerdError:
        code = await self._call.code()
        details = await self._call.details()
        if code == grpc.StatusCode.OK:
            return _ended()
        return errdefs.from_status(code, details)

    async def send(self, request: Any) -> Any:
        """Send ``request`` and return the daemon's answer to it."""
        if self._closed:
            raise errdefs.FailedPrecondition("stream is closed")
        try:
            await self._call.write(request)
            response = await self._call.read()
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc
        except Exception as exc:  # written after the daemon ended the call
            if self._call.done():
                raise await self._status_error() from exc
            raise
        if response is grpc.aio.EOF:
            raise await self._status_error()
        return response

    async def close(self) -> None:
        """Half-close and let the daemon finish the call."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            if not self._call.done():
                await self._call.done_writing()
                while await self._call.read() is not grpc.aio.EOF:
                    pass
        self._call.cancel()


class BidiStream:
    """The same over sync ``grpc``: requests are fed to the call through a queue."""

    def __init__(self, method: Callable[..., Any], metadata: Any) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._responses = method(iter(self._requests.get, _DONE), metadata=metadata)
        self._closed = False

    def send(self, request: Any) -> Any:
        """Send ``request`` and return the daemon's answer to it."""
        if self._closed:
            raise errdefs.FailedPrecondition("stream is closed")
        self._requests.put(request)
        try:
            return next(self._responses)
        except StopIteration:
            raise _ended() from None
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc

    def close(self) -> None:
        """Half-close and let the daemon finish the call."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(_DONE)  # also frees grpc's thread waiting for a request
        with contextlib.suppress(grpc.RpcError):
            for _ in self._responses:
                pass
        self._responses.cancel()


class AsyncPause:
    """``await AsyncPause.sleep(s)``; generated code says ``Pause.sleep(s)``."""

    @staticmethod
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)


class Pause:
    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)


class AsyncOffload:
    """``await AsyncOffload.run(fn, *args)`` runs blocking work in a thread.

    The loop keeps serving other calls (and the gRPC stream feeding the
    work) meanwhile; ``asyncio.to_thread`` carries the context variables,
    so namespace and lease still apply.  Generated code says
    ``Offload.run(fn, *args)``, which simply calls ``fn``.
    """

    @staticmethod
    async def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)


class Offload:
    @staticmethod
    def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return fn(*args, **kwargs)
