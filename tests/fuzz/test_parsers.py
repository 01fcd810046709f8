"""Fuzz the small parsers that meet untrusted text: platforms, image references
(:mod:`pycontainerd.reference`), digests, and the manifest / index / config
decoders with the walks over them.

Each accepts its input or refuses it with a typed error, and what it accepts
is stable: parsing what it printed gives the same thing again.  The walks
over a content graph (an index of indexes of manifests, each blob verified
against its digest as a real store verifies it) end with a result or a
typed error however the graph is shaped, deep chains included.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass

import pytest
from hypothesis import strategies as st

from pycontainerd import digest, errdefs, platforms, reference
from pycontainerd.images import Descriptor, handlers
from pycontainerd.images import manifest as mf
from pycontainerd.images import mediatypes as mt
from tests.fuzz import _harness

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

# -- platforms ----------------------------------------------------------------------------

_PLATFORM_WORDS = [
    "linux",
    "windows",
    "darwin",
    "macos",
    "amd64",
    "x86_64",
    "x86-64",
    "i386",
    "386",
    "arm",
    "armhf",
    "armel",
    "arm64",
    "aarch64",
    "v5",
    "v6",
    "v7",
    "v8",
    "8",
    "7",
    "v1",
    "s390x",
    "ppc64le",
    "riscv64",
    "Linux",
    "ARM64",
    "*",
    "",
    "unknown",
    "wasm",
]
PLATFORM_SPECS = st.one_of(
    st.lists(st.sampled_from(_PLATFORM_WORDS), min_size=1, max_size=4).map("/".join),
    st.text(max_size=20),
    st.text(alphabet="abcdefv0123456789_-/*. ", max_size=20),
)
PLATFORM_JSON = (
    st.fixed_dictionaries(
        {},
        optional={
            "os": st.sampled_from(_PLATFORM_WORDS) | st.integers() | st.none(),
            "architecture": st.sampled_from(_PLATFORM_WORDS) | st.lists(st.text(max_size=2)),
            "variant": st.sampled_from(_PLATFORM_WORDS),
            "os.version": st.text(max_size=8),
            "os.features": st.lists(st.text(max_size=5), max_size=2) | st.text(max_size=3),
        },
    )
    | st.none()
    | st.text(max_size=4)
    | st.lists(st.integers(), max_size=2)
)


def check_platform(case: tuple[str, object, str]) -> None:
    spec, obj, other = case
    try:
        p = platforms.parse(spec)
    except errdefs.InvalidArgument:
        p = None
    if p is not None:
        again = platforms.parse(platforms.format(p))
        assert again == p, f"{spec!r} -> {p} -> {platforms.format(p)!r} -> {again}"
        for matcher in (platforms.only(p), platforms.only_strict(p), platforms.ordered(p)):
            assert matcher.match(p)
    try:
        from_json = platforms.Platform.from_json(obj)
    except errdefs.InvalidArgument:
        return
    normalized = platforms.normalize(from_json)
    assert platforms.Platform.from_json(normalized.to_json()) == normalized
    with_other = [from_json, normalized]
    with contextlib.suppress(errdefs.InvalidArgument):
        with_other.append(platforms.parse(other))
    matcher = platforms.only(normalized)
    for a in with_other:
        assert isinstance(matcher.match(a), bool)
        for b in with_other:
            assert not (matcher.less(a, b) and matcher.less(b, a))


def test_platform_parsing() -> None:
    cases = st.tuples(PLATFORM_SPECS, PLATFORM_JSON, PLATFORM_SPECS)
    _harness.run("platform-parse", cases, check_platform, short=300)


# -- references ---------------------------------------------------------------------------

SHA = "sha256:" + hashlib.sha256(b"x").hexdigest()
_REF_PARTS = st.sampled_from(
    [
        "busybox",
        "library",
        "docker.io",
        "index.docker.io",
        "localhost",
        "localhost:5000",
        "registry.example.com:443",
        "a",
        "a-b",
        "a__b",
        "a.b",
        "UPPER",
        "x" * 130,
        "",
        "..",
        "-a",
        "1.2.3.4:1",
        "[::1]:5000",
    ]
)
_TAGS = st.sampled_from(["", ":latest", ":v1.2-rc_3", ":" + "t" * 128, ":" + "t" * 129, ":-x", ":"])
_DIGESTS = st.sampled_from(["", "@" + SHA, "@sha256:abc", "@" + SHA.upper(), "@md5:" + "0" * 32])
REFS = st.one_of(
    st.tuples(st.lists(_REF_PARTS, min_size=1, max_size=4).map("/".join), _TAGS, _DIGESTS).map(
        "".join
    ),
    st.text(max_size=30),
    st.text(alphabet="abc019./:@_-ABC", max_size=30),
)


def check_reference(ref: str) -> None:
    """distribution's guarantees: what is printed parses back to the same thing."""
    try:
        as_is = reference.parse(ref)
    except errdefs.InvalidArgument:
        pass
    else:
        assert reference.parse(str(as_is)) == as_is, f"{ref!r} -> {as_is}"
    try:
        named = reference.parse_normalized_named(ref)
    except errdefs.InvalidArgument:
        return
    assert reference.parse(str(named)) == named, f"{ref!r} -> {named} is not a full reference"
    assert reference.parse_normalized_named(str(named)) == named, f"{ref!r} -> {named} unstable"
    full = reference.normalize_docker_ref(ref)
    assert reference.normalize_docker_ref(full) == full, f"{ref!r} -> {full!r} is not stable"
    familiar = named.familiar_string
    head, sep, _ = familiar.partition("/")
    if sep and ("." in head or ":" in head or head == "localhost" or head != head.lower()):
        # docker.io/<a domain-like name>/x: distribution's FamiliarString drops
        # the domain too, and the short form then names another registry.
        return
    assert reference.parse_normalized_named(familiar) == named, f"{ref!r} -> {familiar!r}"
    assert reference.familiarize(ref) == reference.parse_docker_ref(ref).familiar_string


