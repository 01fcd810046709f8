"""Distribution scenarios: a registry on loopback (Debian's ``docker-registry``).

``blob-fetch-1g``: one 1 GiB blob fetched and verified (digest and size) by
our registry client, against ``curl -o /dev/null`` of the same URL.  The
daemons the harness starts take no part; the blob is written straight into
the registry's storage (1 GiB through its upload API would only slow setup).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import hashlib
import itertools
import os
import random
import subprocess
from collections.abc import Callable, Iterator

from bench.registry import Measure, Target, scenario
from pycontainerd.remotes import ResolvedDescriptor, Resolver
from tests.support.registry import RunningRegistry, registry

BLOB_SIZE = 1 << 30
BLOB_REPOSITORY = "bench/blob"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"

_registries = contextlib.ExitStack()
atexit.register(_registries.close)


@functools.cache
def _registry() -> RunningRegistry:
    return _registries.enter_context(registry())


def _link_blob(reg: RunningRegistry, repository: str, digest: str) -> None:
    """Make a blob already in storage part of ``repository`` (the registry's
    own layout: a link file per repository layer)."""
    hex_ = digest.removeprefix("sha256:")
    link = reg.root / "data/docker/registry/v2/repositories" / repository / "_layers/sha256" / hex_
    link.mkdir(parents=True, exist_ok=True)
    (link / "link").write_text(digest)


@functools.cache
def _big_blob() -> ResolvedDescriptor:
    """A 1 GiB incompressible blob in the registry (made once per run)."""
    reg = _registry()
    rng = random.Random(1)
    piece = rng.randbytes(1 << 20)
    tmp = reg.root / "big.tmp"
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        for i in range(BLOB_SIZE >> 20):
            chunk = i.to_bytes(8, "little") + piece[8:]
            digest.update(chunk)
            f.write(chunk)
    hex_ = digest.hexdigest()
    data = reg.root / "data/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"
    data.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, data)
    _link_blob(reg, BLOB_REPOSITORY, "sha256:" + hex_)
    return ResolvedDescriptor(LAYER_MEDIA_TYPE, "sha256:" + hex_, BLOB_SIZE)


async def _fetch(host: str, desc: ResolvedDescriptor) -> int:
    count = 0
    async with Resolver(plain_http=True) as resolver:
        fetcher = resolver.fetcher(f"{host}/{BLOB_REPOSITORY}:latest")
        async for chunk in fetcher.fetch(desc):
            count += len(chunk)
    if count != desc.size:
        raise RuntimeError(f"fetched {count} bytes of {desc.size}")
    return count


@scenario(
    "blob-fetch-1g",
    "one 1 GiB blob from a registry on loopback: our fetcher (verified) vs curl -o /dev/null",
    ops=1,
    unit="GiB",
    rounds=5,
    versus="curl",
)
def blob_fetch_1g(target: Target) -> Iterator[Measure]:
    reg = _registry()
    desc = _big_blob()
    if target.label == "pycontainerd":
        yield Measure(lambda: asyncio.run(_fetch(reg.host, desc)))
        return
    url = f"{reg.url}/v2/{BLOB_REPOSITORY}/blobs/{desc.digest}"
    argv = ["curl", "-sSf", "-o", "/dev/null", url]
    yield Measure(lambda: subprocess.run(argv, check=True))


# --- a large image: about 60,000 files, 1 GB uncompressed, 260 MB compressed --------------

LARGE_LAYERS = 5
LARGE_FILES_PER_LAYER = 12_000
LARGE_REPOSITORY = "bench/large"


def _large_tar(index: int, rng: random.Random) -> bytes:
    """One layer's tar: files about 17.5 KB each, a quarter random bytes
    (so it compresses to about 27%, as real layers do)."""
    import io
    import tarfile

    noise = rng.randbytes(1 << 20)
    text = (b"the quick brown fox jumps over the lazy dog\n" * 25_000)[: 1 << 20]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(LARGE_FILES_PER_LAYER):
            if i % 100 == 0:
                info = tarfile.TarInfo(f"l{index}/d{i // 100}")
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            size = rng.randint(5_000, 30_000)
            start = rng.randrange(0, (1 << 20) - size)
            quarter = size // 4
            data = noise[start : start + quarter] + text[start : start + size - quarter]
            info = tarfile.TarInfo(f"l{index}/d{i // 100}/f{i}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _gzip_layer(tar_bytes: bytes) -> tuple[bytes, str]:
    """The layer's gzip blob and its diff ID."""
    from isal import igzip

    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    return igzip.compress(tar_bytes, compresslevel=1, mtime=0), diff_id


