"""Manifests, indexes and configs: capped parsing, platform resolution, walks."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping

import pytest

from pycontainerd import errdefs, platforms
from pycontainerd.images import Descriptor
from pycontainerd.images import mediatypes as mt
from pycontainerd.images.handlers import image_size, reachable
from pycontainerd.images.manifest import (
    MAX_MANIFEST_SIZE,
    children,
    descriptor_from_json,
    descriptor_to_json,
    dumps,
    gc_labels,
    parse_config,
    parse_index,
    parse_manifest,
    platforms_of,
    resolve_manifest,
    verify_blob,
)
from pycontainerd.platforms import Platform

pytestmark = pytest.mark.unit


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Store:
    """Blobs in memory, read the way the client reads small blobs."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.reads = 0

    def put(self, media_type: str, doc: object, **extra: object) -> Descriptor:
        data = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
        self.blobs[_sha(data)] = data
        d = Descriptor(media_type, _sha(data), len(data))
        return descriptor_from_json({**descriptor_to_json(d), **extra})

    def read_sync(self, desc: Descriptor) -> bytes:
        self.reads += 1
        try:
            return verify_blob(desc, self.blobs[desc.digest])
        except KeyError:
            raise errdefs.NotFound(f"content digest {desc.digest}: not found") from None

    async def read(self, desc: Descriptor) -> bytes:
        return self.read_sync(desc)


def _config(store: Store, arch: str, os_name: str = "linux", variant: str = "") -> Descriptor:
    doc = {"architecture": arch, "os": os_name, "rootfs": {"type": "layers", "diff_ids": []}}
    if variant:
        doc["variant"] = variant
    return store.put(mt.OCI_CONFIG, doc)


def _manifest(
    store: Store, config: Descriptor, layer_size: int = 100, **extra: object
) -> Descriptor:
    layer = {
        "mediaType": mt.OCI_LAYER_GZIP,
        "digest": _sha(b"layer" + config.digest.encode()),
        "size": layer_size,
    }
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": descriptor_to_json(config),
        "layers": [layer],
    }
    return store.put(mt.OCI_MANIFEST, doc, **extra)


def _index(
    store: Store, entries: list[Descriptor], annotations: Mapping[str, str] | None = None
) -> Descriptor:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [descriptor_to_json(e) for e in entries],
    }
    return store.put(mt.OCI_INDEX, doc)


def _multi(store: Store) -> tuple[Descriptor, dict[str, Descriptor]]:
    by_arch = {}
    entries = []
    for arch, variant in (("arm", "v7"), ("amd64", ""), ("arm64", "v8")):
        m = _manifest(store, _config(store, arch, variant=variant))
        p = Platform("linux", arch, variant)
        entry = descriptor_from_json({**descriptor_to_json(m), "platform": p.to_json()})
        entries.append(entry)
        by_arch[arch] = entry
    return _index(store, entries), by_arch


# -- parsing -------------------------------------------------------------------------


def test_parse_manifest_reads_config_and_layers() -> None:
    store = Store()
    m_desc = _manifest(store, _config(store, "amd64"))
    m = parse_manifest(store.blobs[m_desc.digest], mt.OCI_MANIFEST)
    assert m.media_type == mt.OCI_MANIFEST
    assert m.config.media_type == mt.OCI_CONFIG
    assert [x.media_type for x in m.layers] == [mt.OCI_LAYER_GZIP]


def test_documents_over_the_cap_are_refused_before_parsing() -> None:
    huge = b"{" + b" " * MAX_MANIFEST_SIZE + b"}"
    for parse in (parse_manifest, parse_index, parse_config):
        with pytest.raises(errdefs.InvalidArgument, match="limit"):
            parse(huge)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "invalid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"config": {"digest": "sha256:abc", "size": 1}}', "digest"),
        (b'{"config": {"digest": "sha256:' + b"a" * 64 + b'", "size": -1}}', "size"),
        (b'{"layers": []}', "missing config"),
        (b'{"manifests": [{}], "config": {}}', "expected manifest but found index"),
        (b'{"fsLayers": [{}]}', "schema 1"),
    ],
)
def test_bad_manifests_get_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=message):
        parse_manifest(data, mt.OCI_MANIFEST)


