"""The service edge: what every gRPC servicer method goes through.

:func:`servicer` wraps each RPC method of a servicer class so that it
  * takes the namespace (``containerd-namespace``) and lease
    (``containerd-lease``) metadata into context variables (validated later,
    by whoever uses them),
  * turns our typed errors into gRPC statuses (with containerd's message
    suffix) and anything unexpected into UNKNOWN, logged with its stack,
  * counts the call and its latency for ``[metrics]``.
Servicers therefore contain only decode / call core / encode.

:func:`add_to_server` registers a servicer as its generated
``add_XServicer_to_server`` would, except that the methods it names return
(or yield) their responses already serialized: grpc sends those bytes as
they are.  Listings use it to skip building thousands of messages, and
stream them in :class:`Frames` batches.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpc

from pycontainerd import errdefs, leases, namespaces
from pycontainerd.metrics import REGISTRY

__all__ = ["Frames", "add_to_server", "servicer"]

log = logging.getLogger(__name__)

C = TypeVar("C", bound=type)
Context = grpc.aio.ServicerContext[Any, Any]


def _enter(context: Context) -> None:
    """Take the namespace and lease headers into this task's context."""
    ns = lease = None
    for key, value in context.invocation_metadata() or ():
        if key == namespaces.GRPC_HEADER:
            ns = value if isinstance(value, str) else value.decode()
        elif key == leases.GRPC_HEADER:
            lease = value if isinstance(value, str) else value.decode()
    namespaces.set_current(ns)
    leases.set_current(lease)


async def _abort(context: Context, exc: BaseException, method: str) -> None:
    if isinstance(exc, errdefs.ContainerdError):
        await context.abort(exc.code, errdefs.wire_message(exc))
    log.error("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")


def _code_of(exc: BaseException | None, context: Context) -> str:
    if exc is None:
        code = context.code() if hasattr(context, "code") else None
        return code.name if isinstance(code, grpc.StatusCode) else "OK"
    return errdefs.to_grpc_code(exc).name


def _wrap_unary(method: str, fn: Callable[..., Any], kind: str = "unary") -> Callable[..., Any]:
    @functools.wraps(fn)
    async def handler(self: Any, request: Any, context: Context) -> Any:
        _enter(context)
        start = time.perf_counter()
        failure: BaseException | None = None
        try:
            return await fn(self, request, context)
        except (errdefs.ContainerdError, Exception) as exc:
            if type(exc).__name__ == "AbortError":  # context.abort() already set the status
                raise
            failure = exc
            await _abort(context, exc, method)
        finally:
            REGISTRY.observe(method, _code_of(failure, context), time.perf_counter() - start, kind)

    return handler


def _wrap_stream(
    method: str, fn: Callable[..., AsyncIterator[Any]], kind: str = "server_stream"
) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def handler(self: Any, request: Any, context: Context) -> Any:
        _enter(context)
        start = time.perf_counter()
        failure: BaseException | None = None
        try:
            async for item in fn(self, request, context):
                yield item
        except (errdefs.ContainerdError, Exception) as exc:
            if type(exc).__name__ == "AbortError":
                raise
            failure = exc
            await _abort(context, exc, method)
        finally:
            REGISTRY.observe(method, _code_of(failure, context), time.perf_counter() - start, kind)

    return handler


def servicer(service: str) -> Callable[[C], C]:
    """Class decorator: wrap every RPC the generated base class declares.

    A method written as an async generator streams its responses; one whose
    generated signature takes ``request_iterator`` streams its requests (the
    handler then gets the request iterator where others get the request).
    Both kinds go through the same edge; only the metrics label differs.
    """

    def decorate(cls: C) -> C:
        base = next(b for b in cls.__mro__[1:] if b.__name__.endswith("Servicer"))
        for name, base_fn in inspect.getmembers(base, inspect.isfunction):
            if name.startswith("_") or name not in cls.__dict__:
                continue
            fn = cls.__dict__[name]
            full = f"/{service}/{name}"
            client_streams = "request_iterator" in inspect.signature(base_fn).parameters
            if inspect.isasyncgenfunction(fn):
                kind = "bidi_stream" if client_streams else "server_stream"
                wrapped = _wrap_stream(full, fn, kind)
            else:
                wrapped = _wrap_unary(full, fn, "client_stream" if client_streams else "unary")
            setattr(cls, name, wrapped)
        return cls

    return decorate


# --------------------------------------------------------------------------
# Registration with pre-serialized responses


class Frames(tuple[bytes, ...]):
    """Several serialized messages of a preserialized server stream, yielded
    as one item so the transport can put them on the wire in one write.

    A listing of thousands of records sends them a few hundred at a time
    instead of paying the per-message framing and write cost each time.
    Only a transport that knows it (the daemon's) may be handed one.
    """

    __slots__ = ()


def _as_is(response: bytes) -> bytes:
    return response


def _preserialized(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with a response serializer that sends the bytes it is given."""
    make: Callable[..., grpc.RpcMethodHandler[Any, Any]]
    behaviour: Callable[..., Any] | None
    if handler.request_streaming and handler.response_streaming:
        make, behaviour = grpc.stream_stream_rpc_method_handler, handler.stream_stream
    elif handler.request_streaming:
        make, behaviour = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    elif handler.response_streaming:
        make, behaviour = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    else:
        make, behaviour = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    if behaviour is None:
        raise ValueError("method handler without a behaviour")
    return make(
        behaviour, request_deserializer=handler.request_deserializer, response_serializer=_as_is
    )


class _Capture:
    """Stands in for the server to catch what a generated ``add_*_to_server`` registers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        pass  # the same handlers come again, by name, through the call below

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.services[service] = dict(handlers)


def add_to_server(
    server: grpc.aio.Server,
    add: Callable[[Any, Any], None],
    servicer: object,
    *,
    preserialized: Iterable[str] = (),
) -> None:
    """Register ``servicer`` through ``add`` (a generated ``add_XServicer_to_server``).

    The methods named in ``preserialized`` hand back serialized response
    messages (``bytes``) instead of message objects; everything else is
    exactly what ``add(servicer, server)`` would register.
    """
    capture = _Capture()
    add(servicer, capture)
    if not capture.services:
        raise RuntimeError(f"{add.__name__} registered no service by name")
    raw = set(preserialized)
    for service, handlers in capture.services.items():
        unknown = raw - handlers.keys()
        if unknown:
            raise ValueError(f"{service} has no method {', '.join(sorted(unknown))}")
        for name in raw:
            handlers[name] = _preserialized(handlers[name])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)
