"""Import and export of image archives, and images built from a rootfs.

Client-side, as containerd's ``client.Import`` and ``archive.Export``: blobs
move through the content service (each verified against its digest on
commit), image records through the images service, so these work against
our daemon and containerd alike.  Everything an import writes is held by
a lease (the caller's, or one for the call) until image records and
``containerd.io/gc.ref.content.*`` labels hold it.  Archive parsing and
layout building are in :mod:`pycontainerd.images.archive_import`,
:mod:`~pycontainerd.images.archive_export` and :mod:`~pycontainerd.images.rootfs`.

The archive is read from (or written to) an ordinary file object, in 1 MiB
pieces as the blobs stream; large layers are never held in memory.  Tar
parsing, gzip and file reads and writes go through ``AsyncOffload``: a
worker thread in the async client (its event loop never stalls), the work
done in place in the sync one.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from pycontainerd import errdefs, leases
from pycontainerd import platforms as pf
from pycontainerd.archive.compression import Compression, detect
from pycontainerd.client._streams import AsyncOffload
from pycontainerd.images import Descriptor, Image
from pycontainerd.images import archive_export as ae
from pycontainerd.images import archive_import as ai
from pycontainerd.images import mediatypes as mt
from pycontainerd.images import rootfs as rf
from pycontainerd.images.handlers import reachable
from pycontainerd.images.manifest import (
    MAX_MANIFEST_SIZE,
    children,
    filter_platforms,
    gc_labels,
    parse_config,
    parse_index,
    parse_manifest,
    sort_by_platform,
    verify_blob,
)
from pycontainerd.images.unpack import LABEL_UNCOMPRESSED
from pycontainerd.platforms import Platform

if TYPE_CHECKING:
    from pycontainerd.client._async.client import AsyncClient

__all__ = ["export", "import_archive", "import_rootfs"]

log = logging.getLogger("pycontainerd.client")

_CHUNK = 1 << 20


class _Blobs:
    """Small blobs read through the content service, capped and verified."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def read(self, desc: Descriptor) -> bytes:
        if desc.size > MAX_MANIFEST_SIZE or desc.size < 0:
            raise errdefs.InvalidArgument(
                f"blob {desc.digest}: size {desc.size} is over the {MAX_MANIFEST_SIZE}-byte "
                "limit for manifests, indexes and configs"
            )
        return verify_blob(desc, await self._client.content.read(desc.digest))

    async def write(
        self, data: bytes, media_type: str, ref_prefix: str = "manifest-"
    ) -> Descriptor:
        """Store a small document; its descriptor (digest of ``data``)."""
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()
        await self._client.content.write_blob(
            ref_prefix + dgst, data, size=len(data), expected=dgst
        )
        return Descriptor(media_type, dgst, len(data))


async def _chunks(f: IO[bytes], prefix: bytearray) -> AsyncIterator[bytes]:
    """``f`` in pieces, keeping its first bytes in ``prefix`` (to detect compression)."""
    while chunk := await AsyncOffload.run(f.read, _CHUNK):
        if len(prefix) < 4:
            prefix.extend(chunk[: 4 - len(prefix)])
        yield chunk


async def _store_entry(
    client: AsyncClient, f: IO[bytes], name: str, size: int, expected: str
) -> tuple[Descriptor, bytes]:
    """Stream one archive entry into content; its descriptor and first bytes."""
    prefix = bytearray()
    try:
        dgst = await client.content.write_blob(
            "tar-" + name, _chunks(f, prefix), size=size, expected=expected
        )
    except errdefs.ContainerdError as exc:
        raise type(exc)(f"failed to ingest {name!r}: {exc.message}") from exc
    return Descriptor("", dgst, size), bytes(prefix)