def test_an_index_that_is_really_a_manifest_is_refused() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="expected index but found manifest"):
        parse_index(json.dumps({"mediaType": mt.DOCKER_MANIFEST, "config": {}}).encode())


def test_parse_config_reads_diff_ids_and_platform() -> None:
    diff = "sha256:" + "b" * 64
    cfg = parse_config(
        json.dumps(
            {"architecture": "arm", "os": "linux", "variant": "v6", "rootfs": {"diff_ids": [diff]}}
        ).encode()
    )
    assert cfg.diff_ids == [diff]
    assert cfg.platform == Platform("linux", "arm", "v6")
    with pytest.raises(errdefs.InvalidArgument, match="diff id"):
        parse_config(b'{"rootfs": {"diff_ids": ["nope"]}}')


def test_descriptor_json_round_trips_in_go_field_order() -> None:
    d = Descriptor(
        mt.OCI_MANIFEST,
        "sha256:" + "c" * 64,
        7,
        {"b": "2", "a": "1"},
        Platform("linux", "arm64", "v8"),
    )
    doc = descriptor_to_json(d)
    assert list(doc) == ["mediaType", "digest", "size", "annotations", "platform"]
    assert list(doc["annotations"]) == ["a", "b"]  # type: ignore[call-overload]
    assert descriptor_from_json(doc) == d


def test_dumps_writes_compact_json_with_gos_html_escapes() -> None:
    assert dumps({"a": "<&>", "b": [1]}) == b'{"a":"\\u003c\\u0026\\u003e","b":[1]}'


def test_verify_blob_checks_size_and_digest() -> None:
    d = Descriptor("", _sha(b"abc"), 3)
    assert verify_blob(d, b"abc") == b"abc"
    with pytest.raises(errdefs.FailedPrecondition):
        verify_blob(d, b"abd")
    with pytest.raises(errdefs.FailedPrecondition):
        verify_blob(d, b"ab")


# -- walking -------------------------------------------------------------------------


def test_resolve_picks_the_host_manifest_from_an_index() -> None:
    store = Store()
    idx, by_arch = _multi(store)
    desc, m = asyncio.run(resolve_manifest(store.read, idx, platforms.only(platforms.default())))
    assert desc.digest == by_arch["amd64"].digest
    assert desc.platform == Platform("linux", "amd64")
    assert m.config.media_type == mt.OCI_CONFIG


def test_resolve_works_with_a_sync_reader_too() -> None:
    store = Store()
    idx, by_arch = _multi(store)
    matcher = platforms.only(Platform("linux", "arm", "v7"))
    desc, _ = resolve_manifest(store.read_sync, idx, matcher)
    assert desc.digest == by_arch["arm"].digest


def test_resolve_prefers_the_better_platform() -> None:
    store = Store()
    idx, by_arch = _multi(store)
    # arm64 hosts also run arm/v7: the arm64 manifest must still win.
    desc, _ = resolve_manifest(store.read_sync, idx, platforms.only(platforms.parse("linux/arm64")))
    assert desc.digest == by_arch["arm64"].digest


def test_resolve_without_a_match_is_not_found() -> None:
    store = Store()
    idx, _ = _multi(store)
    with pytest.raises(errdefs.NotFound, match="no match for platform in manifest"):
        resolve_manifest(store.read_sync, idx, platforms.only(Platform("windows", "amd64")))


def test_resolve_checks_the_config_when_an_entry_has_no_platform() -> None:
    store = Store()
    arm = _manifest(store, _config(store, "arm64"))
    idx = _index(store, [arm])
    with pytest.raises(errdefs.NotFound):
        resolve_manifest(store.read_sync, idx, platforms.only(platforms.default()))
    # The target itself is taken whatever its platform.
    desc, _ = resolve_manifest(store.read_sync, arm, platforms.only(platforms.default()))
    assert desc == arm


