"""The pieces around the differs: output media types, the ordered differ of the
diff service plugin, the gRPC adapter, bind-mount detection and the worker
plumbing (cancellation, digests, loop hand-off)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import edge, errdefs, plugin
from pycontainerd.api.services.diff.v1 import diff_pb2 as pb
from pycontainerd.archive.compression import Compression
from pycontainerd.diff import (
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_ZSTD,
    Differ,
    Payloads,
    output_compression,
)
from pycontainerd.diff._blocking import (
    CHUNK,
    DigestReader,
    LoopWriter,
    ReaderAtStream,
    run_blocking,
)
from pycontainerd.diff._mounts import bind_source
from pycontainerd.diff.ordered import DiffServiceConfig, OrderedDiffer
from pycontainerd.diff.ordered import _init as init_service
from pycontainerd.edge import Call, Status
from pycontainerd.edge.api.diff import DiffAPI
from pycontainerd.images import Descriptor
from pycontainerd.mount import Mount
from pycontainerd.wire.images import descriptor_to_pb
from pycontainerd.wire.mounts import list_to_pb

pytestmark = pytest.mark.unit

DESC = Descriptor(MEDIA_TYPE_LAYER_GZIP, "sha256:" + "a" * 64, 10)
OUT = Descriptor(MEDIA_TYPE_LAYER, "sha256:" + "b" * 64, 20)


class FakeDiffer:
    """Answers with ``result``, or raises ``error``; records calls."""

    def __init__(self, result: Descriptor | None = None, error: Exception | None = None) -> None:
        self.result = result
        self.error = error
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def _answer(self) -> Descriptor:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    async def apply(
        self, desc: Descriptor, mounts: Sequence[Mount], *, payloads: Payloads | None = None
    ) -> Descriptor:
        self.calls.append(("apply", (desc, list(mounts)), {"payloads": payloads}))
        return self._answer()

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        kw = {"media_type": media_type, "ref": ref, "labels": labels}
        self.calls.append(("compare", (list(lower), list(upper)), kw))
        return self._answer()


# --- media types ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        ("", Compression.GZIP),
        (MEDIA_TYPE_LAYER_GZIP, Compression.GZIP),
        (MEDIA_TYPE_LAYER_ZSTD, Compression.ZSTD),
        (MEDIA_TYPE_LAYER, Compression.UNCOMPRESSED),
    ],
)
def test_output_compression_of_layer_types(media_type: str, expected: Compression) -> None:
    assert output_compression(media_type) is expected


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        MEDIA_TYPE_LAYER + "+encrypted",
        "application/json",
    ],
)
def test_output_compression_rejects_what_a_comparer_cannot_write(media_type: str) -> None:
    with pytest.raises(errdefs.NotImplemented) as info:
        output_compression(media_type)
    assert info.value.message == f"unsupported diff media type: {media_type}"


def test_walking_differ_is_a_differ() -> None:
    from pycontainerd.diff.walking import WalkingDiffer

    assert isinstance(WalkingDiffer(object()), Differ)  # type: ignore[arg-type]


# --- the ordered differ ---------------------------------------------------------


def test_ordered_differ_skips_differs_that_do_not_implement_the_request() -> None:
    first = FakeDiffer(error=errdefs.NotImplemented("unsupported diff media type: x"))
    second = FakeDiffer(result=OUT)
    differ = OrderedDiffer([first, second])
    assert asyncio.run(differ.apply(DESC, [])) == OUT
    assert asyncio.run(differ.compare([], [], media_type="x")) == OUT
    assert len(first.calls) == len(second.calls) == 2


def test_ordered_differ_stops_at_the_first_real_error() -> None:
    first = FakeDiffer(error=errdefs.NotFound("content digest x"))
    second = FakeDiffer(result=OUT)
    with pytest.raises(errdefs.NotFound):
        asyncio.run(OrderedDiffer([first, second]).apply(DESC, []))
    assert second.calls == []


def test_ordered_differ_raises_not_implemented_when_none_can() -> None:
    only = FakeDiffer(error=errdefs.NotImplemented("unsupported diff media type: x"))
    with pytest.raises(errdefs.NotImplemented, match="unsupported diff media type"):
        asyncio.run(OrderedDiffer([only]).compare([], []))


def _init_ctx(plugins: plugin.PluginSet, config: DiffServiceConfig) -> plugin.InitContext:
    reg = plugin.Registration(type=plugin.PluginType.SERVICE, id="diff-service", init=init_service)
    return plugin.InitContext(
        registration=reg,
        root=None,
        state=None,
        config=config,
        plugins=plugins,  # type: ignore[arg-type]
    )


def _differ_plugin(id: str, instance: Any) -> plugin.Plugin:
    reg = plugin.Registration(type=plugin.PluginType.DIFF, id=id, init=lambda ctx: instance)
    return plugin.Plugin(registration=reg, instance=instance)


def test_diff_service_plugin_orders_differs_by_config() -> None:
    plugins = plugin.PluginSet()
    a, b = FakeDiffer(result=OUT), FakeDiffer(result=DESC)
    plugins.add(_differ_plugin("a", a))
    plugins.add(_differ_plugin("b", b))
    service = init_service(_init_ctx(plugins, DiffServiceConfig(default=("b", "a"))))
    assert asyncio.run(service.apply(DESC, [])) == DESC
    assert a.calls == []


def test_diff_service_plugin_needs_its_differs() -> None:
    plugins = plugin.PluginSet()
    with pytest.raises(errdefs.NotFound, match="needed differ not loaded: walking"):
        init_service(_init_ctx(plugins, DiffServiceConfig()))
    plugins.add(_differ_plugin("walking", object()))
    with pytest.raises(errdefs.InvalidArgument, match="does not implement"):
        init_service(_init_ctx(plugins, DiffServiceConfig()))


def test_diff_service_default_config_is_containerds() -> None:
    assert DiffServiceConfig().default == ("walking",)


# --- the gRPC adapter -------------------------------------------------------------


def test_grpc_apply_and_diff_pass_requests_through() -> None:
    fake = FakeDiffer(result=OUT)
    service = DiffAPI(fake)
    mounts = [Mount("bind", "/x", ("rbind", "rw"))]

    async def go() -> tuple[pb.ApplyResponse, pb.DiffResponse]:
        applied = await service.apply(
            pb.ApplyRequest(diff=descriptor_to_pb(DESC), mounts=list_to_pb(mounts)), Call()
        )
        diffed = await service.diff(
            pb.DiffRequest(
                left=list_to_pb(mounts),
                right=list_to_pb(mounts),
                media_type=MEDIA_TYPE_LAYER,
                ref="r",
                labels={"k": "v"},
            ),
            Call(),
        )
        return applied, diffed

    applied, diffed = asyncio.run(go())
    assert applied.applied == descriptor_to_pb(OUT)
    assert diffed.diff == descriptor_to_pb(OUT)
    assert fake.calls == [
        ("apply", (DESC, mounts), {"payloads": None}),
        (
            "compare",
            (mounts, mounts),
            {"media_type": MEDIA_TYPE_LAYER, "ref": "r", "labels": {"k": "v"}},
        ),
    ]


def test_grpc_errors_carry_the_differs_code() -> None:
    api = DiffAPI(FakeDiffer(error=errdefs.NotImplemented("unsupported diff media type: x")))
    diff = next(m for m in api.methods() if m.name.endswith("/Diff"))
    with pytest.raises(Status) as excinfo:
        asyncio.run(edge.unary(diff, pb.DiffRequest(media_type="x"), Call()))
    assert (excinfo.value.name, excinfo.value.message) == (
        "UNIMPLEMENTED",
        "unsupported diff media type: x: not implemented",
    )


# --- mounts -------------------------------------------------------------------------


def test_bind_source_recognises_bind_mounts_only() -> None:
    assert bind_source(Mount("bind", "/a", ("rbind", "rw"))) == (
        Path("/a"),
        False,
    )
    assert bind_source(Mount("none", "/a", ("bind", "ro")))[1] is True  # type: ignore[index]
    assert bind_source(Mount("overlay", "overlay", ("lowerdir=/a",))) is None
    assert bind_source(Mount("bind", "/a", ("rbind",), target="sub")) is None


# --- worker plumbing -----------------------------------------------------------------


def test_run_blocking_cancellation_stops_the_worker_before_returning() -> None:
    started, finished = threading.Event(), threading.Event()

    def work(cancelled: threading.Event) -> None:
        started.set()
        cancelled.wait(5)
        finished.set()

    async def go() -> None:
        task = asyncio.ensure_future(run_blocking(work))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished.is_set()

    asyncio.run(go())


def test_digest_reader_hashes_everything_read_and_stops_when_cancelled() -> None:
    data = bytes(range(256)) * 100
    cancelled = threading.Event()
    reader = DigestReader(io.BytesIO(data), cancelled)
    buf = bytearray(1000)
    assert reader.readinto(buf) == 1000
    reader.drain()
    assert reader.count == len(data)
    assert reader.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    cancelled.set()
    with pytest.raises(errdefs.Canceled):
        reader.read(1)


def test_loop_writer_and_reader_at_stream_cross_to_the_loop() -> None:
    data = bytes(range(256)) * (CHUNK // 128)  # two chunks
    received: list[bytes] = []

    async def write(chunk: bytes) -> None:
        received.append(chunk)

    async def read_at(offset: int, size: int) -> bytes:
        return data[offset : offset + size]

    def work(loop: asyncio.AbstractEventLoop) -> bytes:
        sink = LoopWriter(write, loop)
        for i in range(0, len(data), 1000):
            sink.write(data[i : i + 1000])
        sink.finish()
        src = ReaderAtStream(read_at, len(data), loop)
        return b"".join(iter(lambda: src.read(300_000), b""))

    async def go() -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(work, loop)

    assert asyncio.run(go()) == data
    assert b"".join(received) == data
    assert all(len(c) >= CHUNK for c in received[:-1])
