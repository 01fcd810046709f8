"""Containers over the containers service: records, and the handle users hold.

``client.containers`` is the store face (create, get, list, update, delete
of :class:`pycontainerd.containers.Container` records).  ``client.new_container``
and ``client.load_container`` return an :class:`AsyncContainer`, the handle
containerd's Go client calls ``Container``: it knows its id and reads or
changes its record on demand.

Like containerd's ``NewContainerOpts``, a container is built by options:
plain callables that take the record being built and return it changed
(records are frozen), e.g. ``with_container_labels({"app": "web"})``.
Options that must ask the daemon (prepare the root filesystem snapshot,
check that one exists) are :class:`AsyncClientOpt` objects instead, applied
in the same order with the client at hand: ``with_new_snapshot(id, image)``.

This module is converted to the sync client by ``tools/unasync.py``.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2, field_mask_pb2

from pycontainerd import containers, errdefs
from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from pycontainerd.client._async.image import AsyncImage, resolve_snapshotter
from pycontainerd.client._remap import MAX_ID, shift_ownership
from pycontainerd.client._streams import AsyncOffload
from pycontainerd.images.identity import chain_id
from pycontainerd.mount import temp_mount_async
from pycontainerd.oci import spec as oci_spec
from pycontainerd.wire import containers as wire

if TYPE_CHECKING:
    from pycontainerd import cio
    from pycontainerd.client._async.client import AsyncClient, _Call
    from pycontainerd.client._async.snapshots import AsyncSnapshotService
    from pycontainerd.client._async.task import AsyncTask
    from pycontainerd.mount import Mount

__all__ = [
    "DEFAULT_RUNTIME",
    "AnyContainerOpt",
    "AsyncClientOpt",
    "AsyncContainer",
    "AsyncContainers",
    "NewContainerOpt",
    "with_container_extension",
    "with_container_labels",
    "with_image",
    "with_image_name",
    "with_new_snapshot",
    "with_new_snapshot_view",
    "with_remapped_snapshot",
    "with_remapped_snapshot_view",
    "with_runtime",
    "with_snapshot",
    "with_snapshotter",
    "with_spec",
]

#: The runtime a new container gets unless told otherwise (containerd's default).
DEFAULT_RUNTIME = "io.containerd.runc.v2"

NewContainerOpt = Callable[[containers.Container], containers.Container]
"""An option for ``new_container``: takes the record being built, returns it changed."""


class AsyncClientOpt:
    """An option that needs the daemon: applied with the client, in order."""

    async def apply(self, client: AsyncClient, c: containers.Container) -> containers.Container:
        raise NotImplementedError


AnyContainerOpt = NewContainerOpt | AsyncClientOpt
"""What ``new_container`` and ``AsyncContainer.update`` accept."""


async def _apply_opts(
    client: AsyncClient, record: containers.Container, opts: tuple[AnyContainerOpt, ...]
) -> containers.Container:
    for opt in opts:
        if isinstance(opt, AsyncClientOpt):
            record = await opt.apply(client, record)
        else:
            record = opt(record)
    return record


def with_container_labels(labels: Mapping[str, str]) -> NewContainerOpt:
    """Add (or replace) labels on the new container."""
    return lambda c: dataclasses.replace(c, labels={**c.labels, **labels})


def with_image_name(name: str) -> NewContainerOpt:
    """Record the image the container was made from (by name only)."""
    return lambda c: dataclasses.replace(c, image=name)


def with_runtime(name: str, options: any_pb2.Any | None = None) -> NewContainerOpt:
    """Run the container's tasks with ``name`` (``io.containerd.runc.v2``) and options."""
    return lambda c: dataclasses.replace(c, runtime=containers.RuntimeInfo(name, options))


def with_spec(spec: Mapping[str, Any] | any_pb2.Any) -> NewContainerOpt:
    """Set the OCI runtime spec, as a JSON-like mapping or an already packed Any."""
    packed = spec if isinstance(spec, any_pb2.Any) else oci_spec.to_any(spec)
    return lambda c: dataclasses.replace(c, spec=packed)


def with_snapshotter(name: str) -> NewContainerOpt:
    """Name the snapshotter holding the container's root filesystem."""
    return lambda c: dataclasses.replace(c, snapshotter=name)