async def _read_archive(client: AsyncClient, stream: IO[bytes]) -> ai.ArchiveContents:
    """Stream every entry of the archive: small JSON kept, files into content."""
    contents = ai.ArchiveContents()
    try:
        tar = await AsyncOffload.run(tarfile.open, fileobj=stream, mode="r|*")
    except tarfile.TarError as exc:
        raise errdefs.InvalidArgument(f"image archive is not a tar stream: {exc}") from None
    with tar:
        try:
            # next() reads (and in a stream, skips the rest of the last entry).
            while (member := await AsyncOffload.run(tar.next)) is not None:
                if member.issym():
                    contents.add_symlink(member.name, member.linkname)
                    continue
                if not member.isreg():
                    continue
                name, kind, expected = ai.classify(member.name)
                f = tar.extractfile(member)
                if f is None:
                    continue
                if kind is ai.EntryKind.LAYOUT:
                    contents.layout = await AsyncOffload.run(ai.read_capped, f, member.size, name)
                elif kind is ai.EntryKind.INDEX:
                    contents.index = await AsyncOffload.run(ai.read_capped, f, member.size, name)
                elif kind is ai.EntryKind.DOCKER_MANIFEST:
                    contents.docker_manifest = await AsyncOffload.run(
                        ai.read_capped, f, member.size, name
                    )
                elif kind is not ai.EntryKind.SKIP:
                    desc, prefix = await _store_entry(client, f, name, member.size, expected)
                    contents.files[name] = (desc, detect(prefix))
        except tarfile.TarError as exc:
            raise errdefs.InvalidArgument(f"image archive: {exc}") from None
    return contents


async def _compressed_twin(client: AsyncClient, layer: Descriptor) -> Descriptor | None:
    """A compressed blob already stored for this uncompressed layer, as
    containerd's importer reuses one (found by its ``containerd.io/uncompressed``
    label); None if there is none."""
    found = None
    async for info in client.content.walk(f'labels."{LABEL_UNCOMPRESSED}"=={layer.digest}'):
        if info.labels.get(LABEL_UNCOMPRESSED) == layer.digest:
            found = info
    if found is None:
        return None
    prefix = await client.content.read(found.digest, size=4)
    return Descriptor(ai.layer_media_type(detect(prefix)), found.digest, found.size)


async def _compress(client: AsyncClient, layer: Descriptor) -> Descriptor:
    """Store a gzip copy of an uncompressed layer (``--compress-blobs``)."""
    with tempfile.TemporaryFile(prefix="pyctr-compress-") as tmp:
        hashed = rf.HashingWriter(tmp)
        gz = rf.gzip_writer(cast(BinaryIO, hashed))
        async for chunk in client.content.chunks(layer.digest):
            await AsyncOffload.run(gz.write, chunk)
        await AsyncOffload.run(gz.close)
        dgst = "sha256:" + hashed.hash.hexdigest()
        tmp.seek(0)
        ref = "compress-blob-" + layer.digest.replace(":", "-")
        await client.content.write_blob(
            ref, _chunks(tmp, bytearray()), size=hashed.size, expected=dgst
        )
    await client.content.set_labels(dgst, {LABEL_UNCOMPRESSED: layer.digest})
    return Descriptor(mt.DOCKER_LAYER_GZIP, dgst, hashed.size)


async def _docker_layer(
    client: AsyncClient, contents: ai.ArchiveContents, name: str, compress: bool
) -> Descriptor:
    """The manifest entry for one layer file of a Docker archive."""
    stored, compression = contents.file(name, "layer")
    layer = Descriptor(ai.layer_media_type(compression), stored.digest, stored.size)
    if compression is not Compression.UNCOMPRESSED:
        return layer
    twin = await _compressed_twin(client, layer)
    if twin is not None:
        return twin
    return await _compress(client, layer) if compress else layer


async def _docker_index(
    client: AsyncClient, blobs: _Blobs, contents: ai.ArchiveContents, compress: bool
) -> Descriptor:
    """Schema 2 manifests and an index for a ``docker save`` archive."""
    entries: list[Descriptor] = []
    for image in contents.docker_images():
        cfg, _ = contents.file(image.config, "image config")
        config = Descriptor(mt.DOCKER_CONFIG, cfg.digest, cfg.size)
        layers = [await _docker_layer(client, contents, n, compress) for n in image.layers]
        manifest = await blobs.write(ai.docker_manifest(config, layers), mt.DOCKER_MANIFEST)
        p = parse_config(await blobs.read(config)).platform
        platform = pf.normalize(Platform(p.os, p.architecture))
        entries.extend(ai.tagged(ai.with_platform(manifest, platform), image.repo_tags))
    return await blobs.write(ai.index_json(entries), mt.OCI_INDEX)


async def _check_present(client: AsyncClient, desc: Descriptor) -> None:
    try:
        info = await client.content.info(desc.digest)
    except errdefs.NotFound:
        raise errdefs.NotFound(
            f"{desc.media_type or 'blob'} {desc.digest}: missing from the archive"
        ) from None
    if info.size != desc.size:
        raise errdefs.FailedPrecondition(
            f"blob {desc.digest}: {info.size} bytes stored, descriptor says {desc.size}"
        )


