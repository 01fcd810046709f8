"""The in-process channel's own behaviours, over small methods made for them:
what a caller sees of limits, deadlines, cancellation, flow control and
contexts.  (That a real daemon answers through it as over its socket is
``tests/integration/test_inprocess_client.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.wrappers_pb2 import BytesValue, StringValue

from pycontainerd import errdefs, namespaces
from pycontainerd.edge import Call, Cardinality, Frames, Method
from pycontainerd.edge.inprocess import WINDOW, InProcessChannel
from pycontainerd.edge.inprocess_sync import SyncInProcessChannel

pytestmark = pytest.mark.unit

T = TypeVar("T")
CALLER = contextvars.ContextVar("caller", default="unset")


def run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(body())


def method(name: str, cardinality: Cardinality, handler: Any, **kw: Any) -> Method:
    return Method(f"/test.Svc/{name}", StringValue, StringValue, cardinality, handler, **kw)


async def echo(request: StringValue, call: Call) -> StringValue:
    return StringValue(value=f"{request.value} in {namespaces.current()}")


def unary(channel: InProcessChannel, name: str) -> Any:
    return channel.unary_unary(
        f"/test.Svc/{name}", StringValue.SerializeToString, StringValue.FromString
    )


def test_a_call_is_serialized_both_ways_and_carries_its_namespace() -> None:
    async def body() -> None:
        async with InProcessChannel([method("Echo", Cardinality.UNARY, echo)]) as channel:
            request = StringValue(value="hi")
            answer = await unary(channel, "Echo")(
                request, metadata=(("containerd-namespace", "ns1"),)
            )
            assert answer == StringValue(value="hi in ns1")
            assert answer is not request

    run(body)


def test_the_method_sees_none_of_the_callers_context() -> None:
    seen: list[str] = []

    async def handler(request: StringValue, call: Call) -> StringValue:
        seen.append(CALLER.get())
        namespaces.set_current("changed-by-the-daemon")
        return StringValue()

    async def body() -> None:
        CALLER.set("the caller's")
        async with InProcessChannel([method("M", Cardinality.UNARY, handler)]) as channel:
            with namespaces.namespace("mine"):
                await unary(channel, "M")(StringValue())
                assert namespaces.current() == "mine"
        assert seen == ["unset"]

    run(body)


def test_errors_leave_as_a_status_the_client_maps_back() -> None:
    async def missing(request: StringValue, call: Call) -> StringValue:
        raise errdefs.NotFound(f"thing {errdefs.q(request.value)}")

    async def body() -> None:
        async with InProcessChannel([method("Get", Cardinality.UNARY, missing)]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await unary(channel, "Get")(StringValue(value="x"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert info.value.details() == 'thing "x": not found'
            assert isinstance(errdefs.from_grpc(info.value), errdefs.NotFound)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await unary(channel, "Nope")(StringValue())
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert info.value.details() == "unknown method Nope for service test.Svc"

    run(body)


def test_a_deadline_cancels_the_method() -> None:
    cancelled = asyncio.Event()

    async def slow(request: StringValue, call: Call) -> StringValue:
        assert call.time_remaining() is not None
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return StringValue()

    async def body() -> None:
        async with InProcessChannel([method("Slow", Cardinality.UNARY, slow)]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await unary(channel, "Slow")(StringValue(), timeout=0.05)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(cancelled.wait(), 1)

    run(body)


def test_message_limits_answer_resource_exhausted() -> None:
    async def body() -> None:
        methods = [method("Echo", Cardinality.UNARY, echo)]
        async with InProcessChannel(
            methods, max_send_message_length=100, max_server_receive_message_length=50
        ) as channel:
            statuses = []
            for size in (200, 70):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await unary(channel, "Echo")(StringValue(value="x" * size))
                statuses.append((info.value.code(), info.value.details()))
            assert statuses == [
                (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "CLIENT: Sent message larger than max (203 vs. 100)",
                ),
                (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "grpc: received message larger than max (72 vs. 50)",
                ),
            ]
        async with InProcessChannel(methods, max_receive_message_length=10) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await unary(channel, "Echo")(StringValue(value="long enough"))
            assert info.value.details() == (
                "Stream removed (CLIENT: Received message larger than max (21 vs. 10))"
            )

    run(body)


def test_frames_and_preserialized_responses_arrive_as_messages() -> None:
    async def listing(request: StringValue, call: Call) -> AsyncIterator[Any]:
        yield StringValue(value="a").SerializeToString()
        yield Frames(StringValue(value=v).SerializeToString() for v in "bcd")

    async def body() -> None:
        listed = method("List", Cardinality.SERVER_STREAM, listing, preserialized=True)
        async with InProcessChannel([listed]) as channel:
            stream = channel.unary_stream(
                "/test.Svc/List", StringValue.SerializeToString, StringValue.FromString
            )
            assert [m.value async for m in stream(StringValue())] == ["a", "b", "c", "d"]

    run(body)


def test_a_fast_stream_waits_for_a_slow_reader() -> None:
    produced = 0
    chunk = b"x" * (WINDOW // 4)

    async def flood(request: StringValue, call: Call) -> AsyncIterator[BytesValue]:
        nonlocal produced
        for _ in range(100):
            produced += 1
            yield BytesValue(value=chunk)

    async def body() -> None:
        flooding = Method(
            "/test.Svc/Flood", StringValue, BytesValue, Cardinality.SERVER_STREAM, flood
        )
        async with InProcessChannel([flooding]) as channel:
            call = channel.unary_stream(
                "/test.Svc/Flood", StringValue.SerializeToString, BytesValue.FromString
            )(StringValue())
            await call.read()
            await asyncio.sleep(0.05)
            assert produced <= 7  # a window of four, one being waited on, one read
            call.cancel()

    run(body)


def test_a_client_stream_is_a_conversation() -> None:
    async def chat(requests: AsyncIterator[StringValue], call: Call) -> AsyncIterator[Any]:
        async for request in requests:
            yield StringValue(value=request.value.upper())

    async def body() -> None:
        talk = method("Chat", Cardinality.BIDI_STREAM, chat)
        async with InProcessChannel([talk]) as channel:
            call = channel.stream_stream(
                "/test.Svc/Chat", StringValue.SerializeToString, StringValue.FromString
            )()
            for word in ("one", "two"):
                await call.write(StringValue(value=word))
                assert (await call.read()).value == word.upper()
            await call.done_writing()
            with pytest.raises(asyncio.InvalidStateError):
                await call.write(StringValue())
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
            with pytest.raises(asyncio.InvalidStateError):
                await call.write(StringValue())

    run(body)


def test_close_cancels_every_call_and_waits_for_its_method() -> None:
    ended: list[str] = []

    async def forever(request: StringValue, call: Call) -> AsyncIterator[StringValue]:
        try:
            await asyncio.sleep(30)
            yield StringValue()
        finally:
            ended.append(request.value)

    async def body() -> None:
        before = asyncio.all_tasks()
        channel = InProcessChannel([method("Watch", Cardinality.SERVER_STREAM, forever)])
        watch = channel.unary_stream(
            "/test.Svc/Watch", StringValue.SerializeToString, StringValue.FromString
        )
        calls = [watch(StringValue(value=str(i))) for i in range(3)]
        await asyncio.sleep(0.01)
        await channel.close()
        assert sorted(ended) == ["0", "1", "2"]
        assert asyncio.all_tasks() <= before
        for call in calls:
            assert call.cancelled()
            assert await call.code() == grpc.StatusCode.CANCELLED
        with pytest.raises(grpc.aio.UsageError):
            watch(StringValue())

    run(body)


@contextlib.contextmanager
def loop_in_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop serving from a thread, as a daemon embedded in a sync program."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_the_sync_channel_calls_from_another_thread_and_raises_rpc_errors() -> None:
    async def missing(request: StringValue, call: Call) -> StringValue:
        raise errdefs.NotFound("nothing here")

    methods = [method("Echo", Cardinality.UNARY, echo), method("Get", Cardinality.UNARY, missing)]
    with loop_in_thread() as loop, SyncInProcessChannel(methods, loop) as channel:
        echo_sync = channel.unary_unary(
            "/test.Svc/Echo", StringValue.SerializeToString, StringValue.FromString
        )
        answer = echo_sync(StringValue(value="hi"), metadata=(("containerd-namespace", "n"),))
        assert answer.value == "hi in n"
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/test.Svc/Get", StringValue.SerializeToString)(StringValue())
        assert isinstance(info.value, grpc.Call)
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.NOT_FOUND,
            "nothing here: not found",
        )


def test_a_sync_stream_cancelled_from_another_thread_ends_with_cancelled() -> None:
    started = threading.Event()

    async def forever(request: StringValue, call: Call) -> AsyncIterator[StringValue]:
        started.set()
        await asyncio.sleep(30)
        yield StringValue()

    methods = [method("Watch", Cardinality.SERVER_STREAM, forever)]
    with loop_in_thread() as loop, SyncInProcessChannel(methods, loop) as channel:
        stream = channel.unary_stream(
            "/test.Svc/Watch", StringValue.SerializeToString, StringValue.FromString
        )(StringValue())
        started.wait(5)
        threading.Timer(0.05, stream.cancel).start()
        with pytest.raises(grpc.RpcError) as info:
            next(stream)
        assert info.value.code() == grpc.StatusCode.CANCELLED
        assert not stream.is_active()


def test_the_sync_channel_refuses_the_daemons_own_loop() -> None:
    async def body() -> None:
        channel = SyncInProcessChannel([], asyncio.get_running_loop())
        with pytest.raises(RuntimeError, match="own event loop"):
            channel.unary_unary("/test.Svc/Echo")(b"")
        channel.close()

    run(body)
