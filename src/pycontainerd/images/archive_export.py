"""Writing image archives: an OCI image layout, with Docker's manifest.json.

The pure half of export (containerd's ``archive.Export``): the layout's
small files, tar headers and the ordering of records.  The client streams
the blobs themselves from the content store
(:mod:`pycontainerd.client._async.transfer`).

The archive is deterministic: records sorted by name, each written once,
fixed modes, owner 0 and time 0, so exporting the same images twice gives
the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pycontainerd import digest as digests
from pycontainerd import errdefs
from pycontainerd.images import Descriptor
from pycontainerd.images.archive_import import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    OCI_LAYOUT_VERSION,
    index_json,
    oci_ref_name,
)
from pycontainerd.images.manifest import Manifest
from pycontainerd.reference import familiarize

__all__ = [
    "BLOCK",
    "DockerEntry",
    "Record",
    "blob_path",
    "end_of_archive",
    "header",
    "layout_records",
    "manifest_json",
    "named",
    "padding",
]

BLOCK = 512


@dataclass(frozen=True, slots=True)
class Record:
    """One archive entry: a directory, small in-memory data, or a blob to stream."""

    name: str
    mode: int
    data: bytes | None = None  # in-memory file
    blob: Descriptor | None = None  # streamed from content
    is_dir: bool = False

    @property
    def size(self) -> int:
        if self.is_dir:
            return 0
        if self.data is not None:
            return len(self.data)
        assert self.blob is not None
        return self.blob.size


@dataclass(slots=True)
class DockerEntry:
    """A manifest.json entry: the manifest and the names it is exported under."""

    manifest: Manifest
    names: list[str] = field(default_factory=list)


def blob_path(dgst: str) -> str:
    digests.validate(dgst)
    algorithm, _, encoded = dgst.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def named(desc: Descriptor, name: str) -> Descriptor:
    """``desc`` annotated with an image name, as ctr export annotates targets."""
    annotations = {
        **desc.annotations,
        ANNOTATION_IMAGE_NAME: name,
        ANNOTATION_REF_NAME: oci_ref_name(name),
    }
    return Descriptor(desc.media_type, desc.digest, desc.size, annotations, desc.platform)


def manifest_json(entries: Sequence[DockerEntry]) -> bytes:
    """Docker's manifest.json for ``entries`` (config/layer paths into blobs/)."""
    out = []
    for entry in entries:
        m = entry.manifest
        out.append(
            {
                "Config": blob_path(m.config.digest),
                "RepoTags": [familiarize(n) for n in entry.names] or None,
                "Layers": [blob_path(x.digest) for x in m.layers],
            }
        )
    return json.dumps(out, separators=(",", ":")).encode()


def layout_records(
    manifests: Sequence[Descriptor],
    blobs: Mapping[str, Descriptor],
    docker: Sequence[DockerEntry] = (),
) -> list[Record]:
    """Every record of the archive, sorted by name, each name once."""
    records = [
        Record(
            "oci-layout",
            0o444,
            data=json.dumps(
                {"imageLayoutVersion": OCI_LAYOUT_VERSION}, separators=(",", ":")
            ).encode(),
        ),
        Record("index.json", 0o644, data=index_json(manifests)),
    ]
    if blobs:
        records.append(Record("blobs/", 0o755, is_dir=True))
    for alg in sorted({d.partition(":")[0] for d in blobs}):
        records.append(Record(f"blobs/{alg}/", 0o755, is_dir=True))
    for dgst, desc in blobs.items():
        records.append(Record(blob_path(dgst), 0o444, blob=desc))
    if docker:
        records.append(Record("manifest.json", 0o644, data=manifest_json(docker)))
    unique: dict[str, Record] = {}
    for r in sorted(records, key=lambda r: r.name):
        unique.setdefault(r.name, r)
    return list(unique.values())


def _octal(value: int, width: int) -> bytes:
    """A zero-padded octal field with its NUL, as Go's tar writer fills it."""
    return b"%0*o\0" % (width - 1, value)


def header(record: Record) -> bytes:
    """The USTAR header of ``record`` (owner 0, time 0), byte for byte as Go writes it.

    Go fills the device fields with zeros where Python's tarfile leaves them
    empty; matching Go keeps our archives identical to containerd's.
    """
    name = record.name.encode()
    if len(name) > 100:
        raise errdefs.InvalidArgument(f"archive entry {record.name!r}: name too long")
    fields = [
        name.ljust(100, b"\0"),
        _octal(record.mode, 8),
        _octal(0, 8),  # uid
        _octal(0, 8),  # gid
        _octal(record.size, 12),
        _octal(0, 12),  # mtime
        b" " * 8,  # checksum, computed below over the header with spaces here
        b"5" if record.is_dir else b"0",
        b"\0" * 100,  # linkname
        b"ustar\x0000",
        b"\0" * 64,  # uname, gname
        _octal(0, 8),  # devmajor
        _octal(0, 8),  # devminor
        b"\0" * 155,  # prefix
        b"\0" * 12,
    ]
    buf = b"".join(fields)
    checksum = b"%06o\0 " % sum(buf)
    return buf[:148] + checksum + buf[156:]


def padding(size: int) -> bytes:
    """Zeros that round an entry of ``size`` bytes up to a tar block."""
    return b"\0" * (-size % BLOCK)


def end_of_archive() -> bytes:
    return b"\0" * (2 * BLOCK)