def test_reference_parsing() -> None:
    _harness.run("reference-parse", REFS, check_reference, short=300)


# -- digests ------------------------------------------------------------------------------

DIGESTS = st.one_of(
    st.tuples(
        st.sampled_from(["sha256", "sha384", "sha512", "md5", "SHA256", "a+b", "", "sha256+x"]),
        st.sampled_from([":"]) | st.text(max_size=2),
        st.text(alphabet="0123456789abcdefABCDEF=_-g", min_size=0, max_size=130),
    ).map("".join),
    st.text(max_size=80),
)


def check_digest(text: str) -> None:
    try:
        digest.validate(text)
    except errdefs.InvalidArgument as exc:
        assert exc.message
        return
    algorithm, _, encoded = text.partition(":")
    assert algorithm in digest.ALGORITHMS and len(encoded) == digest.ALGORITHMS[algorithm]
    assert all(c in "0123456789abcdef" for c in encoded), text


def test_digest_validation() -> None:
    _harness.run("digest-validate", DIGESTS, check_digest, short=300)


# -- manifests, indexes, configs and the walks over them --------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
MEDIA_TYPES = st.sampled_from(
    [
        mt.OCI_INDEX,
        mt.OCI_MANIFEST,
        mt.OCI_CONFIG,
        mt.OCI_LAYER_GZIP,
        mt.DOCKER_MANIFEST_LIST,
        mt.DOCKER_MANIFEST,
        mt.DOCKER_CONFIG,
        mt.DOCKER_LAYER_GZIP,
        mt.DOCKER_SCHEMA1_MANIFEST,
        "",
        "text/plain",
    ]
)