async def _label_tree(
    client: AsyncClient, blobs: _Blobs, root: Descriptor, matcher: pf.Matcher
) -> None:
    """Walk from ``root`` (only ``matcher``'s platforms), checking every blob is
    there and labelling each parent with its children, as containerd's
    ``SetChildrenLabels``."""
    seen: set[str] = set()
    # Depth first, parents first, on a stack of our own: an archive's
    # indexes may nest as deep as its author likes.
    stack = [root]
    while stack:
        desc = stack.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        await _check_present(client, desc)
        kids = await children(blobs.read, desc)
        if mt.is_index(desc.media_type):
            kids = filter_platforms(matcher, kids)
            if desc is root and not kids:
                raise errdefs.NotFound("image might be filtered out")
        if kids:
            await client.content.set_labels(desc.digest, gc_labels(desc, kids))
        stack.extend(reversed(kids))


async def _save_images(client: AsyncClient, images: Sequence[Image]) -> list[Image]:
    """Point existing records at their new targets, create the others."""
    saved = []
    for image in images:
        try:
            saved.append(await client.images.update(image, "target"))
        except errdefs.NotFound:
            saved.append(await client.images.create(image.name, image.target, image.labels))
    return saved


async def import_archive(
    client: AsyncClient,
    stream: IO[bytes],
    *,
    ref_translator: ai.RefTranslator | None = None,
    digest_ref: Callable[[str], str] | None = None,
    skip_digest_for_named: bool = False,
    index_name: str = "",
    platform: pf.Matcher | None = None,
    all_platforms: bool = False,
    compress_blobs: bool = False,
) -> list[Image]:
    """Import an OCI layout or ``docker save`` tar; the image records made.

    Images are named by their index entries' ``io.containerd.image.name``
    annotation, else the OCI ref name through ``ref_translator``; with
    ``digest_ref`` each entry is also named ``digest_ref(digest)``, and
    ``index_name`` names the whole index.  Content is imported for
    ``platform`` (default: this host's) or every platform.  A Docker
    layer stored uncompressed is replaced by a compressed blob of it that
    the store already has, or (``compress_blobs``) by a new gzip copy.
    """
    matcher = pf.any_platform() if all_platforms else (platform or pf.only(pf.default()))
    blobs = _Blobs(client)
    # The caller's lease if there is one, else a lease for this operation.
    async with client.lease() if leases.current() is None else contextlib.nullcontext():
        contents = await _read_archive(client, stream)
        if contents.is_oci():
            root = await blobs.write(contents.oci_index(), mt.OCI_INDEX)
        else:
            root = await _docker_index(client, blobs, contents, compress_blobs)
        images = [Image(index_name, root)] if index_name else []
        for entry in parse_index(await blobs.read(root), root.media_type).manifests:
            name = ai.image_name(entry.annotations, ref_translator)
            if name:
                images.append(Image(name, entry))
            if skip_digest_for_named and name:
                continue
            if digest_ref is not None and (ref := digest_ref(entry.digest)):
                images.append(Image(ref, entry))
        await _label_tree(client, blobs, root, matcher)
        saved = await _save_images(client, images)
        log.debug("imported %d images from index %s", len(saved), root.digest)
        return saved


async def _copy_blob(client: AsyncClient, desc: Descriptor, out: BinaryIO) -> None:
    """Stream one blob into the archive, checking it is the blob ``desc`` names."""
    algorithm, _, expected = desc.digest.partition(":")
    h = hashlib.new(algorithm)
    n = 0

    def put(chunk: bytes) -> None:
        h.update(chunk)
        out.write(chunk)

    async for chunk in client.content.chunks(desc.digest):
        n += len(chunk)
        if n > desc.size:
            break
        await AsyncOffload.run(put, chunk)
    if n != desc.size or h.hexdigest() != expected:
        raise errdefs.FailedPrecondition(
            f"blob {desc.digest}: stored content does not match its descriptor"
        )


