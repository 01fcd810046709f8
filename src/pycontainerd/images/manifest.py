"""Manifests, indexes and image configs: parsing them safely and walking them.

Everything here is pure or takes a :data:`ReadBlob`, so it runs on the
client (against our daemon or containerd) and in unit tests alike.  Every
document is size-capped before it is parsed and checked for the shape its
media type promises (a manifest that is really an index is refused, as
containerd refuses it), so a hostile archive or registry cannot make us
parse megabytes of JSON or mistake one kind of document for another.

:func:`resolve_manifest` picks the manifest a platform uses with
containerd's ``images.Manifest`` rules; :func:`children` and
:func:`gc_labels` give the edges of the content graph and the
``containerd.io/gc.ref.content.*`` labels that keep children alive.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast, overload

from pycontainerd import digest as digests
from pycontainerd import errdefs
from pycontainerd import platforms as pf
from pycontainerd.images import Descriptor
from pycontainerd.images import mediatypes as mt
from pycontainerd.platforms import Platform

__all__ = [
    "MAX_MANIFEST_SIZE",
    "AnyReadBlob",
    "ImageConfig",
    "Index",
    "Manifest",
    "ReadBlob",
    "SyncReadBlob",
    "Walk",
    "children",
    "descriptor_from_json",
    "descriptor_to_json",
    "drive",
    "dumps",
    "filter_platforms",
    "gc_labels",
    "load_json",
    "parse_config",
    "parse_descriptor",
    "parse_index",
    "parse_manifest",
    "platforms_of",
    "resolve_manifest",
    "sort_by_platform",
    "verify_blob",
    "walk_children",
    "walk_platforms",
    "walk_resolve",
]

#: Largest manifest, index or config we read (4 MiB, the limit registries
#: and containerd's fetchers put on manifests).
MAX_MANIFEST_SIZE = 4 << 20

#: Returns the verified bytes of a small blob (manifest, index, config).
ReadBlob = Callable[[Descriptor], Awaitable[bytes]]
#: The same, for sync callers (the generated sync client).
SyncReadBlob = Callable[[Descriptor], bytes]
AnyReadBlob = ReadBlob | SyncReadBlob

GC_REF_PREFIX = "containerd.io/gc.ref.content."


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest: one config and the layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Index:
    """An image index (manifest list): one manifest per platform, or per name."""

    media_type: str
    manifests: list[Descriptor]
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an image config we act on; ``raw`` keeps the whole JSON."""

    raw: dict[str, Any]
    diff_ids: list[str]
    platform: Platform


# -- JSON ---------------------------------------------------------------------


