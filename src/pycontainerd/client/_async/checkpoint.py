"""Container checkpoints as images, and containers restored from them
(containerd's ``container.Checkpoint``, ``Client.Restore`` and their
``WithCheckpoint*`` / ``WithRestore*`` options).

A checkpoint is an image whose target is an OCI index of what was saved,
each entry found again by its media type:

* ``...checkpoint.runtime.options+proto``: the container's runtime options
  (a serialized ``Any``), when it has some;
* the container's image manifest (``image=True``);
* the rw layer, a gzip layer of the changes in the container's snapshot
  (``rw=True``);
* the task's checkpoint (``task=True``): CRIU's image as a tar, the
  container's spec as ``...checkpoint.config.v1+proto`` (the tasks service
  writes both) and the checkpoint options used.

The index's annotations name the image (``org.opencontainers.image.ref.name``),
the runtime and the snapshotter.  Restoring makes a container from them: a
new snapshot on the image, the saved spec and runtime, the rw layer applied
if asked.  Its task starts afresh unless it is created from the CRIU image
(:func:`task_checkpoint`), which needs CRIU on the daemon's host.

Everything written is held by a lease until the image record holds it, as
containerd's client does.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import TYPE_CHECKING

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from pycontainerd import errdefs, platforms, typeurl
from pycontainerd.api.runtime.v2.runc.options import oci_pb2 as runc_options
from pycontainerd.images import Descriptor, mediatypes
from pycontainerd.images import manifest as manifests
from pycontainerd.images.identity import chain_id
from pycontainerd.snapshots import Kind

if TYPE_CHECKING:
    from pycontainerd.client._async.client import AsyncClient
    from pycontainerd.client._async.containers import AsyncContainer
    from pycontainerd.client._async.image import AsyncImage

__all__ = [
    "ANNOTATION_IMAGE_NAME",
    "ANNOTATION_RUNTIME",
    "ANNOTATION_SNAPSHOTTER",
    "ANNOTATION_TASK_IMAGE_NAME",
    "LABEL_CHECKPOINT",
    "MEDIA_TYPE_CHECKPOINT",
    "MEDIA_TYPE_CHECKPOINT_CONFIG",
    "MEDIA_TYPE_CHECKPOINT_OPTIONS",
    "MEDIA_TYPE_CHECKPOINT_RUNTIME_OPTIONS",
    "checkpoint",
    "checkpoint_task",
    "restore",
    "task_checkpoint",
]

MEDIA_TYPE_CHECKPOINT = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
MEDIA_TYPE_CHECKPOINT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"
MEDIA_TYPE_CHECKPOINT_OPTIONS = "application/vnd.containerd.container.checkpoint.options.v1+proto"
MEDIA_TYPE_CHECKPOINT_RUNTIME_OPTIONS = (
    "application/vnd.containerd.container.checkpoint.runtime.options+proto"
)
ANNOTATION_IMAGE_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_RUNTIME = "io.containerd.checkpoint.runtime"
ANNOTATION_SNAPSHOTTER = "io.containerd.checkpoint.snapshotter"
#: The image a task checkpoint's container runs (containerd 1.6's Task.Checkpoint).
ANNOTATION_TASK_IMAGE_NAME = "image.name"
#: The label on the image of a task checkpoint.
LABEL_CHECKPOINT = "containerd.io/checkpoint"


def _host_platform() -> platforms.Platform:
    # containerd records GOOS/GOARCH only, never a variant.
    host = platforms.default()
    return platforms.Platform(host.os, host.architecture)


async def _write(client: AsyncClient, media_type: str, ref: str, data: bytes) -> Descriptor:
    digest = await client.content.write_blob(ref, data, size=len(data))
    return Descriptor(media_type, digest, len(data), platform=_host_platform())


async def checkpoint(
    client: AsyncClient,
    container: AsyncContainer,
    ref: str,
    *,
    image: bool = False,
    rw: bool = False,
    task: bool = False,
    exit: bool = False,
) -> AsyncImage:
    """Checkpoint ``container`` into the image ``ref``; see the module docstring.

    ``task`` checkpoints its running task with CRIU (and ``exit`` stops it
    after); the caller pauses the task around the whole, as ctr does.
    """
    from pycontainerd.client._async.image import AsyncImage

    info = await container.info()
    if not info.image:
        raise errdefs.FailedPrecondition(
            f"container {errdefs.q(container.id)} has no image to checkpoint against"
        )
    async with client.lease():
        entries: list[Descriptor] = []
        runtime_options = info.runtime.options
        if runtime_options is not None and runtime_options.type_url:
            entries.append(
                await _write(
                    client,
                    MEDIA_TYPE_CHECKPOINT_RUNTIME_OPTIONS,
                    f"{container.id}-runtime-options",
                    runtime_options.SerializeToString(),
                )
            )
        if image:
            entries.append((await client.images.get(info.image)).target)
        if rw:
            entries.append(await _rw_layer(client, info.snapshotter, info.snapshot_key))
        if task:
            entries += await _task(client, container, exit=exit)
        annotations = {
            ANNOTATION_RUNTIME: info.runtime.name,
            ANNOTATION_SNAPSHOTTER: info.snapshotter,
            ANNOTATION_IMAGE_NAME: info.image,
        }
        target = await _write_index(client, f"{container.id}index", entries, annotations)
        record = await client.images.create(ref, target)
    return AsyncImage(client, record)


async def _rw_layer(client: AsyncClient, snapshotter: str, key: str) -> Descriptor:
    """The changes in snapshot ``key`` over its parent, as a gzip layer
    (containerd's ``rootfs.CreateDiff``)."""
    if not snapshotter or not key:
        raise errdefs.FailedPrecondition("a container without a snapshot has no rw layer")
    sn = client.snapshot_service(snapshotter)
    info = await sn.stat(key)
    lower_key = f"{info.parent}-parent-view-{secrets.token_hex(8)}"
    lower = await sn.view(lower_key, info.parent)
    upper_key = ""
    try:
        if info.kind == Kind.ACTIVE:
            upper = await sn.mounts(key)
        else:
            upper_key = f"{key}-view-{secrets.token_hex(8)}"
            upper = await sn.view(upper_key, key)
        layer = await client.diff.compare(lower, upper, ref=f"checkpoint-rw-{key}")
    finally:
        for view in (lower_key, upper_key):
            if view:
                with contextlib.suppress(errdefs.NotFound):
                    await sn.remove(view)
    return Descriptor(layer.media_type, layer.digest, layer.size, platform=_host_platform())


async def _task(client: AsyncClient, container: AsyncContainer, *, exit: bool) -> list[Descriptor]:
    """The task's checkpoint (CRIU's image and the spec, stored by the
    daemon) and the options it was made with."""
    options = runc_options.CheckpointOptions(exit=exit, file_locks=True)
    task = await container.task()
    saved = await task.checkpoint(options=options)
    entries = [
        Descriptor(
            d.media_type,
            d.digest,
            d.size,
            annotations=dict(d.annotations),
            platform=_host_platform(),
        )
        for d in saved
    ]
    packed = typeurl.marshal_any(options).SerializeToString()
    entries.append(
        await _write(
            client, MEDIA_TYPE_CHECKPOINT_OPTIONS, f"{container.id}-checkpoint-options", packed
        )
    )
    return entries


async def checkpoint_task(
    client: AsyncClient,
    container: AsyncContainer,
    *,
    options: runc_options.CheckpointOptions | None = None,
    name: str = "",
) -> AsyncImage | None:
    """Checkpoint ``container``'s task with CRIU (containerd's ``Task.Checkpoint``).

    Into ``options.image_path`` when it names one (nothing is stored; None),
    else into an image ``name`` (default ``containerd.io/checkpoint/ID:DATE``,
    labelled ``containerd.io/checkpoint=true``) whose index holds the task's
    checkpoint, the container's image and its rw layer.  The task is paused
    meanwhile, unless it already was.
    """
    from pycontainerd.client._async.image import AsyncImage
    from pycontainerd.client._async.task import ProcessStatus

    info = await container.info()
    name = name or f"containerd.io/checkpoint/{container.id}:{time.strftime('%m-%d-%Y-%H:%M:%S')}"
    async with client.lease():
        task = await container.task()
        paused = (await task.status()).status == ProcessStatus.PAUSED
        if not paused:
            await task.pause()
        try:
            saved = await task.checkpoint(options=options)
            if options is not None and options.image_path:
                return None
            entries = [
                Descriptor(
                    d.media_type,
                    d.digest,
                    d.size,
                    annotations=dict(d.annotations),
                    platform=_host_platform(),
                )
                for d in saved
            ]
            annotations = {
                ANNOTATION_RUNTIME: info.runtime.name,
                ANNOTATION_SNAPSHOTTER: info.snapshotter,
            }
            if info.image:
                entries.append((await client.images.get(info.image)).target)
                annotations[ANNOTATION_TASK_IMAGE_NAME] = info.image
            if info.snapshot_key:
                entries.append(await _rw_layer(client, info.snapshotter, info.snapshot_key))
        finally:
            if not paused:
                await task.resume()
        target = await _write_index(client, container.id, entries, annotations)
        record = await client.images.create(name, target, {LABEL_CHECKPOINT: "true"})
    return AsyncImage(client, record)


async def _write_index(
    client: AsyncClient, ref: str, entries: list[Descriptor], annotations: dict[str, str]
) -> Descriptor:
    index = {
        "schemaVersion": 2,
        "manifests": [manifests.descriptor_to_json(d) for d in entries],
        "annotations": annotations,
    }
    data = manifests.dumps(index)
    labels = {f"{manifests.GC_REF_PREFIX}{i}": d.digest for i, d in enumerate(entries)}
    digest = await client.content.write_blob(ref, data, size=len(data), labels=labels)
    return Descriptor(mediatypes.OCI_INDEX, digest, len(data))


async def _index(client: AsyncClient, checkpoint_image: AsyncImage) -> manifests.Index:
    target = checkpoint_image.target
    if not mediatypes.is_index(target.media_type):
        raise errdefs.InvalidArgument(
            f"image {errdefs.q(checkpoint_image.name)} is not a checkpoint: "
            f"its target is a {target.media_type}, not an index"
        )
    if target.size > manifests.MAX_MANIFEST_SIZE:
        raise errdefs.InvalidArgument(f"checkpoint index of {target.size} bytes is too large")
    return manifests.parse_index(await client.content.read(target.digest), target.media_type)


def _find(index: manifests.Index, media_type: str, name: str) -> Descriptor:
    for entry in index.manifests:
        if entry.media_type == media_type:
            return entry
    raise errdefs.NotFound(f"checkpoint {errdefs.q(name)}: no {media_type} in its index")


def _annotation(index: manifests.Index, key: str, what: str, name: str) -> str:
    value = index.annotations.get(key, "")
    if not value:
        raise errdefs.InvalidArgument(f"checkpoint {errdefs.q(name)}: {what} not found in index")
    return value


async def _blob(client: AsyncClient, desc: Descriptor) -> bytes:
    if desc.size > manifests.MAX_MANIFEST_SIZE:
        raise errdefs.InvalidArgument(f"{desc.media_type} of {desc.size} bytes is too large")
    return await client.content.read(desc.digest)


def _any(data: bytes, what: str) -> any_pb2.Any:
    try:
        return any_pb2.Any.FromString(data)
    except DecodeError as exc:
        raise errdefs.InvalidArgument(f"checkpoint {what} is not a serialized Any: {exc}") from None


async def restore(
    client: AsyncClient, id: str, checkpoint_image: AsyncImage, *, rw: bool = False
) -> AsyncContainer:
    """A new container ``id`` from a checkpoint: a snapshot on the image it
    names, its saved spec and runtime, and (``rw``) its rw layer applied."""
    from pycontainerd.client._async.containers import with_runtime, with_spec

    name = checkpoint_image.name
    index = await _index(client, checkpoint_image)
    image_name = _annotation(index, ANNOTATION_IMAGE_NAME, "image name", name)
    snapshotter = _annotation(index, ANNOTATION_SNAPSHOTTER, "snapshotter", name)
    runtime = _annotation(index, ANNOTATION_RUNTIME, "runtime", name)
    spec = _any(await _blob(client, _find(index, MEDIA_TYPE_CHECKPOINT_CONFIG, name)), "config")
    runtime_options: any_pb2.Any | None = None
    for entry in index.manifests:
        if entry.media_type == MEDIA_TYPE_CHECKPOINT_RUNTIME_OPTIONS:
            runtime_options = _any(await _blob(client, entry), "runtime options")
            break
    layer: Descriptor | None = None
    if rw:
        layer = _find(index, mediatypes.OCI_LAYER_GZIP, name)
    image = await client.get_image(image_name)
    async with client.lease():
        sn = client.snapshot_service(snapshotter)
        mounts = await sn.prepare(id, chain_id(await image.rootfs()))
        if layer is not None:
            await client.diff.apply(layer, mounts)
        return await client.new_container(
            id,
            with_spec(spec),
            with_runtime(runtime, runtime_options),
            image=image.name,
            snapshotter=snapshotter,
            snapshot_key=id,
        )


async def task_checkpoint(client: AsyncClient, checkpoint_image: AsyncImage) -> Descriptor:
    """The CRIU image in a checkpoint, to create a task from
    (containerd's ``WithTaskCheckpoint``)."""
    index = await _index(client, checkpoint_image)
    try:
        return _find(index, MEDIA_TYPE_CHECKPOINT, checkpoint_image.name)
    except errdefs.NotFound:
        raise errdefs.NotFound(
            f"checkpoint not found in index {checkpoint_image.target.digest}"
        ) from None
