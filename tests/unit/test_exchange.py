"""The event exchange: publish, forward, subscribe with containerd's filters,
and bounded memory for subscribers that stop reading."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest
from google.protobuf import any_pb2

from pycontainerd import errdefs, namespaces, typeurl
from pycontainerd.api.events import namespace_pb2 as ns_events
from pycontainerd.events import Envelope, Exchange, validate_topic
from pycontainerd.events import exchange as exchange_mod

pytestmark = pytest.mark.unit

T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def with_timeout() -> T:
        async with asyncio.timeout(10):
            return await fn()

    return asyncio.run(with_timeout())


class Subscription:
    """A started subscription: registered with the exchange before any publish."""

    def __init__(self, exchange: Exchange, filters: Sequence[str] = ()) -> None:
        self._stream: AsyncIterator[Envelope] = exchange.subscribe(filters)
        self._pending: asyncio.Future[Envelope] | None = None
        self._exchange = exchange

    async def start(self) -> Subscription:
        before = self._exchange.subscriber_count
        self._pending = asyncio.ensure_future(anext(self._stream))
        while self._exchange.subscriber_count == before and not self._pending.done():
            await asyncio.sleep(0)
        return self

    async def next(self, timeout: float = 1.0) -> Envelope:
        fut, self._pending = self._pending, None
        if fut is None:
            fut = asyncio.ensure_future(anext(self._stream))
        return await asyncio.wait_for(fut, timeout)

    async def received(self, count: int) -> list[Envelope]:
        return [await self.next() for _ in range(count)]

    async def nothing_more(self) -> bool:
        try:
            await self.next(timeout=0.05)
        except TimeoutError:
            return True
        return False


async def subscribe(exchange: Exchange, *filters: str) -> Subscription:
    return await Subscription(exchange, filters).start()


def create(name: str, **labels: str) -> ns_events.NamespaceCreate:
    return ns_events.NamespaceCreate(name=name, labels=labels)


# --- publish and forward ---------------------------------------------------------


def test_subscriber_receives_a_published_event_in_an_envelope() -> None:
    async def scenario() -> None:
        ex = Exchange()
        sub = await subscribe(ex)
        before = dt.datetime.now(dt.UTC)
        await ex.publish("/namespaces/create", create("ns1", a="b"), namespace="default")
        env = await sub.next()
        assert env.topic == "/namespaces/create"
        assert env.namespace == "default"
        assert env.event.type_url == "containerd.events.NamespaceCreate"
        assert typeurl.unmarshal_any(env.event) == create("ns1", a="b")
        assert before <= env.timestamp <= dt.datetime.now(dt.UTC)

    run(scenario)


def test_publish_uses_the_namespace_of_the_context() -> None:
    async def scenario() -> None:
        ex = Exchange()
        sub = await subscribe(ex)
        with namespaces.namespace("prod"):
            await ex.publish("/namespaces/create", create("x"))
        assert (await sub.next()).namespace == "prod"

    run(scenario)


def test_publish_without_a_namespace_fails_precondition() -> None:
    async def scenario() -> None:
        with (
            namespaces.namespace(None),
            pytest.raises(errdefs.FailedPrecondition, match="namespace is required"),
        ):
            await Exchange().publish("/namespaces/create", create("x"))

    run(scenario)


def test_publish_with_an_invalid_namespace_is_rejected() -> None:
    async def scenario() -> None:
        with pytest.raises(errdefs.InvalidArgument, match='"-bad"'):
            await Exchange().publish("/a", create("x"), namespace="-bad")

    run(scenario)


def test_forward_rebroadcasts_an_envelope_unchanged() -> None:
    async def scenario() -> None:
        ex = Exchange()
        sub = await subscribe(ex)
        sent = Envelope(
            timestamp=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            namespace="k8s.io",
            topic="/tasks/exit",
            # a type this process does not know: forwarding never decodes it
            event=any_pb2.Any(type_url="containerd.events.Unknown", value=b"\x0a\x01x"),
        )
        await ex.forward(sent)
        assert await sub.next() == sent

    run(scenario)


def test_every_subscriber_gets_its_own_copy() -> None:
    async def scenario() -> None:
        ex = Exchange()
        subs = [await subscribe(ex) for _ in range(3)]
        await ex.publish("/a", create("x"), namespace="default")
        for sub in subs:
            assert (await sub.next()).topic == "/a"

    run(scenario)


# --- filters ------------------------------------------------------------------------


def test_subscribers_see_only_events_their_filters_match() -> None:
    async def scenario() -> None:
        ex = Exchange()
        # containerd's filter syntax needs "/..." values quoted ("/" opens a regex quote)
        by_topic = await subscribe(ex, 'topic=="/namespaces/create"')
        by_namespace = await subscribe(ex, "namespace==prod")
        by_field = await subscribe(ex, "event.name==ns1")
        by_regex = await subscribe(ex, 'topic~="^/namespaces/(create|delete)$"')
        both = await subscribe(ex, 'namespace==prod,topic=="/namespaces/delete"')
        either = await subscribe(ex, "namespace==prod", "event.name==ns2")

        await ex.publish("/namespaces/create", create("ns1"), namespace="default")
        await ex.publish("/namespaces/update", ns_events.NamespaceUpdate(name="ns2"),
                         namespace="default")  # fmt: skip
        await ex.publish("/namespaces/delete", ns_events.NamespaceDelete(name="ns3"),
                         namespace="prod")  # fmt: skip

        def seen(envs: list[Envelope]) -> list[tuple[str, str]]:
            return [(e.topic, e.namespace) for e in envs]

        assert seen(await by_topic.received(1)) == [("/namespaces/create", "default")]
        assert seen(await by_namespace.received(1)) == [("/namespaces/delete", "prod")]
        assert seen(await by_field.received(1)) == [("/namespaces/create", "default")]
        assert seen(await by_regex.received(2)) == [
            ("/namespaces/create", "default"),
            ("/namespaces/delete", "prod"),
        ]
        assert seen(await both.received(1)) == [("/namespaces/delete", "prod")]
        assert seen(await either.received(2)) == [
            ("/namespaces/update", "default"),
            ("/namespaces/delete", "prod"),
        ]
        for sub in (by_topic, by_namespace, by_field, by_regex, both, either):
            assert await sub.nothing_more()

    run(scenario)


def test_event_field_filter_reaches_into_nested_fields() -> None:
    async def scenario() -> None:
        ex = Exchange()
        sub = await subscribe(ex, 'event.labels."team"==web')
        await ex.publish("/namespaces/create", create("a", team="db"), namespace="default")
        await ex.publish("/namespaces/create", create("b", team="web"), namespace="default")
        assert typeurl.unmarshal_any((await sub.next()).event) == create("b", team="web")
        assert await sub.nothing_more()

    run(scenario)


def test_event_field_filter_skips_events_of_unknown_type() -> None:
    async def scenario() -> None:
        ex = Exchange()
        sub = await subscribe(ex, "event.name==x")
        unknown = Envelope(
            timestamp=dt.datetime.now(dt.UTC),
            namespace="default",
            topic="/x",
            event=any_pb2.Any(type_url="example.com/Nope", value=b"junk"),
        )
        await ex.forward(unknown)  # must not raise
        await ex.publish("/x", create("x"), namespace="default")
        assert (await sub.next()).event.type_url == "containerd.events.NamespaceCreate"
        assert await sub.nothing_more()

    run(scenario)


@pytest.mark.parametrize(
    "bad", ["topic==", "topic=~x", "event.name==a,", '"unterminated', "topic==/tasks/exit"]
)
def test_bad_filter_fails_at_once(bad: str) -> None:
    async def scenario() -> None:
        ex = Exchange()
        stream = ex.subscribe(["topic==/ok", bad])
        # No event is ever published: the error must come from the first step.
        with pytest.raises(errdefs.InvalidArgument):
            await asyncio.wait_for(anext(stream), 1)
        assert ex.subscriber_count == 0

    run(scenario)


# --- topics -------------------------------------------------------------------------


BAD_TOPICS = [
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("tasks/exit", "must start with '/'", id="relative"),
    pytest.param("/", "must have at least one component", id="root"),
    pytest.param("/tasks//exit", 'component ""', id="empty-component"),
    pytest.param("/tasks/-exit", 'component "-exit"', id="bad-component"),
    pytest.param("/tasks/ex it", 'component "ex it"', id="space"),
    pytest.param("/tasks/exit/", 'component ""', id="trailing-slash"),
]


@pytest.mark.parametrize(("topic", "why"), BAD_TOPICS)
def test_publish_rejects_invalid_topics(topic: str, why: str) -> None:
    async def scenario() -> None:
        ex = Exchange()
        sub = await subscribe(ex)
        with pytest.raises(errdefs.InvalidArgument) as excinfo:
            await ex.publish(topic, create("x"), namespace="default")
        assert excinfo.value.message.startswith(f"envelope topic {errdefs.q(topic)}: ")
        assert why in excinfo.value.message
        assert await sub.nothing_more()

    run(scenario)


@pytest.mark.parametrize(("topic", "why"), BAD_TOPICS)
def test_forward_rejects_invalid_topics(topic: str, why: str) -> None:
    env = Envelope(dt.datetime.now(dt.UTC), "default", topic, typeurl.marshal_any(create("x")))
    with pytest.raises(errdefs.InvalidArgument, match="envelope topic"):
        run(lambda: Exchange().forward(env))


def test_forward_rejects_an_invalid_namespace() -> None:
    env = Envelope(dt.datetime.now(dt.UTC), "a/b", "/x", typeurl.marshal_any(create("x")))
    with pytest.raises(errdefs.InvalidArgument, match='"a/b"'):
        run(lambda: Exchange().forward(env))


@pytest.mark.parametrize("topic", ["/tasks/exit", "/namespaces/create", "/a", "/a.b/c_d/e-f"])
def test_valid_topics_pass(topic: str) -> None:
    validate_topic(topic)


# --- slow subscribers ------------------------------------------------------------------


def test_slow_subscriber_is_dropped_with_unavailable() -> None:
    async def scenario() -> None:
        ex = Exchange(max_queued_events=4)
        slow = await subscribe(ex)
        fast = await subscribe(ex)
        for i in range(50):
            await ex.publish(f"/e/n{i}", create(f"n{i}"), namespace="default")
            assert (await fast.next()).topic == f"/e/n{i}"  # a reader keeps up
        # The slow one was cut off once its queue was full, not buffered without end.
        assert ex.subscriber_count == 1
        got: list[str] = []
        with pytest.raises(errdefs.Unavailable, match="fell too far behind"):
            while True:
                got.append((await slow.next()).topic)
        # only what it had taken before it was dropped: the queue went with it
        assert got == ["/e/n0"]
        # and the fast subscriber is unaffected
        await ex.publish("/e/last", create("last"), namespace="default")
        assert (await fast.next()).topic == "/e/last"

    run(scenario)


def test_dropped_subscriber_holds_no_more_events() -> None:
    async def scenario() -> None:
        ex = Exchange(max_queued_events=2)
        stream = ex.subscribe([])
        task = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        for i in range(1000):
            await ex.publish("/e", create(f"n{i}"), namespace="default")
        assert ex.subscriber_count == 0
        # Dropped before it took anything: nothing stale is delivered.
        with pytest.raises(errdefs.Unavailable):
            await task

    run(scenario)


def big(topic: str, size: int) -> Envelope:
    """An envelope of a type the exchange never decodes, ``size`` bytes of payload."""
    payload = any_pb2.Any(type_url="example.com/Big", value=b"x" * size)
    return Envelope(dt.datetime.now(dt.UTC), "default", topic, payload)


def test_subscriber_queue_is_bounded_by_bytes(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        ex = Exchange()
        stalled = await subscribe(ex, 'topic~="^/big/"')
        reader = await subscribe(ex)
        mib = 1 << 20
        for i in range(50):
            await ex.forward(big(f"/big/n{i}", mib))
            assert (await reader.next()).topic == f"/big/n{i}"
        assert ex.subscriber_count == 1
        with pytest.raises(errdefs.Unavailable):
            while True:
                await stalled.next()

    with caplog.at_level(logging.WARNING, logger="pycontainerd.events.exchange"):
        run(scenario)
    (record,) = [r for r in caplog.records if "fell too far behind" in r.getMessage()]
    # It names the subscriber by its filters and says what it had queued:
    # three 1 MiB envelopes and their overhead fit in 4 MiB, a fourth does not.
    assert record.filters == ['topic~="^/big/"']
    assert record.queued_events == 3
    assert 3 << 20 < record.queued_bytes <= exchange_mod.MAX_QUEUED_BYTES


def test_an_envelope_over_the_byte_bound_reaches_a_reader_that_keeps_up() -> None:
    async def scenario() -> None:
        ex = Exchange(max_queued_bytes=1024)
        sub = await subscribe(ex)
        for i in range(3):
            await ex.forward(big(f"/big/n{i}", 4096))
            assert (await sub.next()).topic == f"/big/n{i}"
        assert ex.subscriber_count == 1

    run(scenario)


def test_an_envelope_being_sent_still_counts_against_the_bound() -> None:
    async def scenario() -> None:
        ex = Exchange(max_queued_events=2)
        stream = ex.subscribe([])
        task = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        await ex.publish("/e/a", create("a"), namespace="default")
        assert (await task).topic == "/e/a"  # handed out, its send not yet done
        await ex.publish("/e/b", create("b"), namespace="default")
        await ex.publish("/e/c", create("c"), namespace="default")
        assert ex.subscriber_count == 0
        with pytest.raises(errdefs.Unavailable):
            await anext(stream)

    run(scenario)


def test_subscriber_is_removed_when_the_reader_stops() -> None:
    async def scenario() -> None:
        ex = Exchange()
        stream: Any = ex.subscribe([])
        task = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        assert ex.subscriber_count == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()
        assert ex.subscriber_count == 0

    run(scenario)