def with_image(image: AsyncImage) -> NewContainerOpt:
    """Record the image the container is made from."""
    return with_image_name(image.name)


class _Snapshot(AsyncClientOpt):
    """Root filesystem from a snapshot: a new one on an image, or an existing one."""

    def __init__(
        self,
        key: str,
        image: AsyncImage | None,
        *,
        view: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.key = key
        self.image = image
        self.view = view
        self.labels = dict(labels or {})

    async def apply(self, client: AsyncClient, c: containers.Container) -> containers.Container:
        snapshotter = await resolve_snapshotter(client, c.snapshotter)
        sn = client.snapshot_service(snapshotter)
        if self.image is None:
            await sn.mounts(self.key)  # fail now, not at task start, if it is missing
            return dataclasses.replace(c, snapshotter=snapshotter, snapshot_key=self.key)
        parent = chain_id(await self.image.rootfs())
        if self.view:
            await sn.view(self.key, parent, self.labels)
        else:
            await sn.prepare(self.key, parent, self.labels)
        return dataclasses.replace(
            c, snapshotter=snapshotter, snapshot_key=self.key, image=self.image.name
        )


def with_new_snapshot(
    key: str, image: AsyncImage, *, labels: Mapping[str, str] | None = None
) -> AsyncClientOpt:
    """Prepare a writable snapshot ``key`` on ``image``'s layers as the root
    filesystem (in the container's snapshotter; set it first with
    :func:`with_snapshotter`).  The image must be unpacked there."""
    return _Snapshot(key, image, labels=labels)


def with_new_snapshot_view(
    key: str, image: AsyncImage, *, labels: Mapping[str, str] | None = None
) -> AsyncClientOpt:
    """Like :func:`with_new_snapshot`, but a read-only view."""
    return _Snapshot(key, image, view=True, labels=labels)


def with_snapshot(key: str) -> AsyncClientOpt:
    """Use the existing snapshot ``key`` as the container's root filesystem."""
    return _Snapshot(key, None)


class _RemappedSnapshot(AsyncClientOpt):
    """Root filesystem from a copy of the image's snapshot whose owners are
    shifted by a user namespace's host ids (containerd's ``WithRemappedSnapshot``).

    The copy is the committed snapshot ``<chain id>-<uid>-<gid>``, shared by
    every container remapped alike: made once (prepared as ``...-remap-*``,
    mounted here, shifted, committed), then only prepared on.  Mounting it
    needs this client to run on the daemon's host, as root.
    """

    def __init__(self, key: str, image: AsyncImage, uid: int, gid: int, *, view: bool) -> None:
        for value, what in ((uid, "uid"), (gid, "gid")):
            if not 0 <= value <= MAX_ID:
                raise errdefs.InvalidArgument(f"remapped snapshot: host {what} {value} is invalid")
        self.key = key
        self.image = image
        self.uid = uid
        self.gid = gid
        self.view = view

    async def apply(self, client: AsyncClient, c: containers.Container) -> containers.Container:
        snapshotter = await resolve_snapshotter(client, c.snapshotter)
        sn = client.snapshot_service(snapshotter)
        parent = chain_id(await self.image.rootfs())
        remapped = f"{parent}-{self.uid}-{self.gid}"
        make = sn.view if self.view else sn.prepare
        try:
            await make(self.key, remapped)
        except errdefs.NotFound:
            await self._remap(sn, parent, remapped)
            await make(self.key, remapped)
        return dataclasses.replace(
            c, snapshotter=snapshotter, snapshot_key=self.key, image=self.image.name
        )

    async def _remap(self, sn: AsyncSnapshotService, parent: str, remapped: str) -> None:
        # containerd names the work snapshot ``<remapped>-remap``, so a second
        # client remapping the same image at once fails on it; ours is
        # unique, and the commit that comes second finds the first's copy.
        work = f"{remapped}-remap-{secrets.token_hex(4)}"
        mounts = await sn.prepare(work, parent)
        try:
            async with temp_mount_async(mounts) as root:
                await AsyncOffload.run(shift_ownership, root, self.uid, self.gid)
            await sn.commit(remapped, work)
        except errdefs.AlreadyExists:
            with contextlib.suppress(errdefs.NotFound):
                await sn.remove(work)
        except BaseException:
            with contextlib.suppress(errdefs.NotFound):
                await sn.remove(work)
            raise


def with_remapped_snapshot(key: str, image: AsyncImage, uid: int, gid: int) -> AsyncClientOpt:
    """A writable snapshot ``key`` on ``image``'s layers with every owner
    shifted by ``uid``/``gid``: the host ids a user namespace maps the
    container's root to (pair it with :func:`~pycontainerd.oci.with_user_namespace`,
    as ``ctr run --uidmap/--gidmap`` does)."""
    return _RemappedSnapshot(key, image, uid, gid, view=False)


def with_remapped_snapshot_view(key: str, image: AsyncImage, uid: int, gid: int) -> AsyncClientOpt:
    """Like :func:`with_remapped_snapshot`, but a read-only view."""
    return _RemappedSnapshot(key, image, uid, gid, view=True)


def with_container_extension(name: str, value: any_pb2.Any) -> NewContainerOpt:
    """Attach an extension (any packed message) under ``name``."""
    return lambda c: dataclasses.replace(c, extensions={**c.extensions, name: value})


class AsyncContainers:
    """``client.containers``: the containers service as a store of records."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._stub = containers_pb2_grpc.ContainersStub(call.channel)

    async def create(self, container: containers.Container) -> containers.Container:
        req = containers_pb2.CreateContainerRequest(container=wire.to_pb(container))
        resp = await self._call.unary(self._stub.Create, req)
        return wire.from_pb(resp.container)

    async def get(self, id: str) -> containers.Container:
        resp = await self._call.unary(self._stub.Get, containers_pb2.GetContainerRequest(id=id))
        return wire.from_pb(resp.container)

    async def list(self, *filters: str) -> builtins.list[containers.Container]:
        """Containers matching any of ``filters``, streamed (a daemon without
        ``ListStream`` is asked with ``List``, as containerd's client does)."""
        req = containers_pb2.ListContainersRequest(filters=list(filters))
        call = self._stub.ListStream(
            req, metadata=self._call.metadata(), timeout=self._call.timeout
        )
        result: builtins.list[containers.Container] = []
        try:
            async for msg in call:
                result.append(wire.from_pb(msg.container))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise errdefs.from_grpc(exc) from exc
            resp = await self._call.unary(self._stub.List, req)
            return [wire.from_pb(c) for c in resp.containers]
        return result

    async def update(
        self, container: containers.Container, *fieldpaths: str
    ) -> containers.Container:
        """Change the fields named by ``fieldpaths`` (``labels.KEY``, ``spec``, ...),
        or every replaceable field when none are given."""
        req = containers_pb2.UpdateContainerRequest(container=wire.to_pb(container))
        if fieldpaths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(fieldpaths)))
        resp = await self._call.unary(self._stub.Update, req)
        return wire.from_pb(resp.container)

    async def delete(self, id: str) -> None:
        await self._call.unary(self._stub.Delete, containers_pb2.DeleteContainerRequest(id=id))


