"""Walks over an image's content graph survive indexes nested thousands deep.

Found by the fuzz pass (tests/fuzz/test_parsers.py): every walk recursed
once per level and died with RecursionError near 1,000 levels, a crash a
hostile registry or archive could cause with a few kilobytes of indexes.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from pycontainerd import platforms
from pycontainerd.images import Descriptor, handlers
from pycontainerd.images import manifest as mf
from pycontainerd.images import mediatypes as mt

pytestmark = pytest.mark.unit

DEPTH = 3000


def _blob(blobs: dict[str, bytes], media_type: str, doc: object) -> Descriptor:
    data = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return Descriptor(media_type, digest, len(data))


def _chain() -> tuple[dict[str, bytes], Descriptor, Descriptor, Descriptor]:
    """(blobs, top index, the manifest at the bottom, its config)."""
    blobs: dict[str, bytes] = {}
    layer = Descriptor(mt.OCI_LAYER_GZIP, "sha256:" + "a" * 64, 10)
    config = _blob(
        blobs,
        mt.OCI_CONFIG,
        {"os": "linux", "architecture": "amd64", "rootfs": {"diff_ids": ["sha256:" + "b" * 64]}},
    )
    manifest = _blob(
        blobs,
        mt.OCI_MANIFEST,
        {
            "schemaVersion": 2,
            "config": mf.descriptor_to_json(config),
            "layers": [mf.descriptor_to_json(layer)],
        },
    )
    top = manifest
    for _ in range(DEPTH):
        top = _blob(
            blobs, mt.OCI_INDEX, {"schemaVersion": 2, "manifests": [mf.descriptor_to_json(top)]}
        )
    return blobs, top, manifest, config


def test_walks_follow_indexes_nested_deeper_than_the_recursion_limit() -> None:
    blobs, top, manifest, config = _chain()

    def read(desc: Descriptor) -> bytes:
        return mf.verify_blob(desc, blobs[desc.digest])

    amd64 = platforms.only(platforms.Platform("linux", "amd64"))
    found, parsed = mf.resolve_manifest(read, top, amd64)
    assert found == manifest and parsed.config == config
    assert mf.platforms_of(read, top) == [platforms.Platform("linux", "amd64")]
    reachable = handlers.reachable(read, top)
    assert len(reachable) == DEPTH + 3  # the indexes, the manifest, its config and layer
    assert reachable[0] == top and reachable[-1].media_type == mt.OCI_LAYER_GZIP
    size = handlers.image_size(read, top, amd64)
    assert size == sum(len(b) for b in blobs.values()) + 10


def test_deep_walks_keep_the_order_of_a_depth_first_walk() -> None:
    blobs: dict[str, bytes] = {}
    leaves = [
        _blob(blobs, mt.OCI_CONFIG, {"os": "linux", "architecture": arch})
        for arch in ("amd64", "arm64", "s390x")
    ]
    inner = _blob(
        blobs,
        mt.OCI_INDEX,
        {"manifests": [mf.descriptor_to_json(leaves[0]), mf.descriptor_to_json(leaves[1])]},
    )
    top = _blob(
        blobs,
        mt.OCI_INDEX,
        {"manifests": [mf.descriptor_to_json(inner), mf.descriptor_to_json(leaves[2])]},
    )

    def read(desc: Descriptor) -> bytes:
        return blobs[desc.digest]

    assert [d.digest for d in handlers.reachable(read, top)] == [
        top.digest,
        inner.digest,
        leaves[0].digest,
        leaves[1].digest,
        leaves[2].digest,
    ]
    assert [p.architecture for p in mf.platforms_of(read, top)] == ["amd64", "arm64", "s390x"]
