"""Reading image archives: OCI image layouts and ``docker save`` tars.

This is the pure half of import (containerd's ``archive.ImportIndex``):
it classifies each entry of the archive, checks names and sizes, and turns
what it collected into the root index an import walks.  Writing blobs and
image records is done by the client (:mod:`pycontainerd.client._async.transfer`),
which feeds entries in as it streams them to the content store.

Formats:

* OCI image layout: ``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``.
  Blob names must be digests; the content store then verifies each blob
  against its name when it is committed.
* Docker (``docker save``, v1.1/v1.2): ``manifest.json`` lists each image's
  config file, layer files and repo tags; a Docker schema 2 manifest is made
  for each, and an index naming them (``docker.io/library/x:latest``), as
  containerd makes them.  A newer ``docker save`` also writes an OCI layout;
  then the layout wins, as with containerd.

Everything read into memory (``oci-layout``, ``index.json``,
``manifest.json``, ``repositories``) is size-capped first; an entry whose
name escapes the archive (absolute, ``..``) is refused.
"""

from __future__ import annotations

import enum
import json
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from pycontainerd import digest as digests
from pycontainerd import errdefs
from pycontainerd.archive.compression import Compression
from pycontainerd.images import Descriptor
from pycontainerd.images import mediatypes as mt
from pycontainerd.images.manifest import (
    MAX_MANIFEST_SIZE,
    descriptor_to_json,
    dumps,
    load_json,
    parse_index,
)
from pycontainerd.platforms import Platform
from pycontainerd.reference import normalize_docker_ref

__all__ = [
    "ANNOTATION_IMAGE_NAME",
    "ANNOTATION_REF_NAME",
    "OCI_LAYOUT_VERSION",
    "ArchiveContents",
    "DockerImage",
    "EntryKind",
    "RefTranslator",
    "add_ref_prefix",
    "classify",
    "digest_translator",
    "docker_manifest",
    "filter_ref_prefix",
    "image_name",
    "index_json",
    "layer_media_type",
    "oci_ref_name",
    "read_capped",
    "tagged",
    "with_platform",
]

#: Annotation holding the full image name (containerd's own).
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
#: OCI's reference name annotation (just the tag, by the OCI spec).
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT_VERSION = "1.0.0"

#: The name translators of ``ctr images import`` (``--base-name``...).
RefTranslator = Callable[[str], str]


class EntryKind(enum.Enum):
    LAYOUT = "oci-layout"  # small JSON, read into memory
    INDEX = "index.json"  # small JSON, read into memory and stored as a blob
    DOCKER_MANIFEST = "manifest.json"  # small JSON, read into memory
    SKIP = "skip"  # Docker's per-layer json/VERSION and repositories: not needed
    BLOB = "blob"  # blobs/<alg>/<hex>: stored, verified against its name
    FILE = "file"  # any other file (Docker layers and configs): stored, digest computed


# -- names -------------------------------------------------------------------------


def clean_name(name: str) -> str:
    """The entry's name, normalised; InvalidArgument if it leaves the archive."""
    cleaned = posixpath.normpath(name.replace("\\", "/")) if name else ""
    if (
        not cleaned
        or cleaned == "."
        or cleaned.startswith("/")
        or cleaned == ".."
        or cleaned.startswith("../")
        or "\x00" in cleaned
    ):
        raise errdefs.InvalidArgument(f"archive entry {name!r}: path escapes the archive")
    return cleaned


def _blob_digest(name: str) -> str:
    parts = name.split("/")
    if len(parts) != 3:
        raise errdefs.InvalidArgument(
            f"archive entry {name!r}: blobs must be named blobs/<algorithm>/<hex digest>"
        )
    dgst = f"{parts[1]}:{parts[2]}"
    try:
        digests.validate(dgst)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(
            f"archive entry {name!r}: blob name is not a digest ({exc.message})"
        ) from None
    return dgst