def dumps(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def desc_json(d: Descriptor) -> dict[str, object]:
    return mf.descriptor_to_json(d)


@dataclass(frozen=True)
class Node:
    """One document of a content graph, its children given by index into the
    nodes built before it (so the graph is a DAG, as digests make it)."""

    kind: str  # "index", "manifest", "config", "layer", "junk"
    media_type: str
    children: tuple[int, ...]
    platform: object
    extra: object
    lie: int  # 0: an honest descriptor; 1: wrong size; 2: wrong digest


NODES = st.builds(
    Node,
    kind=st.sampled_from(["index", "index", "manifest", "manifest", "config", "layer", "junk"]),
    media_type=MEDIA_TYPES,
    children=st.lists(st.integers(0, 1 << 16), max_size=4).map(tuple),
    platform=st.none() | PLATFORM_JSON,
    extra=JSON,
    lie=st.sampled_from([0, 0, 0, 0, 1, 2]),
)


def build(nodes: list[Node], chain: int) -> tuple[dict[str, bytes], list[Descriptor]]:
    """The blobs of a graph and a descriptor for each node; ``chain`` more
    indexes, each holding the one before, sit on top of the last node."""
    blobs: dict[str, bytes] = {}
    descs: list[Descriptor] = []

    def add(data: bytes, node: Node, platform: object) -> None:
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[dgst] = data
        size = len(data) + (1 if node.lie == 1 else 0)
        if node.lie == 2:
            dgst = "sha256:" + hashlib.sha256(data + b"!").hexdigest()
        plat = None
        if platform is not None:
            try:
                plat = platforms.Platform.from_json(platform)
            except errdefs.InvalidArgument:
                plat = None
        descs.append(Descriptor(node.media_type, dgst, size, {}, plat))

    for i, node in enumerate(nodes):
        kids = [descs[c % i] for c in node.children] if i else []
        if node.kind == "index":
            doc: object = {"schemaVersion": 2, "manifests": [desc_json(k) for k in kids]}
        elif node.kind == "manifest":
            doc = {
                "schemaVersion": 2,
                "config": desc_json(kids[0]) if kids else node.extra,
                "layers": [desc_json(k) for k in kids[1:]],
            }
        elif node.kind == "config":
            doc = {"rootfs": {"diff_ids": [k.digest for k in kids]}, "os": "linux"}
            if isinstance(node.platform, dict):
                doc.update(node.platform)
        elif node.kind == "layer":
            doc = node.extra
        else:
            add(dumps(node.extra).replace(b"{", b"[", 1), node, node.platform)
            continue
        if isinstance(doc, dict) and isinstance(node.extra, dict):
            doc = {**node.extra, **doc} if node.lie else {**doc, **node.extra}
        add(dumps(doc), node, node.platform)
    if descs and chain:
        top = descs[-1]
        for _ in range(chain):
            data = dumps({"schemaVersion": 2, "manifests": [desc_json(top)]})
            dgst = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[dgst] = data
            top = Descriptor(mt.OCI_INDEX, dgst, len(data))
            descs.append(top)
    return blobs, descs


def check_graph(case: tuple[list[Node], int, str]) -> None:
    with _harness.production_stack():
        walk_graph(*case)


def walk_graph(nodes: list[Node], chain: int, spec: str) -> None:
    blobs, descs = build(nodes, chain)

    def read(desc: Descriptor) -> bytes:
        data = blobs.get(desc.digest)
        if data is None:
            raise errdefs.NotFound(f"content {desc.digest}")
        return mf.verify_blob(desc, data)

    for data in blobs.values():
        for decode in (mf.parse_manifest, mf.parse_index):
            for media_type in ("", mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST):
                with contextlib.suppress(errdefs.InvalidArgument):
                    decode(data, media_type)
        with contextlib.suppress(errdefs.InvalidArgument):
            mf.parse_config(data)
    try:
        matcher = platforms.only(platforms.parse(spec))
    except errdefs.InvalidArgument:
        matcher = platforms.any_platform()
    for desc in descs[-3:]:
        with contextlib.suppress(errdefs.ContainerdError):
            mf.children(read, desc)
        with contextlib.suppress(errdefs.ContainerdError):
            mf.resolve_manifest(read, desc, matcher)
        with contextlib.suppress(errdefs.ContainerdError):
            mf.platforms_of(read, desc)
        with contextlib.suppress(errdefs.ContainerdError):
            handlers.reachable(read, desc, matcher)
        with contextlib.suppress(errdefs.ContainerdError):
            handlers.image_size(read, desc, matcher)
        kids = []
        with contextlib.suppress(errdefs.ContainerdError):
            kids = mf.children(read, desc)
        labels = mf.gc_labels(desc, kids)
        assert sorted(labels.values()) == sorted(k.digest for k in kids)


def test_manifest_decoders_and_walks() -> None:
    cases = st.tuples(
        st.lists(NODES, min_size=1, max_size=8),
        st.sampled_from([0] * 10 + [3, 50, 1200]),  # indexes nested that deep
        PLATFORM_SPECS,
    )
    _harness.run("manifest-decode", cases, check_graph, short=150)
