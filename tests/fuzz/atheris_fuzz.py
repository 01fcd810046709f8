"""Coverage-guided fuzzing of the parsers with atheris (libFuzzer), for ``make fuzz``.

Usage: ``python -m tests.fuzz.atheris_fuzz TARGET [libFuzzer flags...] [CORPUS]``,
e.g. ``-max_total_time=60 -artifact_prefix=/tmp/crashes/ /tmp/corpus``; an
empty corpus directory is first filled with the target's seed inputs.  TARGET is one
of :data:`TARGETS`.  Each target states what may go wrong quietly (a typed
refusal); anything else it raises is a crash, which libFuzzer saves as an
artifact and reports with the input.  Hypothesis covers the same code with
structure-aware inputs; atheris adds coverage feedback on raw bytes.

Python modules are instrumented at import, so only pycontainerd's own code
guides the search.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pycontainerd"]):
    from pycontainerd import digest, errdefs, filters, platforms, reference
    from pycontainerd.archive import apply_layer, tar
    from pycontainerd.images import manifest

MiB = 1 << 20


def fix_checksums(data: bytes) -> bytes:
    """Give every block that looks like a ustar header its right checksum.

    Random mutations break a header's checksum almost always, and a reader
    that stops there shows libFuzzer nothing new; with the checksums put
    right, the mutations reach the fields behind them.
    """
    raw = bytearray(data)
    for at in range(0, len(raw) - tar.BLOCK + 1, tar.BLOCK):
        block = raw[at : at + tar.BLOCK]
        if block[257:262] == b"ustar":
            block[148:156] = b" " * 8
            raw[at + 148 : at + 156] = b"%06o\x00 " % sum(block)
    return bytes(raw)


def _tar_input(data: bytes) -> bytes:
    # The first byte says whether to fix checksums, so both kinds of input stay reachable.
    return fix_checksums(data[1:]) if data[:1] and data[0] & 1 else data[1:]


def tar_reader(data: bytes) -> None:
    reader = tar.TarReader(io.BytesIO(_tar_input(data)))  # type: ignore[arg-type]
    try:
        while (hdr := reader.next()) is not None:
            if "\x00" in hdr.name or hdr.size < 0 or not 0 <= hdr.uid <= 0xFFFFFFFE:
                raise AssertionError(f"reader yielded a header it promised not to: {hdr}")
            if hdr.typeflag == tar.TYPE_REG and hdr.size <= MiB:
                reader.read_data()
        reader.drain()
    except errdefs.InvalidArgument:
        pass


#: Where tar-apply makes its roots; the caller removes it (libFuzzer ends the
#: process with exit(), so nothing here runs after the last input).
_BASE = Path(os.environ.get("FUZZ_WORKDIR") or tempfile.gettempdir())


def tar_apply(data: bytes) -> None:
    """Apply into a fresh root beside a sentinel that must not change."""
    work = Path(tempfile.mkdtemp(dir=_BASE))
    try:
        root, outside = work / "root", work / "outside"
        root.mkdir()
        outside.mkdir()
        (outside / "secret").write_bytes(b"secret")
        before = sorted(os.listdir(work)), (outside / "secret").stat()
        with contextlib.suppress(errdefs.ContainerdError):
            apply_layer(root, io.BytesIO(_tar_input(data)))  # type: ignore[arg-type]
        after = sorted(os.listdir(work)), (outside / "secret").stat()
        if after != before or sorted(os.listdir(outside)) != ["secret"]:
            raise AssertionError("applying the layer changed something outside the root")
    finally:
        shutil.rmtree(work, ignore_errors=True)


_OBJECTS = [
    {"name": "web", "labels": {"a": "1", "a.b": "x"}, "topic": "/tasks/exit"},
    {"name": "", "image": "docker.io/library/busybox:latest"},
    {},
]


def filter_language(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    texts = [fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64)) for _ in range(2)]
    subject = fdp.ConsumeUnicodeNoSurrogates(64)
    try:
        parsed = filters.parse_all([t for t in texts if t] or texts[:1])
    except errdefs.InvalidArgument:
        return
    for obj in [*_OBJECTS, {"name": subject, "labels": {subject: subject}}]:
        parsed.match(filters.adapt_mapping(obj))


def small_parsers(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for parse in (
        platforms.parse,
        reference.parse,
        reference.normalize_docker_ref,
        digest.validate,
    ):
        with contextlib.suppress(errdefs.InvalidArgument):
            parse(text)
    try:
        p = platforms.parse(text)
    except errdefs.InvalidArgument:
        return
    if platforms.parse(platforms.format(p)) != p:
        raise AssertionError(f"{text!r} -> {p} does not survive format and parse")


def manifests(data: bytes) -> None:
    for decode in (manifest.parse_manifest, manifest.parse_index):
        for media_type in ("", "application/vnd.docker.distribution.manifest.list.v2+json"):
            with contextlib.suppress(errdefs.InvalidArgument):
                decode(data, media_type)
    with contextlib.suppress(errdefs.InvalidArgument):
        manifest.parse_config(data)
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return
    with contextlib.suppress(errdefs.InvalidArgument):
        manifest.descriptor_from_json(obj)


# -- seeds ------------------------------------------------------------------------------


def _layer(*headers: tuple[tar.Header, bytes]) -> bytes:
    out = io.BytesIO()
    writer = tar.TarWriter(out)  # type: ignore[arg-type]
    for hdr, body in headers:
        writer.write_header(hdr)
        writer.write(body)
        writer.pad(len(body))
    writer.close()
    return b"\x01" + out.getvalue()


def _tar_seeds() -> list[bytes]:
    H = tar.Header
    return [
        _layer((H("a/", typeflag=tar.TYPE_DIR, mode=0o755), b""), (H("a/b", size=5), b"hello")),
        _layer((H("x" * 150 + "/é", size=1, uid=1 << 22, xattrs={"user.a": b"1"}), b"x")),
        _layer(
            (H("l", typeflag=tar.TYPE_SYMLINK, linkname="../../etc"), b""),
            (H("h", typeflag=tar.TYPE_LINK, linkname="l"), b""),
            (H("d/.wh.x", size=0), b""),
            (H("d/.wh..wh..opq"), b""),
            (H("f", typeflag=tar.TYPE_FIFO), b""),
            (H("n", typeflag=tar.TYPE_CHAR), b""),
        ),
        _layer((H("m", mtime_ns=-(10**9), size=0), b"")),
    ]


def _manifest_seeds() -> list[bytes]:
    d = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": "sha256:" + "a" * 64,
        "size": 1,
        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        "annotations": {"a": "b"},
    }
    docs = [
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": d,
            "layers": [d, d],
        },
        {"schemaVersion": 2, "manifests": [d]},
        {
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]},
            "os": "linux",
            "architecture": "amd64",
        },
        d,
    ]
    return [json.dumps(doc).encode() for doc in docs]


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "tar-reader": _tar_seeds,
    "tar-apply": _tar_seeds,
    "filters": lambda: [
        s.encode()
        for s in ('name==web,labels."a.b"~=/^x$/', "topic~=|/tasks/.*|", 'labels.a!="1"', "image")
    ],
    "small-parsers": lambda: [
        b"linux/arm64/v8",
        b"docker.io/library/busybox:1.36@sha256:" + b"a" * 64,
    ],
    "manifests": _manifest_seeds,
}


def write_seeds(target: str, corpus: Path) -> None:
    """Put ``target``'s seed inputs in the directory libFuzzer reads its corpus from."""
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS[target]()):
        (corpus / f"seed-{i}").write_bytes(seed)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "tar-reader": tar_reader,
    "tar-apply": tar_apply,
    "filters": filter_language,
    "small-parsers": small_parsers,
    "manifests": manifests,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags] [CORPUS_DIR]")
    target, flags = sys.argv[1], sys.argv[2:]
    corpora = [Path(a) for a in flags if not a.startswith("-")]
    if corpora and not (corpora[0].is_dir() and any(corpora[0].iterdir())):
        write_seeds(target, corpora[0])  # an empty corpus starts from the seeds
    atheris.Setup([sys.argv[0], *flags], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