class AsyncContainer:
    """A container of the daemon, by id; methods read or change its record."""

    def __init__(self, client: AsyncClient, record: containers.Container) -> None:
        self._client = client
        self._store = client.containers
        self._record = record

    @property
    def id(self) -> str:
        return self._record.id

    def __repr__(self) -> str:
        return f"<Container {self.id!r}>"

    async def info(self, *, refresh: bool = True) -> containers.Container:
        """The container's record, fetched again unless ``refresh=False``."""
        if refresh:
            self._record = await self._store.get(self.id)
        return self._record

    async def labels(self) -> dict[str, str]:
        return dict((await self.info()).labels)

    async def set_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """Set labels (an empty value removes one); returns all labels after."""
        record = containers.Container(id=self.id, labels=dict(labels))
        self._record = await self._store.update(record, *(f"labels.{k}" for k in labels))
        return dict(self._record.labels)

    async def spec(self) -> dict[str, Any]:
        """The OCI runtime spec, decoded from its JSON."""
        record = await self.info()
        if record.spec is None:
            raise errdefs.NotFound(f"container {errdefs.q(self.id)} has no spec")
        decoded: dict[str, Any] = json.loads(record.spec.value)
        return decoded

    async def update(self, *opts: AnyContainerOpt) -> containers.Container:
        """Apply options to the current record and store every replaceable field."""
        record = await _apply_opts(self._client, await self.info(), opts)
        self._record = await self._store.update(record)
        return self._record

    async def checkpoint(
        self,
        ref: str,
        *,
        image: bool = False,
        rw: bool = False,
        task: bool = False,
        exit: bool = False,
    ) -> AsyncImage:
        """Checkpoint into the image ``ref`` (containerd's ``Container.Checkpoint``):
        the runtime options, and with ``image`` the image, with ``rw`` the
        changes in the root filesystem, with ``task`` the running task (CRIU;
        ``exit`` stops it after).  See :mod:`pycontainerd.client._async.checkpoint`."""
        from pycontainerd.client._async.checkpoint import checkpoint

        return await checkpoint(self._client, self, ref, image=image, rw=rw, task=task, exit=exit)

    async def new_task(
        self,
        io_creator: cio.Creator,
        *,
        options: Any = None,
        rootfs: Sequence[Mount] = (),
        checkpoint: Any = None,
        runtime_path: str = "",
    ) -> AsyncTask:
        """Create the container's task (created, not started) with IO from
        ``io_creator`` (:mod:`pycontainerd.cio`: ``new_creator(stdout=buf)``,
        ``stdio()``, ``null_io``, ``log_file(path)``...).

        The root filesystem is the container's snapshot's mounts, then
        ``rootfs``; ``options`` are the runtime's create options (a message
        or an Any), ``checkpoint`` a checkpoint descriptor to restore from.
        """
        from pycontainerd.client._async.task import new_task

        return await new_task(
            self._client,
            self,
            io_creator,
            options=options,
            rootfs=rootfs,
            checkpoint=checkpoint,
            runtime_path=runtime_path,
        )

    async def task(self, io_attach: cio.Attach | None = None) -> AsyncTask:
        """The container's task (NotFound if none), reattached to its FIFOs
        with ``io_attach`` when given (``cio.new_attach(stdout=...)``)."""
        from pycontainerd.client._async.task import load_task

        return await load_task(self._client, self, io_attach)

    async def delete(self, *, cleanup_snapshot: bool = False) -> None:
        """Delete the record; with ``cleanup_snapshot`` its snapshot first.

        As containerd's ``WithSnapshotCleanup``: a snapshot already gone is
        fine, and the record is only deleted once the snapshot is.  A
        container whose task exists is not deleted (FailedPrecondition), as
        containerd's client refuses it.
        """
        from pycontainerd.client._async.task import load_task

        # NotImplemented: a daemon without a tasks service has no tasks.
        with contextlib.suppress(errdefs.NotFound, errdefs.NotImplemented):
            await load_task(self._client, self)
            raise errdefs.FailedPrecondition(f"cannot delete running task {self.id}")
        if cleanup_snapshot:
            record = await self.info()
            if record.snapshot_key:
                if not record.snapshotter:
                    raise errdefs.InvalidArgument(
                        f"container {errdefs.q(self.id)}: snapshotter must be set "
                        "to clean up its rootfs snapshot"
                    )
                sn = self._client.snapshot_service(record.snapshotter)
                with contextlib.suppress(errdefs.NotFound):
                    await sn.remove(record.snapshot_key)
        await self._store.delete(self.id)


def has_client_opts(opts: tuple[AnyContainerOpt, ...]) -> bool:
    """Whether building with ``opts`` creates daemon resources (and wants a lease)."""
    return any(isinstance(opt, AsyncClientOpt) for opt in opts)


async def build(
    client: AsyncClient, id: str, opts: tuple[AnyContainerOpt, ...], **fields: Any
) -> containers.Container:
    """The record ``new_container`` sends: keyword fields first, then the options."""
    spec = fields.pop("spec", None)
    runtime = fields.pop("runtime", None) or DEFAULT_RUNTIME
    runtime_options = fields.pop("runtime_options", None)
    record = containers.Container(
        id=id,
        runtime=containers.RuntimeInfo(runtime, runtime_options),
        **{k: v for k, v in fields.items() if v is not None},
    )
    if spec is not None:
        record = with_spec(spec)(record)
    return await _apply_opts(client, record, opts)