def classify(name: str) -> tuple[str, EntryKind, str]:
    """Clean ``name`` and say what the entry is; for a blob, its digest."""
    name = clean_name(name)
    if name == "oci-layout":
        return name, EntryKind.LAYOUT, ""
    if name == "index.json":
        return name, EntryKind.INDEX, ""
    if name == "manifest.json":
        return name, EntryKind.DOCKER_MANIFEST, ""
    if name == "repositories" or name.endswith(("/json", "/VERSION")):
        return name, EntryKind.SKIP, ""
    if name.startswith("blobs/"):
        return name, EntryKind.BLOB, _blob_digest(name)
    return name, EntryKind.FILE, ""


def read_capped(f: IO[bytes], size: int, what: str) -> bytes:
    """Read a small JSON entry whole, after checking its size."""
    if size > MAX_MANIFEST_SIZE:
        raise errdefs.InvalidArgument(
            f"{what}: {size} bytes is over the {MAX_MANIFEST_SIZE}-byte limit"
        )
    data = f.read(size)
    if len(data) != size:
        raise errdefs.InvalidArgument(f"{what}: archive ends inside the entry")
    return data


# -- references ----------------------------------------------------------------------


def oci_ref_name(name: str) -> str:
    """OCI's ``ref.name`` for a full image name: only its tag (or ``@digest``)."""
    host, sep, path = name.partition("/")
    if not sep or not host:
        return name
    m = re.search(r"[:@]", path)
    if m is None:
        return ""
    obj = path[m.start() :]
    return obj[1:] if obj.startswith(":") else obj


def _is_image_prefix(s: str, prefix: str) -> bool:
    return s.startswith(prefix) and (len(s) == len(prefix) or s[len(prefix)] in "/:@")


def _translator(image: str, check_prefix: bool) -> RefTranslator:
    def translate(ref: str) -> str:
        if not image:
            return ""
        if any(c in ref for c in "/:@"):
            if check_prefix and not _is_image_prefix(ref, image):
                return ""
            return ref
        return f"{image}:{ref}"

    return translate


def add_ref_prefix(image: str) -> RefTranslator:
    """Tag-only names get ``image:`` in front; full names are kept."""
    return _translator(image, check_prefix=False)


def filter_ref_prefix(image: str) -> RefTranslator:
    """As :func:`add_ref_prefix`, but full names outside ``image`` are dropped."""
    return _translator(image, check_prefix=True)


def digest_translator(prefix: str) -> Callable[[str], str]:
    """``prefix@<digest>`` names (``ctr images import --digests``)."""
    return lambda dgst: f"{prefix}@{dgst}"


def image_name(annotations: Mapping[str, str], translate: RefTranslator | None) -> str:
    """The name an index entry gives its image: containerd's annotation as is,
    else OCI's ref name through ``translate``."""
    name = annotations.get(ANNOTATION_IMAGE_NAME, "")
    if name:
        return name
    name = annotations.get(ANNOTATION_REF_NAME, "")
    if name and translate is not None:
        name = translate(name)
    return name


# -- collecting an archive ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DockerImage:
    """One entry of a ``docker save`` manifest.json."""

    config: str
    layers: tuple[str, ...]
    repo_tags: tuple[str, ...]


def _parse_docker_manifest(data: bytes) -> list[DockerImage]:
    if len(data) > MAX_MANIFEST_SIZE:
        raise errdefs.InvalidArgument(
            f"manifest.json: {len(data)} bytes is over the {MAX_MANIFEST_SIZE}-byte limit"
        )
    try:
        doc: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidArgument(f'untar manifest "manifest.json": {exc}') from None
    if not isinstance(doc, list):
        raise errdefs.InvalidArgument('untar manifest "manifest.json": expected a JSON list')
    out: list[DockerImage] = []
    for i, entry in enumerate(doc):
        config = entry.get("Config") if isinstance(entry, dict) else None
        layers = (entry.get("Layers") or []) if isinstance(entry, dict) else None
        tags = (entry.get("RepoTags") or []) if isinstance(entry, dict) else None
        if (
            not isinstance(config, str)
            or not isinstance(layers, list)
            or not isinstance(tags, list)
            or not all(isinstance(x, str) for x in (*layers, *tags))
        ):
            raise errdefs.InvalidArgument(
                f"manifest.json entry {i}: needs Config (string), Layers and RepoTags (strings)"
            )
        out.append(DockerImage(config, tuple(layers), tuple(tags)))
    return out