async def export(
    client: AsyncClient,
    out: BinaryIO,
    names: Sequence[str],
    *,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    skip_manifest_json: bool = False,
    skip_non_distributable: bool = False,
) -> None:
    """Write the images ``names`` to ``out`` as an OCI layout tar.

    Index entries for ``platforms`` (default: exactly this host's) are
    included, or all with ``all_platforms``; Docker's ``manifest.json``
    names the best manifest of each image unless ``skip_manifest_json``.
    """
    matcher = pf.ordered(*platforms) if platforms else pf.default_strict()
    blobs = _Blobs(client)
    targets: list[Descriptor] = []
    found: dict[str, Descriptor] = {}
    docker: dict[str, ae.DockerEntry] = {}
    resolved: dict[str, str] = {}

    async def add_tree(desc: Descriptor) -> None:
        for d in await reachable(blobs.read, desc):
            found.setdefault(d.digest, d)

    async def add_index(desc: Descriptor) -> str:
        """Add an index and its platforms' trees; the manifest manifest.json names."""
        found.setdefault(desc.digest, desc)
        matching = []
        for m in parse_index(await blobs.read(desc), desc.media_type).manifests:
            if m.platform is None or matcher.match(m.platform):
                matching.append(m)
            elif not all_platforms:
                continue
            await add_tree(m)
        if skip_manifest_json:
            return ""
        if not matching:
            raise errdefs.NotFound("no manifest found for platform")
        best = sort_by_platform(matcher, matching)[0]
        manifest = parse_manifest(await blobs.read(best), best.media_type)
        docker[best.digest] = ae.DockerEntry(manifest)
        return best.digest

    for name in names:
        image = await client.images.get(name)
        desc = ae.named(image.target, name)
        targets.append(desc)
        if mt.is_manifest(desc.media_type):
            if desc.digest not in docker:
                await add_tree(desc)
                manifest = parse_manifest(await blobs.read(desc), desc.media_type)
                docker[desc.digest] = ae.DockerEntry(manifest)
            # As containerd: a skipped manifest.json still lists the manifest, unnamed.
            if not skip_manifest_json:
                docker[desc.digest].names.append(name)
        elif mt.is_index(desc.media_type):
            if desc.digest not in resolved:
                resolved[desc.digest] = await add_index(desc)
            if best := resolved[desc.digest]:
                docker[best].names.append(name)
        else:
            raise errdefs.InvalidArgument(
                f"image {name!r}: only manifests and indexes may be exported, "
                f"not {desc.media_type!r}"
            )
    if skip_non_distributable:
        found = {k: d for k, d in found.items() if not mt.is_non_distributable(d.media_type)}
    for record in ae.layout_records(targets, found, list(docker.values())):
        if record.blob is not None and record.data is None:
            await AsyncOffload.run(out.write, ae.header(record))
            await _copy_blob(client, record.blob, out)
            await AsyncOffload.run(out.write, ae.padding(record.size))
        else:
            data = record.data or b""
            await AsyncOffload.run(out.write, ae.header(record) + data + ae.padding(record.size))
    await AsyncOffload.run(out.write, ae.end_of_archive())
    await AsyncOffload.run(out.flush)


async def import_rootfs(
    client: AsyncClient,
    source: str | Path,
    name: str,
    *,
    platform: Platform | None = None,
    cmd: Sequence[str] = (),
    entrypoint: Sequence[str] = (),
    env: Sequence[str] = (),
    workdir: str = "",
) -> Image:
    """Build a one-layer OCI image from a directory or tar and name it ``name``.

    The layer is gzip-compressed into a temporary file first (never held in
    memory), then the layer, config and manifest go through content with
    the labels containerd's handlers would set.
    """
    target_platform = platform or pf.default()
    blobs = _Blobs(client)
    # The caller's lease if there is one, else a lease for this operation.
    async with client.lease() if leases.current() is None else contextlib.nullcontext():
        with tempfile.TemporaryFile(prefix="pyctr-rootfs-") as tmp:
            layer = await AsyncOffload.run(rf.build_layer, Path(source), tmp)
            tmp.seek(0)
            await client.content.write_blob(
                "rootfs-" + layer.desc.digest,
                _chunks(tmp, bytearray()),
                size=layer.desc.size,
                expected=layer.desc.digest,
            )
        await client.content.set_labels(layer.desc.digest, {LABEL_UNCOMPRESSED: layer.diff_id})
        config_bytes = rf.image_config(
            layer.diff_id, target_platform, cmd=cmd, entrypoint=entrypoint, env=env, workdir=workdir
        )
        config = await blobs.write(config_bytes, mt.OCI_CONFIG, "config-")
        manifest = await blobs.write(rf.oci_manifest(config, [layer.desc]), mt.OCI_MANIFEST)
        await client.content.set_labels(manifest.digest, gc_labels(manifest, [config, layer.desc]))
        return (await _save_images(client, [Image(name, manifest)]))[0]