def _push_large(tag: str, tars: Iterator[bytes]) -> str:
    """Push an image of ``tars`` (one gzip layer each) as ``tag``; its reference."""
    import json

    from tests.support.registry import (
        OCI_CONFIG,
        OCI_LAYER_GZIP,
        OCI_MANIFEST,
        Blob,
        BuiltImage,
        push_image,
    )

    reg = _registry()
    layers, diff_ids = [], []
    for tar_bytes in tars:
        blob, diff_id = _gzip_layer(tar_bytes)
        layers.append(Blob(OCI_LAYER_GZIP, blob))
        diff_ids.append(diff_id)
    config = Blob(
        OCI_CONFIG,
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ).encode(),
    )
    digests = [(b.digest, b.size) for b in layers]
    manifest = Blob(
        OCI_MANIFEST,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
                "layers": [
                    {"mediaType": OCI_LAYER_GZIP, "digest": d, "size": s} for d, s in digests
                ],
            }
        ).encode(),
    )
    ref = f"{reg.host}/{LARGE_REPOSITORY}:{tag}"

    async def push() -> None:
        async with Resolver(plain_http=True) as resolver:
            await push_image(resolver, ref, BuiltImage(manifest, config, tuple(layers)))

    asyncio.run(push())
    return ref


@functools.cache
def _large_tars() -> tuple[bytes, ...]:
    """The large image's layer tars, about 1 GB (made once per run)."""
    rng = random.Random(7)
    return tuple(_large_tar(index, rng) for index in range(LARGE_LAYERS))


@functools.cache
def _large_image() -> str:
    """Push the large image into the registry; its reference (once per run)."""
    return _push_large("1", iter(_large_tars()))


_variants = itertools.count(1)


def _fresh_large_image() -> str:
    """Push a variant of the large image no daemon has seen: each layer gets
    one small file of its own in front, so every blob and diff ID is new
    while the work of a pull stays the same."""
    import io
    import tarfile

    n = next(_variants)

    def tars() -> Iterator[bytes]:
        for index, tar_bytes in enumerate(_large_tars()):
            head = io.BytesIO()
            with tarfile.open(fileobj=head, mode="w", format=tarfile.PAX_FORMAT) as tar:
                data = f"variant {n} of layer {index}\n".encode()
                info = tarfile.TarInfo(f"variant-{index}")
                info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
                entry = head.getvalue()[: tar.offset]  # the entry, without the end blocks
            yield entry + tar_bytes

    return _push_large(f"fresh-{n}", tars())


def _pull(target: Target, ref: str) -> Callable[[], object]:
    """``images pull --plain-http REF``: pyctr on ours (the daemon's Transfer
    service), ctr on containerd (client-side)."""
    from bench.commands import ctr, pyctr

    tool = pyctr if target.label == "pycontainerd" else ctr
    return tool(target, "images", "pull", "--plain-http", ref, timeout=600)


@scenario(
    "pull-unpack-fresh",
    "images pull + unpack of an image like pull-unpack-large's (60,000 files, about 1 GB)"
    " that neither daemon has: a new variant each round, so no round follows the removal"
    " of 60,000 files (registered first: it runs before that churn)",
    ops=1,
    unit="pull",
    rounds=3,
)
def pull_unpack_fresh(target: Target) -> Iterator[Measure]:
    pull: list[Callable[[], object]] = []

    def next_image() -> None:  # untimed: make and push the round's variant
        pull[:] = [_pull(target, _fresh_large_image())]

    yield Measure(lambda: pull[0](), reset=next_image)


@scenario(
    "pull-unpack-large",
    f"images pull + unpack of {LARGE_LAYERS} layers, {LARGE_LAYERS * LARGE_FILES_PER_LAYER} files,"
    " about 1 GB (270 MB gzip), from a registry on loopback: pyctr (the daemon's Transfer"
    " service) vs ctr (containerd 1.6, client-side)",
    ops=1,
    unit="pull",
    rounds=3,
)
def pull_unpack_large(target: Target) -> Iterator[Measure]:
    from bench.commands import ctr

    ref = _large_image()
    pull = _pull(target, ref)
    # Untimed: the image, its content and its snapshots go before each round.
    remove = ctr(target, "images", "rm", "--sync", ref)

    def reset() -> None:
        with contextlib.suppress(Exception):
            remove()

    yield Measure(pull, reset=reset)
