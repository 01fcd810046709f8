"""Images as objects: ``client.get_image(name)`` and unpacking.

An :class:`AsyncImage` is what containerd's Go client calls ``Image``: an
image record plus the platform it is used for, with the questions a user
asks of it (its config, its diff IDs, is it unpacked, how much disk does
it use) and :meth:`AsyncImage.unpack`, which applies its layers into a
snapshotter the way containerd's client does, so it works against our
daemon and against containerd alike.  Pure helpers (layer pairing, key
and label names, the spec an image config implies) live in
:mod:`pycontainerd.images.unpack`.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pycontainerd import errdefs, leases, namespaces, platforms
from pycontainerd.client._streams import AsyncOffload
from pycontainerd.images import Descriptor
from pycontainerd.images import Image as ImageRecord
from pycontainerd.images import manifest as manifests
from pycontainerd.images.accounts import read_accounts
from pycontainerd.images.identity import chain_id, chain_ids
from pycontainerd.images.unpack import (
    DEFAULT_SNAPSHOTTER,
    LABEL_DEFAULT_SNAPSHOTTER,
    LABEL_GC_SNAPSHOT_PREFIX,
    LABEL_UNCOMPRESSED,
    Layer,
    gc_snapshot_label,
    pair_layers,
    unpack_key,
    with_image_config,
)
from pycontainerd.mount import temp_mount_async
from pycontainerd.oci import spec as oci
from pycontainerd.snapshots import LABEL_UNPACKED_REF, Usage

if TYPE_CHECKING:
    from pycontainerd.client._async.client import AsyncClient
    from pycontainerd.client._async.snapshots import AsyncSnapshotService

__all__ = ["AsyncImage", "apply_layer", "resolve_snapshotter", "unpack"]

log = logging.getLogger("pycontainerd.client")

# Tries at a fresh key when a random unpack key is already taken.
_KEY_ATTEMPTS = 3


async def resolve_snapshotter(client: AsyncClient, name: str = "") -> str:
    """``name``, else the namespace's default snapshotter label, else overlayfs.

    containerd's client resolves an empty name the same way, so a namespace
    labelled ``containerd.io/defaults/snapshotter=native`` unpacks there.
    """
    if name:
        return name
    try:
        ns = await client.namespaces.get(namespaces.current() or client.namespace)
    except errdefs.NotFound:
        return DEFAULT_SNAPSHOTTER
    return ns.labels.get(LABEL_DEFAULT_SNAPSHOTTER) or DEFAULT_SNAPSHOTTER


class AsyncImage:
    """An image of the daemon, for one platform (the host's by default)."""

    def __init__(
        self,
        client: AsyncClient,
        record: ImageRecord,
        *,
        platform: platforms.Matcher | None = None,
    ) -> None:
        self._client = client
        self._record = record
        self._platform = platform or platforms.only(platforms.default())

    def __repr__(self) -> str:
        return f"<Image {self.name!r}>"

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def target(self) -> Descriptor:
        return self._record.target

    @property
    def labels(self) -> Mapping[str, str]:
        return self._record.labels

    @property
    def record(self) -> ImageRecord:
        return self._record

    # -- reading the image's metadata

    async def read_blob(self, desc: Descriptor) -> bytes:
        """A small blob (manifest, index, config), size-capped and verified."""
        if desc.size > manifests.MAX_MANIFEST_SIZE or desc.size < 0:
            raise errdefs.InvalidArgument(
                f"blob {desc.digest}: size {desc.size} is over the "
                f"{manifests.MAX_MANIFEST_SIZE}-byte limit for manifests and configs"
            )
        data = await self._client.content.read(desc.digest)
        return manifests.verify_blob(desc, data)

    async def manifest(self) -> tuple[Descriptor, manifests.Manifest]:
        """The manifest for this image's platform (resolving an index)."""
        return await manifests.resolve_manifest(self.read_blob, self.target, self._platform)

    async def config(self) -> Descriptor:
        """The descriptor of the image config for this platform."""
        _, mfst = await self.manifest()
        return mfst.config

    async def image_config(self) -> manifests.ImageConfig:
        """The parsed image config (``raw`` JSON, ``diff_ids``, ``platform``)."""
        return manifests.parse_config(await self.read_blob(await self.config()))

    async def rootfs(self) -> list[str]:
        """The layers' uncompressed digests (diff IDs), bottom first."""
        return list((await self.image_config()).diff_ids)

    async def layers(self) -> list[Layer]:
        """Each layer blob with its diff ID, bottom first."""
        _, mfst = await self.manifest()
        config = manifests.parse_config(await self.read_blob(mfst.config))
        return pair_layers(mfst.layers, config.diff_ids)

    async def spec_opts(
        self,
        args: Sequence[str] = (),
        *,
        snapshotter: str = "",
        passwd: str | None = None,
        group: str | None = None,
    ) -> oci.SpecOpt:
        """The spec option that runs this image's entrypoint/cmd (or ``args``)
        as its ``USER``.

        As containerd's ``WithImageConfig``, the user (a name, or a uid whose
        primary group is wanted) and its supplementary groups are looked up
        in the image's own /etc/passwd and /etc/group, read by
        :meth:`accounts` from its layers unpacked in ``snapshotter``.  A
        caller that already has those files passes them as ``passwd`` and
        ``group`` (``""`` for none) and nothing is mounted.
        """
        config = (await self.image_config()).raw
        if passwd is None and group is None:
            passwd, group = await self.accounts(snapshotter)
        return with_image_config(config, args, passwd=passwd, group=group)

    async def accounts(self, snapshotter: str = "") -> tuple[str | None, str | None]:
        """The image's /etc/passwd and /etc/group (None when absent).

        They are read from a temporary read-only view of the image's layers
        in ``snapshotter`` (which must hold them: see :meth:`unpack`), with
        symlinks kept inside the image's root.  The view lives under a lease
        of its own, so a crash leaves nothing behind.
        """
        name = await resolve_snapshotter(self._client, snapshotter)
        top = chain_id(await self.rootfs())
        sn = self._client.snapshot_service(name)
        key = f"accounts-{secrets.token_hex(8)} {top}"
        async with self._client.lease():
            try:
                mounts = await sn.view(key, top)
            except errdefs.NotFound as exc:
                raise errdefs.FailedPrecondition(
                    f"image {errdefs.q(self.name)} is not unpacked in snapshotter "
                    f"{errdefs.q(name)}, so its /etc/passwd and /etc/group cannot be read: "
                    f"{exc.message}"
                ) from exc
            try:
                async with temp_mount_async(mounts, readonly=True) as root:
                    return await AsyncOffload.run(read_accounts, root)
            finally:
                with contextlib.suppress(errdefs.NotFound):
                    await sn.remove(key)

    # -- snapshots

    async def is_unpacked(self, snapshotter: str = "") -> bool:
        """True when the snapshot of all layers exists in ``snapshotter``."""
        name = await resolve_snapshotter(self._client, snapshotter)
        top = chain_id(await self.rootfs())
        try:
            await self._client.snapshot_service(name).stat(top)
        except errdefs.NotFound:
            return False
        return True

    async def unpack(self, snapshotter: str = "") -> bool:
        """Apply every layer not yet in ``snapshotter``; True if any was applied.

        Layers are applied bottom up into snapshots named by chain ID; one
        that exists (from this or another image) is skipped.  Afterwards the
        layer blobs carry ``containerd.io/uncompressed`` and the config
        carries ``containerd.io/gc.ref.snapshot.<snapshotter>``, which keeps
        the snapshots as long as the image, as with containerd.
        """
        name = await resolve_snapshotter(self._client, snapshotter)
        # As containerd's WithLease: what the unpack creates is held by the
        # caller's lease if there is one, else by one that ends with it (the
        # config's gc label holds the snapshots from then on).
        own_lease = leases.current() is None
        async with self._client.lease() if own_lease else contextlib.nullcontext():
            _, mfst = await self.manifest()
            config = manifests.parse_config(await self.read_blob(mfst.config))
            layers = pair_layers(mfst.layers, config.diff_ids)
            chain = chain_ids(config.diff_ids)
            sn = self._client.snapshot_service(name)
            applied = False
            for i, layer in enumerate(layers):
                parent = chain[i - 1] if i else ""
                if await self._apply_layer(sn, layer, chain[i], parent):
                    applied = True
                    # Only now has apply verified the uncompressed digest.
                    await self._client.content.set_labels(
                        layer.blob.digest, {LABEL_UNCOMPRESSED: layer.diff_id}
                    )
            if chain:
                await self._client.content.set_labels(
                    mfst.config.digest, {gc_snapshot_label(name): chain[-1]}
                )
        return applied

    async def _apply_layer(
        self, sn: AsyncSnapshotService, layer: Layer, chain: str, parent: str
    ) -> bool:
        return await apply_layer(self._client, sn, layer, chain, parent)

    # -- sizes

    async def size(self) -> int:
        """Bytes of the manifest, config and layers for this platform (as ctr's SIZE)."""
        mdesc, mfst = await self.manifest()
        total = mdesc.size + mfst.config.size + sum(layer.size for layer in mfst.layers)
        if mdesc.digest != self.target.digest:
            total += self.target.size
        return total

    async def usage(self, *, snapshots: bool = False) -> int:
        """Bytes this image holds on disk: its content for this platform, plus
        (``snapshots``) the snapshots its config's gc labels point at.

        Like containerd's ``Usage(WithManifestLimit(platform, 1),
        WithSnapshotUsage())``: a blob counts at its stored size; a missing
        layer counts nothing.
        """
        mdesc, mfst = await self.manifest()
        descs = [mfst.config, *mfst.layers]
        if mdesc.digest != self.target.digest:
            descs.insert(0, mdesc)
        total = self.target.size
        for desc in descs:
            try:
                info = await self._client.content.info(desc.digest)
            except errdefs.NotFound:
                continue
            total += max(info.size, desc.size)
            if snapshots:
                total += (await self._snapshot_usage(info.labels)).size
        return total

    async def _snapshot_usage(self, labels: Mapping[str, str]) -> Usage:
        usage = Usage()
        for key, value in labels.items():
            if not key.startswith(LABEL_GC_SNAPSHOT_PREFIX):
                continue
            sn = self._client.snapshot_service(key[len(LABEL_GC_SNAPSHOT_PREFIX) :])
            try:
                usage = usage.add(await sn.usage(value))
            except (errdefs.NotFound, errdefs.InvalidArgument):
                continue
        return usage


async def unpack(
    client: AsyncClient,
    image: ImageRecord,
    *,
    snapshotter: str = "",
    matcher: platforms.Matcher | None = None,
) -> bool:
    """Unpack ``image`` for ``matcher``'s platform; True if any layer was applied."""
    return await AsyncImage(client, image, platform=matcher).unpack(snapshotter)


async def apply_layer(
    client: AsyncClient, sn: AsyncSnapshotService, layer: Layer, chain: str, parent: str
) -> bool:
    """Apply one layer on ``parent`` into a snapshot committed as ``chain``;
    False if that snapshot exists (from this or another unpack).

    The step a pull's pipelined unpack runs for each layer as soon as the
    layer and its parent are in.
    """
    try:
        await sn.stat(chain)
        return False
    except errdefs.NotFound:
        pass
    labels = {LABEL_UNPACKED_REF: chain}
    key = unpack_key(chain)
    for attempt in range(_KEY_ATTEMPTS):
        try:
            mounts = await sn.prepare(key, parent, labels)
            break
        except errdefs.AlreadyExists:
            if attempt == _KEY_ATTEMPTS - 1:
                raise
            key = unpack_key(chain)
    try:
        try:
            diff = await client.diff.apply(layer.blob, mounts)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"failed to extract layer {layer.diff_id}: {exc.message}") from exc
        if diff.digest != layer.diff_id:
            raise errdefs.FailedPrecondition(
                f"wrong diff id calculated on extraction {diff.digest!r} "
                f"(the image config says {layer.diff_id!r})"
            )
        await sn.commit(chain, key, labels)
    except errdefs.AlreadyExists:
        # Another unpack committed the same layer first: theirs is as good.
        await _remove_quietly(sn, key)
        return False
    except BaseException:
        await _remove_quietly(sn, key)
        raise
    return True


async def _remove_quietly(sn: AsyncSnapshotService, key: str) -> None:
    try:
        await sn.remove(key)
    except errdefs.ContainerdError as exc:
        log.warning("extraction snapshot %r removal failed: %s", key, exc)
