"""The pull core (:mod:`pycontainerd.distribution.pull`) on the local content
store against an in-process registry: labels at commit, a partial ingest
resumed by Range, the layer-sink hook (every byte, then close; abort on a
failure), unpack jobs that see each layer once it is in, and a failed blob
that leaves no ingest, no blob and no image record."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import random
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from pycontainerd import errdefs, leases
from pycontainerd import platforms as pf
from pycontainerd.content.local import LocalStore, MemoryLabelStore
from pycontainerd.distribution import pull as pulling
from pycontainerd.distribution.push import push
from pycontainerd.images import Descriptor, Image
from pycontainerd.metadata import Database, LeaseManager
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.images import ImageStore
from pycontainerd.namespaces import namespace
from pycontainerd.remotes import Resolver
from tests.support.fault_registry import Fault, FaultRegistry, fault_registry

pytestmark = pytest.mark.unit

T = TypeVar("T")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
AMD64 = pf.only(pf.parse("linux/amd64"))


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def desc(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data)}


class TwoLayerImage:
    """An index with one linux/amd64 manifest of two gzip layers."""

    def __init__(self) -> None:
        # Incompressible, so the gzip layers are big enough to cut and resume.
        tars = [random.Random(i).randbytes(300_000) for i in (1, 2)]
        self.layers = [gzip.compress(t, mtime=0) for t in tars]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]},
        }
        self.config = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc(OCI_CONFIG, self.config),
            "layers": [desc(OCI_LAYER_GZIP, layer) for layer in self.layers],
        }
        self.manifest = json.dumps(manifest).encode()
        entry = desc(OCI_MANIFEST, self.manifest)
        entry["platform"] = {"os": "linux", "architecture": "amd64"}
        other = {
            "mediaType": OCI_MANIFEST,
            "digest": sha(b"absent"),
            "size": 6,
            "platform": {"os": "linux", "architecture": "s390x"},
        }
        self.index = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry, other]}
        ).encode()

    def registry(self, fault: Fault = Fault.NONE, fault_digest: str = "") -> FaultRegistry:
        manifests = {
            "v1": (OCI_INDEX, self.index),
            sha(self.index): (OCI_INDEX, self.index),
            sha(self.manifest): (OCI_MANIFEST, self.manifest),
        }
        blobs = {sha(b): b for b in (self.config, *self.layers)}
        return FaultRegistry("app", manifests, blobs, fault, fault_digest)


class MemoryImages:
    def __init__(self) -> None:
        self.records: dict[str, Image] = {}

    async def create(self, image: Image) -> Image:
        if image.name in self.records:
            raise errdefs.AlreadyExists(f"image {image.name}")
        self.records[image.name] = image
        return image

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        if image.name not in self.records:
            raise errdefs.NotFound(f"image {image.name}")
        self.records[image.name] = image
        return image


class RecordingSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.aborted: BaseException | None = None

    async def write(self, chunk: bytes) -> None:
        self.data += chunk

    async def close(self) -> None:
        self.closed = True

    async def abort(self, error: BaseException) -> None:
        self.aborted = error


def store_at(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "content", labels=MemoryLabelStore())


def test_pull_writes_every_blob_with_containerd_labels_and_saves_the_record(
    tmp_path: Path,
) -> None:
    image = TwoLayerImage()
    store, images = store_at(tmp_path), MemoryImages()
    events: list[pulling.Progress] = []

    async def main() -> None:
        async with fault_registry(image.registry()) as reg, Resolver(plain_http=True) as r:
            ref = f"{reg.host}/app:v1"
            saved = await pulling.pull(
                r, ref, store, images, platform=AMD64, progress=events.append
            )
            assert saved.name == ref and saved.target.digest == sha(image.index)
            source = "containerd.io/distribution.source.127.0.0.1"
            index = await store.info(sha(image.index))
            assert index.labels[source] == "app"
            assert index.labels["containerd.io/gc.ref.content.m.0"] == sha(image.manifest)
            assert index.labels["containerd.io/gc.ref.content.m.1"] == sha(b"absent")
            manifest = await store.info(sha(image.manifest))
            assert manifest.labels["containerd.io/gc.ref.content.config"] == sha(image.config)
            assert manifest.labels["containerd.io/gc.ref.content.l.1"] == sha(image.layers[1])
            for layer in image.layers:
                assert (await store.info(sha(layer))).labels[source] == "app"
            # The s390x manifest was not followed.
            assert not any(p == f"/v2/app/manifests/{sha(b'absent')}" for _, p, _ in reg.requests)
            # Pulled again: everything exists, nothing is fetched.
            before = len(reg.requests)
            await pulling.pull(r, ref, store, images, platform=AMD64, progress=events.append)
            assert all(m == "HEAD" for m, _, _ in reg.requests[before:])

    run(main())
    assert {e.ref.split("-", 1)[0] for e in events if e.state == "done"} == {
        "index",
        "manifest",
        "config",
        "layer",
    }
    assert [e.state for e in events if e.ref == "layer-" + sha(image.layers[0])][-1] == "exists"


def test_layer_sink_gets_every_byte_and_unpack_jobs_see_layers_in_order(tmp_path: Path) -> None:
    image = TwoLayerImage()
    store = store_at(tmp_path)
    sinks: dict[str, RecordingSink] = {}
    applied: list[int] = []

    async def sink_for(layer: Descriptor) -> RecordingSink:
        return sinks.setdefault(layer.digest, RecordingSink())

    class Unpacker:
        async def unpack(self, job: pulling.UnpackJob) -> None:
            assert [layer.diff_id for layer in job.layers] == job.image_config.diff_ids
            for i, layer in enumerate(job.layers):
                await job.fetched(i)
                assert (await store.info(layer.blob.digest)).size == layer.blob.size
                applied.append(i)

    async def main() -> None:
        async with fault_registry(image.registry()) as reg, Resolver(plain_http=True) as r:
            await pulling.fetch(
                r,
                f"{reg.host}/app:v1",
                store,
                platform=AMD64,
                layer_sink=sink_for,
                unpacker=Unpacker(),
            )

    run(main())
    assert applied == [0, 1]
    for layer in image.layers:
        sink = sinks[sha(layer)]
        assert bytes(sink.data) == layer and sink.closed and sink.aborted is None


def test_partial_ingest_is_resumed_with_a_range_and_gets_no_sink(tmp_path: Path) -> None:
    image = TwoLayerImage()
    store = store_at(tmp_path)
    layer = image.layers[0]
    sinks: list[str] = []

    async def sink_for(d: Descriptor) -> None:
        sinks.append(d.digest)

    async def main() -> None:
        ref = "layer-" + sha(layer)
        writer = await store.writer(ref, total=len(layer), expected=sha(layer))
        await writer.write(layer[:1000])
        await writer.close()
        async with fault_registry(image.registry()) as reg, Resolver(plain_http=True) as r:
            await pulling.fetch(r, f"{reg.host}/app:v1", store, platform=AMD64, layer_sink=sink_for)
            ranges = [rng for _, p, rng in reg.requests if p.endswith(sha(layer))]
            assert ranges == ["bytes=1000-"], reg.requests
        assert (await store.info(sha(layer))).size == len(layer)

    run(main())
    assert sinks == [sha(image.layers[1])]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.STATUS_500, errdefs.Unavailable),
        (Fault.EXTRA, errdefs.FailedPrecondition),
        (Fault.BAD_DIGEST, errdefs.FailedPrecondition),
        (Fault.CUT_NO_RANGE, errdefs.Unavailable),
    ],
)
def test_a_failed_layer_leaves_no_blob_no_ingest_and_no_record(
    tmp_path: Path, fault: Fault, error: type[errdefs.ContainerdError]
) -> None:
    image = TwoLayerImage()
    bad = sha(image.layers[1])
    store, images = store_at(tmp_path), MemoryImages()
    sinks: list[RecordingSink] = []

    async def sink_for(d: Descriptor) -> RecordingSink:
        sinks.append(RecordingSink())
        return sinks[-1]

    async def main() -> None:
        async with (
            fault_registry(image.registry(fault, bad)) as reg,
            Resolver(plain_http=True) as r,
        ):
            with pytest.raises(error):
                await pulling.pull(
                    r, f"{reg.host}/app:v1", store, images, platform=AMD64, layer_sink=sink_for
                )
        with pytest.raises(errdefs.NotFound):
            await store.info(bad)
        assert await store.list_statuses() == []

    run(main())
    assert images.records == {}
    assert any(s.aborted is not None for s in sinks)
    assert not any(s.closed and s.aborted for s in sinks)


def test_manifest_over_the_cap_is_refused_before_it_is_fetched(tmp_path: Path) -> None:
    image = TwoLayerImage()
    huge = {"mediaType": OCI_MANIFEST, "digest": sha(b"huge"), "size": 5 << 20}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [huge]}).encode()
    registry = image.registry()
    registry.manifests["v1"] = registry.manifests[sha(index)] = (OCI_INDEX, index)
    store = store_at(tmp_path)

    async def main() -> None:
        async with fault_registry(registry) as reg, Resolver(plain_http=True) as r:
            with pytest.raises(errdefs.ResourceExhausted, match="over the 4194304-byte limit"):
                await pulling.fetch(r, f"{reg.host}/app:v1", store)
            assert not any(sha(b"huge") in p for _, p, _ in reg.requests)

    run(main())


def test_platform_without_a_manifest_is_not_found(tmp_path: Path) -> None:
    image = TwoLayerImage()

    async def main() -> None:
        async with fault_registry(image.registry()) as reg, Resolver(plain_http=True) as r:
            with pytest.raises(errdefs.NotFound, match="no match for platform"):
                await pulling.fetch(
                    r,
                    f"{reg.host}/app:v1",
                    store_at(tmp_path),
                    platform=pf.only(pf.parse("linux/arm64")),
                )

    run(main())


def test_distribution_source_values_merge_sorted_without_duplicates() -> None:
    assert pulling.append_distribution_source("", "b") == "b"
    assert pulling.append_distribution_source("c,a", "b") == "a,b,c"
    assert pulling.append_distribution_source("a,b", "a") == "a,b"
    assert pulling.distribution_source_label("docker.io/library/busybox:latest") == (
        "containerd.io/distribution.source.docker.io",
        "library/busybox",
    )


def test_ref_keys_are_containerds() -> None:
    d = "sha256:" + "0" * 64
    assert pulling.ref_key(Descriptor(OCI_INDEX, d, 1)) == "index-" + d
    assert pulling.ref_key(Descriptor(OCI_MANIFEST, d, 1)) == "manifest-" + d
    assert pulling.ref_key(Descriptor(OCI_CONFIG, d, 1)) == "config-" + d
    assert pulling.ref_key(Descriptor(OCI_LAYER_GZIP, d, 1)) == "layer-" + d
    assert pulling.ref_key(Descriptor("application/x-other", d, 1)) == "unknown-" + d


def test_push_uploads_children_first_and_tags_the_root(tmp_path: Path) -> None:
    """Push against the fault registry is refused (read-only), so check the
    order against a recording pusher instead."""
    image = TwoLayerImage()
    store = store_at(tmp_path)
    pushed: list[tuple[str, bool]] = []

    class Pusher:
        async def push(
            self,
            d: Descriptor,
            data: object,
            *,
            tag: bool = False,
            source_repository: object = None,
        ) -> str:
            if callable(data):
                body = b"".join([c async for c in data()])
            else:
                assert isinstance(data, bytes)
                body = data
            assert sha(body) == d.digest
            pushed.append((d.digest, tag))
            return "uploaded"

    async def main() -> None:
        async with fault_registry(image.registry()) as reg, Resolver(plain_http=True) as r:
            record = await pulling.fetch(r, f"{reg.host}/app:v1", store, platform=AMD64)
        from pycontainerd import platforms as pf

        await push(
            Pusher(),
            "example.com/app:v2",
            store,
            record.target,
            platform=pf.only(pf.parse("linux/amd64")),
        )

    run(main())
    order = [digest for digest, _ in pushed]
    assert order.index(sha(image.manifest)) > max(order.index(sha(b)) for b in image.layers)
    assert pushed[-1] == (sha(image.index), True)


def test_a_connection_cut_mid_layer_is_resumed(tmp_path: Path) -> None:
    image = TwoLayerImage()
    cut = sha(image.layers[1])
    store = store_at(tmp_path)

    async def main() -> None:
        async with (
            fault_registry(image.registry(Fault.CUT, cut)) as reg,
            Resolver(plain_http=True) as r,
        ):
            await pulling.fetch(r, f"{reg.host}/app:v1", store, platform=AMD64)
            ranges = [rng for _, p, rng in reg.requests if p.endswith(cut)]
            assert ranges == ["", f"bytes={len(image.layers[1]) // 2}-"]
        assert (await store.info(cut)).size == len(image.layers[1])

    run(main())


def test_distribution_source_hosts_drop_the_port_as_containerd_does() -> None:
    assert pulling.hostname("127.0.0.1:5000") == "127.0.0.1"
    assert pulling.hostname("[::1]:5000") == "::1"
    assert pulling.hostname("registry.example.com") == "registry.example.com"
    assert pulling.distribution_source_label("localhost:5000/a/b:c") == (
        "containerd.io/distribution.source.localhost",
        "a/b",
    )


def test_the_daemons_metadata_stores_take_a_pull_under_a_lease(tmp_path: Path) -> None:
    """The daemon side (the Transfer service) runs the same core on its
    namespaced metadata stores: blobs, labels and the record land in the
    namespace, held by the pull's lease; a failed pull leaves nothing."""
    image = TwoLayerImage()
    db = Database(tmp_path / "meta" / "meta.db")
    store = ContentStore(db, LocalStore(tmp_path / "content"))
    records = ImageStore(db)
    manager = LeaseManager(db)

    @contextlib.asynccontextmanager
    async def pull_lease() -> AsyncIterator[None]:
        lease = await manager.create(leases.random_id())
        with leases.lease(lease.id):
            try:
                yield
            finally:
                await manager.delete(lease.id)

    async def main() -> None:
        with namespace("transfer"):
            bad = sha(image.layers[1])
            async with (
                fault_registry(image.registry(Fault.BAD_DIGEST, bad)) as reg,
                Resolver(plain_http=True) as r,
            ):
                with pytest.raises(errdefs.FailedPrecondition):
                    await pulling.pull(
                        r, f"{reg.host}/app:v1", store, records, platform=AMD64, lease=pull_lease
                    )
                assert await store.list_statuses() == []
                assert await records.list() == []
                reg.fault = Fault.NONE
                saved = await pulling.pull(
                    r, f"{reg.host}/app:v1", store, records, platform=AMD64, lease=pull_lease
                )
            assert records.get(saved.name).target.digest == sha(image.index)
            layer = await store.info(bad)
            assert layer.labels["containerd.io/distribution.source.127.0.0.1"] == "app"
            assert await manager.list() == []
        with namespace("other"), pytest.raises(errdefs.NotFound):
            await store.info(bad)

    try:
        run(main())
    finally:
        db.close()