def test_resolve_refuses_oversized_manifests_without_reading() -> None:
    store = Store()
    big = Descriptor(mt.OCI_MANIFEST, "sha256:" + "d" * 64, MAX_MANIFEST_SIZE + 1)
    with pytest.raises(errdefs.InvalidArgument, match="limit"):
        resolve_manifest(store.read_sync, big, platforms.any_platform())
    assert store.reads == 0


def test_children_and_gc_labels_follow_containerds_keys() -> None:
    store = Store()
    m = _manifest(store, _config(store, "amd64"))
    kids = children(store.read_sync, m)
    assert [k.media_type for k in kids] == [mt.OCI_CONFIG, mt.OCI_LAYER_GZIP]
    assert gc_labels(m, kids) == {
        "containerd.io/gc.ref.content.config": kids[0].digest,
        "containerd.io/gc.ref.content.l.0": kids[1].digest,
    }
    idx, _ = _multi(store)
    labels = gc_labels(idx, children(store.read_sync, idx))
    assert sorted(labels) == [f"containerd.io/gc.ref.content.m.{i}" for i in range(3)]
    assert children(store.read_sync, kids[1]) == []  # layers are never read


def test_platforms_of_lists_index_entries_or_the_config() -> None:
    store = Store()
    idx, _ = _multi(store)
    found = platforms_of(store.read_sync, idx)
    assert sorted(platforms.format(p) for p in found) == [
        "linux/amd64",
        "linux/arm/v7",
        "linux/arm64/v8",
    ]
    single = _manifest(store, _config(store, "arm", variant="v6"))
    # As ctr 1.6: a config gives OS and architecture (normalised), not its variant.
    assert platforms_of(store.read_sync, single) == [Platform("linux", "arm", "v7")]


def test_image_size_counts_one_platform() -> None:
    store = Store()
    idx, by_arch = _multi(store)
    m = by_arch["amd64"]
    manifest = parse_manifest(store.blobs[m.digest])
    expected = idx.size + m.size + manifest.config.size + sum(x.size for x in manifest.layers)
    assert image_size(store.read_sync, idx, platforms.only(platforms.default())) == expected


def test_reachable_filters_platforms_and_dedupes() -> None:
    store = Store()
    idx, by_arch = _multi(store)
    everything = reachable(store.read_sync, idx)
    only_amd64 = reachable(store.read_sync, idx, platforms.only_strict(platforms.default()))
    assert len({d.digest for d in everything}) == len(everything)
    assert by_arch["arm"].digest in {d.digest for d in everything}
    assert {d.digest for d in only_amd64} >= {idx.digest, by_arch["amd64"].digest}
    assert by_arch["arm"].digest not in {d.digest for d in only_amd64}


def test_walks_need_an_await_with_an_async_reader_even_without_reads() -> None:
    store = Store()
    layer = Descriptor(mt.OCI_LAYER_GZIP, "sha256:" + "e" * 64, 1)

    async def run() -> tuple[list[Descriptor], list[Descriptor]]:
        m = _manifest(store, _config(store, "amd64"))
        return await children(store.read, layer), await children(store.read, m)

    none, two = asyncio.run(run())
    assert none == [] and len(two) == 2


def test_a_failed_read_propagates_from_either_reader() -> None:
    store = Store()
    missing = Descriptor(mt.OCI_MANIFEST, "sha256:" + "f" * 64, 10)
    with pytest.raises(errdefs.NotFound):
        children(store.read_sync, missing)
    with pytest.raises(errdefs.NotFound):
        asyncio.run(resolve_manifest(store.read, missing, platforms.any_platform()))


def test_image_size_of_a_missing_image_is_what_was_counted() -> None:
    store = Store()
    idx, by_arch = _multi(store)
    del store.blobs[by_arch["amd64"].digest]
    expected = idx.size + by_arch["amd64"].size  # as ctr: counted before the read fails
    matcher = platforms.only(platforms.default())
    assert image_size(store.read_sync, idx, matcher) == expected
    assert asyncio.run(image_size(store.read, idx, matcher)) == expected