@dataclass(slots=True)
class ArchiveContents:
    """What an import saw in an archive, fed entry by entry."""

    layout: bytes | None = None
    index: bytes | None = None
    docker_manifest: bytes | None = None
    #: Stored files by cleaned name: their descriptor (no media type yet)
    #: and the compression their first bytes showed.
    files: dict[str, tuple[Descriptor, Compression]] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)

    def add_symlink(self, name: str, target: str) -> None:
        name = clean_name(name)
        self.symlinks[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))

    def is_oci(self) -> bool:
        """True when the archive is an OCI layout (checked: version 1.0.0)."""
        if self.layout is None:
            return False
        doc = load_json(self.layout, "oci-layout")
        version = doc.get("imageLayoutVersion", "")
        if not version:
            return False
        if version != OCI_LAYOUT_VERSION:
            raise errdefs.InvalidArgument(f"unsupported OCI version {version}")
        return True

    def oci_index(self) -> bytes:
        """The OCI layout's index.json (validated)."""
        if self.index is None:
            raise errdefs.InvalidArgument(f"missing index.json in OCI layout {OCI_LAYOUT_VERSION}")
        parse_index(self.index, mt.OCI_INDEX)
        return self.index

    def docker_images(self) -> list[DockerImage]:
        """The images of a Docker archive; InvalidArgument if it is neither format."""
        if self.docker_manifest is None:
            raise errdefs.InvalidArgument("unrecognized image format")
        return _parse_docker_manifest(self.docker_manifest)

    def file(self, name: str, what: str) -> tuple[Descriptor, Compression]:
        """A stored file by the name manifest.json uses (symlinks followed)."""
        key = posixpath.normpath(name)
        for _ in range(8):  # symlink chains, bounded
            if key in self.files:
                return self.files[key]
            if key not in self.symlinks:
                break
            key = self.symlinks[key]
        raise errdefs.NotFound(f"{what} {name!r} not found in archive")


def layer_media_type(compression: Compression) -> str:
    """Docker schema 2 layer type for a layer file, by its detected compression."""
    if compression is Compression.UNCOMPRESSED:
        return mt.DOCKER_LAYER
    if compression is Compression.ZSTD:
        return mt.DOCKER_LAYER_ZSTD
    return mt.DOCKER_LAYER_GZIP


def docker_manifest(config: Descriptor, layers: Sequence[Descriptor]) -> bytes:
    """A Docker schema 2 manifest, byte for byte as containerd writes it on import."""
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": descriptor_to_json(config),
            "layers": [descriptor_to_json(x) for x in layers],
        }
    )


def index_json(
    manifests: Sequence[Descriptor], annotations: Mapping[str, str] | None = None
) -> bytes:
    """An OCI index (no media type field, as containerd writes one)."""
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "manifests": [descriptor_to_json(m) for m in manifests],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return dumps(doc)


def tagged(desc: Descriptor, repo_tags: Sequence[str]) -> Iterator[Descriptor]:
    """One index entry per repo tag (normalised name annotations), or one untagged."""
    if not repo_tags:
        yield desc
        return
    for ref in repo_tags:
        try:
            name = normalize_docker_ref(ref)
        except errdefs.InvalidArgument as exc:
            # containerd's words (normalizeReference in images/archive).
            raise errdefs.InvalidArgument(
                f"normalize image ref {errdefs.q(ref)}: {exc.message}"
            ) from None
        yield Descriptor(
            desc.media_type,
            desc.digest,
            desc.size,
            {ANNOTATION_IMAGE_NAME: name, ANNOTATION_REF_NAME: oci_ref_name(name)},
            desc.platform,
        )


def with_platform(desc: Descriptor, platform: Platform | None) -> Descriptor:
    return Descriptor(desc.media_type, desc.digest, desc.size, desc.annotations, platform)