def dumps(obj: object) -> bytes:
    """Compact JSON as Go's encoder writes it, so digests match containerd's."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(ch, esc)
    return text.encode()


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """Decode a capped JSON object; InvalidArgument for anything else."""
    if len(data) > MAX_MANIFEST_SIZE:
        raise errdefs.InvalidArgument(
            f"{what}: {len(data)} bytes is over the {MAX_MANIFEST_SIZE}-byte limit"
        )
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidArgument(f"{what}: invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise errdefs.InvalidArgument(f"{what}: expected a JSON object")
    return doc


def _str_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise errdefs.InvalidArgument(f"{what}: annotations must map strings to strings")
    return dict(value)


def descriptor_from_json(obj: object, what: str = "descriptor") -> Descriptor:
    """A descriptor from its OCI JSON form, with a valid digest and size."""
    if not isinstance(obj, dict):
        raise errdefs.InvalidArgument(f"{what}: expected a JSON object")
    media_type, dgst, size = obj.get("mediaType", ""), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str):
        raise errdefs.InvalidArgument(f"{what}: mediaType must be a string")
    if not isinstance(dgst, str):
        raise errdefs.InvalidArgument(f"{what}: missing digest")
    try:
        digests.validate(dgst)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"{what}: digest {dgst!r}: {exc.message}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise errdefs.InvalidArgument(f"{what} {dgst}: size must be a non-negative integer")
    platform = None
    if obj.get("platform") is not None:
        try:
            platform = Platform.from_json(obj["platform"])
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"{what} {dgst}: {exc.message}") from None
    annotations = _str_map(obj.get("annotations"), f"{what} {dgst}")
    return Descriptor(media_type, dgst, size, annotations, platform)


parse_descriptor = descriptor_from_json


def descriptor_to_json(d: Descriptor) -> dict[str, object]:
    """The OCI JSON form, fields in the order Go writes them."""
    out: dict[str, object] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.annotations:
        out["annotations"] = dict(sorted(d.annotations.items()))
    if d.platform is not None:
        out["platform"] = d.platform.to_json()
    return out


def _check_kind(doc: Mapping[str, Any], media_type: str, what: str) -> None:
    """Refuse a document whose shape contradicts ``media_type`` (or schema 1)."""
    declared = doc.get("mediaType", "")
    if doc.get("fsLayers"):
        raise errdefs.InvalidArgument(f"{what}: media-type: schema 1 not supported")
    if mt.is_manifest(media_type) and (doc.get("manifests") or mt.is_index(declared)):
        raise errdefs.InvalidArgument(
            f"{what}: media-type: expected manifest but found index ({declared})"
        )
    if mt.is_index(media_type) and (
        doc.get("config") or doc.get("layers") or mt.is_manifest(declared)
    ):
        raise errdefs.InvalidArgument(
            f"{what}: media-type: expected index but found manifest ({declared})"
        )


def parse_manifest(data: bytes, media_type: str = "") -> Manifest:
    """Parse an image manifest (capped; config and layers validated)."""
    doc = load_json(data, "manifest")
    _check_kind(doc, media_type or mt.OCI_MANIFEST, "manifest")
    declared = doc.get("mediaType", "")
    if not isinstance(declared, str):
        raise errdefs.InvalidArgument("manifest: mediaType must be a string")
    if "config" not in doc:
        raise errdefs.InvalidArgument("manifest: missing config")
    layers = doc.get("layers") or []
    if not isinstance(layers, list):
        raise errdefs.InvalidArgument("manifest: layers must be a list")
    return Manifest(
        media_type=declared or media_type or mt.OCI_MANIFEST,
        config=descriptor_from_json(doc["config"], "manifest config"),
        layers=[descriptor_from_json(x, f"manifest layer {i}") for i, x in enumerate(layers)],
        annotations=_str_map(doc.get("annotations"), "manifest"),
    )


def parse_index(data: bytes, media_type: str = "") -> Index:
    """Parse an image index (capped; every entry validated)."""
    doc = load_json(data, "index")
    _check_kind(doc, media_type or mt.OCI_INDEX, "index")
    declared = doc.get("mediaType", "")
    if not isinstance(declared, str):
        raise errdefs.InvalidArgument("index: mediaType must be a string")
    manifests = doc.get("manifests") or []
    if not isinstance(manifests, list):
        raise errdefs.InvalidArgument("index: manifests must be a list")
    return Index(
        media_type=declared or media_type or mt.OCI_INDEX,
        manifests=[descriptor_from_json(x, f"index entry {i}") for i, x in enumerate(manifests)],
        annotations=_str_map(doc.get("annotations"), "index"),
    )


def parse_config(data: bytes) -> ImageConfig:
    """Parse an image config: its diff IDs (validated) and its platform."""
    doc = load_json(data, "image config")
    rootfs = doc.get("rootfs") or {}
    diff_ids = (rootfs.get("diff_ids") or []) if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise errdefs.InvalidArgument("image config: rootfs.diff_ids must be a list of digests")
    for d in diff_ids:
        try:
            digests.validate(d)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"image config: diff id {d!r}: {exc.message}") from None
    os_name, arch, variant = (doc.get(k) or "" for k in ("os", "architecture", "variant"))
    if not all(isinstance(f, str) for f in (os_name, arch, variant)):
        raise errdefs.InvalidArgument("image config: os, architecture and variant must be strings")
    platform = Platform(str(os_name), str(arch), str(variant))
    return ImageConfig(raw=doc, diff_ids=list(diff_ids), platform=platform)


def verify_blob(desc: Descriptor, data: bytes) -> bytes:
    """``data`` if it is the blob ``desc`` names (size, then digest), else an error."""
    if len(data) != desc.size:
        raise errdefs.FailedPrecondition(
            f"blob {desc.digest}: got {len(data)} bytes, descriptor says {desc.size}"
        )
    algorithm, _, expected = desc.digest.partition(":")
    if algorithm not in digests.ALGORITHMS:
        raise errdefs.InvalidArgument(f"blob {desc.digest!r}: unsupported digest algorithm")
    if hashlib.new(algorithm, data).hexdigest() != expected:
        raise errdefs.FailedPrecondition(f"blob {desc.digest}: content does not match digest")
    return data


def _capped(desc: Descriptor) -> None:
    if desc.size > MAX_MANIFEST_SIZE:
        raise errdefs.InvalidArgument(
            f"{desc.media_type or 'blob'} {desc.digest}: size {desc.size} is over the "
            f"{MAX_MANIFEST_SIZE}-byte limit for manifests, indexes and configs"
        )


# -- walking --------------------------------------------------------------------
#
# Walks are written once, as generators that yield each descriptor whose
# bytes they need and receive those bytes back (no I/O of their own).
# drive() feeds them from a sync or an async ReadBlob, so the same walk
# serves the async client and its generated sync twin.

T = TypeVar("T")
Walk = Generator[Descriptor, bytes, T]


def _step(gen: Walk[T], data: bytes | None, error: Exception | None) -> Descriptor:
    """Resume a walk with the bytes it asked for, or with the read's error
    (raised inside the walk, so a walk may catch it, as image_size does)."""
    if error is not None:
        return gen.throw(error)
    assert data is not None
    return gen.send(data)


async def _finish(gen: Walk[T], read: AnyReadBlob, pending: Awaitable[bytes]) -> T:
    while True:
        data, error = None, None
        try:
            data = await pending
        except Exception as exc:  # handed to the walk
            error = exc
        try:
            desc = _step(gen, data, error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        pending = cast(Awaitable[bytes], read(desc))


async def _ready(value: T) -> T:
    return value


@overload
def drive(gen: Walk[T], read: SyncReadBlob) -> T: ...
@overload
def drive(gen: Walk[T], read: ReadBlob) -> Coroutine[Any, Any, T]: ...
def drive(gen: Walk[T], read: AnyReadBlob) -> T | Coroutine[Any, Any, T]:
    """Run a walk, reading through ``read``: a value for a sync reader, a
    coroutine for an async one.  A failed read is raised inside the walk."""
    try:
        desc = next(gen)
    except StopIteration as stop:
        value: T = stop.value
        return _ready(value) if inspect.iscoroutinefunction(read) else value
    while True:
        data, error = None, None
        try:
            result = read(desc)
        except Exception as exc:  # handed to the walk
            error = exc
        else:
            if inspect.isawaitable(result):
                return _finish(gen, read, result)
            data = result
        try:
            desc = _step(gen, data, error)
        except StopIteration as stop:
            done: T = stop.value
            return done


def _read_manifest(desc: Descriptor) -> Walk[Manifest]:
    _capped(desc)
    data = yield desc
    try:
        return parse_manifest(data, desc.media_type)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"invalid manifest {desc.digest}: {exc.message}") from None


def _read_index(desc: Descriptor) -> Walk[Index]:
    _capped(desc)
    data = yield desc
    try:
        return parse_index(data, desc.media_type)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"invalid index {desc.digest}: {exc.message}") from None


def _read_config(desc: Descriptor) -> Walk[ImageConfig]:
    _capped(desc)
    data = yield desc
    try:
        return parse_config(data)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"invalid config {desc.digest}: {exc.message}") from None


def walk_children(desc: Descriptor) -> Walk[list[Descriptor]]:
    """The descriptors ``desc`` points at: config then layers, or an index's
    manifests; nothing for layers, configs and unknown types."""
    if mt.is_manifest(desc.media_type):
        m = yield from _read_manifest(desc)
        return [m.config, *m.layers]
    if mt.is_index(desc.media_type):
        idx = yield from _read_index(desc)
        return list(idx.manifests)
    return []


def _child_label_prefix(child: Descriptor) -> str:
    if mt.is_config(child.media_type):
        return GC_REF_PREFIX + "config"
    if mt.is_manifest(child.media_type):
        return GC_REF_PREFIX + "m."
    if mt.is_layer(child.media_type):
        return GC_REF_PREFIX + "l."
    return GC_REF_PREFIX


def gc_labels(desc: Descriptor, kids: Sequence[Descriptor]) -> dict[str, str]:
    """The labels containerd puts on ``desc`` so GC keeps its children.

    Keys count per kind: ``...config``, ``...l.0``, ``...l.1``, ``...m.0``;
    a second config (never seen in practice) would become ``...config1``.
    """
    del desc  # the labels depend only on the children, as with containerd
    labels: dict[str, str] = {}
    seen: dict[str, int] = {}
    for child in kids:
        key = _child_label_prefix(child)
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n > 0 or key.endswith("."):
            key = f"{key}{n}"
        labels[key] = child.digest
    return labels


def sort_by_platform(matcher: pf.Matcher, descs: list[Descriptor]) -> list[Descriptor]:
    """Best platform first; entries without a platform go last (stable)."""

    def cmp(a: Descriptor, b: Descriptor) -> int:
        if a.platform is None:
            return 0 if b.platform is None else 1
        if b.platform is None:
            return -1
        if matcher.less(a.platform, b.platform):
            return -1
        if matcher.less(b.platform, a.platform):
            return 1
        return 0

    return sorted(descs, key=functools.cmp_to_key(cmp))


def filter_platforms(matcher: pf.Matcher, descs: Sequence[Descriptor]) -> list[Descriptor]:
    """Entries without a platform, or with one ``matcher`` accepts."""
    return [d for d in descs if d.platform is None or matcher.match(d.platform)]


def walk_resolve(target: Descriptor, matcher: pf.Matcher) -> Walk[tuple[Descriptor, Manifest]]:
    """See :func:`resolve_manifest`.

    A loop, not a recursion: indexes may nest as deep as a hostile image
    likes, and only the best entry of each is followed.
    """
    desc = target
    was_index = False
    while True:
        if mt.is_manifest(desc.media_type):
            m = yield from _read_manifest(desc)
            if desc.digest != target.digest:
                if desc.platform is not None and not matcher.match(desc.platform):
                    break
                if desc.platform is None:
                    p = (yield from _read_config(m.config)).platform
                    if not matcher.match(pf.normalize(Platform(p.os, p.architecture))):
                        break
            return desc, m
        if mt.is_index(desc.media_type):
            idx = yield from _read_index(desc)
            was_index = True
            best = sort_by_platform(matcher, filter_platforms(matcher, idx.manifests))[:1]
            if not best:
                break
            desc = best[0]
            continue
        raise errdefs.NotFound(f"unexpected media type {desc.media_type} for {desc.digest}")
    if was_index:
        raise errdefs.NotFound(f"no match for platform in manifest {target.digest}")
    raise errdefs.NotFound(f"manifest {target.digest}")


def walk_platforms(target: Descriptor) -> Walk[list[Platform]]:
    """See :func:`platforms_of`.

    Depth first, parents before children, with a stack of its own (indexes
    may nest as deep as a hostile image likes).
    """
    found: list[Platform] = []
    stack = [target]
    while stack:
        desc = stack.pop()
        if desc.platform is not None:
            if "unknown" not in (desc.platform.os, desc.platform.architecture):
                found.append(desc.platform)
            continue
        if desc.media_type in (mt.DOCKER_CONFIG, mt.OCI_CONFIG):
            p = (yield from _read_config(desc)).platform
            found.append(pf.normalize(Platform(p.os, p.architecture)))
            continue
        kids = yield from walk_children(desc)
        stack.extend(reversed([k for k in kids if not mt.is_layer(k.media_type)]))
    return found


# -- the same walks, run through a reader ------------------------------------------


@overload
def children(read: SyncReadBlob, desc: Descriptor) -> list[Descriptor]: ...
@overload
def children(read: ReadBlob, desc: Descriptor) -> Coroutine[Any, Any, list[Descriptor]]: ...
def children(read: AnyReadBlob, desc: Descriptor) -> Any:
    """The children of ``desc`` (see :func:`walk_children`)."""
    return drive(walk_children(desc), read)


@overload
def resolve_manifest(
    read: SyncReadBlob, target: Descriptor, matcher: pf.Matcher
) -> tuple[Descriptor, Manifest]: ...
@overload
def resolve_manifest(
    read: ReadBlob, target: Descriptor, matcher: pf.Matcher
) -> Coroutine[Any, Any, tuple[Descriptor, Manifest]]: ...
def resolve_manifest(read: AnyReadBlob, target: Descriptor, matcher: pf.Matcher) -> Any:
    """The manifest ``matcher`` picks for ``target``, as containerd's ``images.Manifest``.

    An index is narrowed to its matching entries, best first, and only the
    best is followed; a manifest reached through an index without a
    platform is checked against its config's OS and architecture.  The
    target itself, when it is a manifest, is taken whatever its platform.
    NotFound ``no match for platform in manifest ...`` when nothing fits.
    """
    return drive(walk_resolve(target, matcher), read)


@overload
def platforms_of(read: SyncReadBlob, target: Descriptor) -> list[Platform]: ...
@overload
def platforms_of(read: ReadBlob, target: Descriptor) -> Coroutine[Any, Any, list[Platform]]: ...
def platforms_of(read: AnyReadBlob, target: Descriptor) -> Any:
    """Every platform an image offers, as containerd's ``images.Platforms``.

    An index entry's platform is taken as written (``unknown`` ones are
    skipped); a manifest without one contributes its config's OS and
    architecture.
    """
    return drive(walk_platforms(target), read)
