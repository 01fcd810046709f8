"""``pyctr images mount|unmount|check|usage``: images as root filesystems.

Added to the ``images`` group of :mod:`pycontainerd.cli.commands.images`
from here, so the commands about snapshots stay apart from the ones about
records.  Behaviour and output follow ctr 1.6 (``usage`` follows ctr 1.7,
which added it): ``mount`` prints the image's chain ID then the target,
``check`` prints ``REF TYPE DIGEST STATUS SIZE UNPACKED``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator

import click

from pycontainerd import errdefs, leases, platforms
from pycontainerd.cli.app import Globals, echo_tabbed, echo_table, pass_globals
from pycontainerd.cli.commands.images import command as images_group
from pycontainerd.cli.commands.images import human_bytes
from pycontainerd.client import Client
from pycontainerd.client._sync.image import Image, resolve_snapshotter
from pycontainerd.images.identity import chain_id
from pycontainerd.images.unpack import gc_snapshot_label
from pycontainerd.mount import mount_all, unmount_all

__all__ = ["check", "mount", "unmount", "usage"]

log = logging.getLogger("pycontainerd.cli")

#: How long the lease ``mount`` leaves behind keeps the mounted snapshot.
MOUNT_LEASE_EXPIRATION = dt.timedelta(hours=24)

_snapshotter_option = click.option(
    "--snapshotter",
    envvar="CONTAINERD_SNAPSHOTTER",
    default="",
    help="Snapshotter name; empty for the default.",
)


def _platform(spec: str) -> platforms.Matcher:
    if not spec:
        return platforms.only(platforms.default())
    try:
        return platforms.only(platforms.parse(spec))
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"unable to parse platform {spec}: {exc.message}") from exc


@contextlib.contextmanager
def _mount_lease(client: Client, target: str, snapshotter: str) -> Iterator[None]:
    """The lease ``mount`` leaves behind, named after the target (as ctr).

    Its label keeps the target's snapshot until ``unmount --rm`` deletes it;
    if it exists already (a second mount), the old one goes on holding it.
    On failure a lease created here is deleted again.
    """
    labels = {gc_snapshot_label(snapshotter): target}
    try:
        client.leases.create(target, labels, expiration=MOUNT_LEASE_EXPIRATION)
    except errdefs.AlreadyExists:
        yield None
        return
    try:
        with leases.lease(target):
            yield None
    except BaseException:
        with contextlib.suppress(errdefs.ContainerdError):
            client.leases.delete(target)
        raise


@images_group.command("mount")
@_snapshotter_option
@click.option("--rw", is_flag=True, help="Enable write support on the mount.")
@click.option(
    "--platform",
    "platform_spec",
    default=lambda: platforms.format(platforms.default()),
    show_default="the host's",
    help="Mount the image for the specified platform.",
)
@click.argument("ref", required=False, default="")
@click.argument("target", required=False, default="")
@pass_globals
def mount(
    g: Globals, snapshotter: str, rw: bool, platform_spec: str, ref: str, target: str
) -> None:
    """Mount an image's root filesystem at TARGET (undo with unmount).

    The image is unpacked first if needed; a view (or, with --rw, an active
    snapshot) keyed by TARGET is mounted there.
    """
    if not ref:
        raise click.ClickException("please provide an image reference to mount")
    if not target:
        raise click.ClickException("please provide a target path to mount to")
    client = g.client()
    snapshotter = snapshotter or resolve_snapshotter(client)
    matcher = _platform(platform_spec)
    with _mount_lease(client, target, snapshotter):
        image = Image(client, client.images.get(ref), platform=matcher)
        try:
            image.unpack(snapshotter)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"error unpacking image: {errdefs.wire_message(exc)}") from exc
        top = chain_id(image.rootfs())
        click.echo(top)
        sn = client.snapshot_service(snapshotter)
        try:
            mounts = sn.prepare(target, top) if rw else sn.view(target, top)
        except errdefs.AlreadyExists:
            mounts = sn.mounts(target)
        try:
            mount_all(mounts, target)
        except BaseException:
            with contextlib.suppress(errdefs.NotFound):
                sn.remove(target)
            raise
    click.echo(target)


@images_group.command("unmount")
@_snapshotter_option
@click.option("--rm", "remove", is_flag=True, help="Remove the snapshot after unmounting.")
@click.argument("target", required=False, default="")
@pass_globals
def unmount(g: Globals, snapshotter: str, remove: bool, target: str) -> None:
    """Unmount an image's root filesystem from TARGET."""
    if not target:
        raise click.ClickException("please provide a target path to unmount from")
    client = g.client()
    unmount_all(target)
    if remove:
        sn = client.snapshot_service(snapshotter or resolve_snapshotter(client))
        try:
            client.leases.delete(target)
        except errdefs.NotFound:
            pass
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"error deleting lease: {errdefs.wire_message(exc)}") from exc
        try:
            sn.remove(target)
        except errdefs.NotFound:
            pass
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"error removing snapshot: {errdefs.wire_message(exc)}") from exc
    click.echo(target)


def _check_row(client: Client, image: Image, snapshotter: str) -> tuple[list[str], bool, str]:
    """One ``check`` row, whether the content is complete, and the error to
    exit with ("" if none).  As ctr's ``images.Check``: the manifest's config
    and layers must be in the content store."""
    t = image.target
    failed = ""
    try:
        _, mfst = image.manifest()
    except errdefs.NotFound:
        status, size, complete = "unavailable (0/?)", f"{human_bytes(0)}/?", False
    except errdefs.ContainerdError as exc:
        failed = f"unable to check {image.name}: {errdefs.wire_message(exc)}"
        log.error("%s", failed)
        status, size, complete = "error", "-", False
    else:
        required = [mfst.config, *mfst.layers]
        present = []
        for desc in required:
            try:
                client.content.info(desc.digest)
            except errdefs.NotFound:
                continue
            present.append(desc)
        complete = len(present) == len(required)
        status = "complete" if complete else "incomplete"
        status += f" ({len(present)}/{len(required)})"
        have = human_bytes(sum(d.size for d in present))
        size = f"{have}/{human_bytes(sum(d.size for d in required))}"
    try:
        unpacked = image.is_unpacked(snapshotter)
    except errdefs.ContainerdError as exc:
        message = f"unable to check unpack for {image.name}: {errdefs.wire_message(exc)}"
        log.error("%s", message)
        unpacked, failed = False, failed or message
    row = [image.name, t.media_type, t.digest, status, size, "true" if unpacked else "false"]
    # As ctr 1.6: -q lists images whose content is complete, unpacked or not.
    return row, complete, failed


@images_group.command("check")
@_snapshotter_option
@click.option("-q", "--quiet", is_flag=True, help="Print only the ready image refs.")
@click.argument("filters", nargs=-1)
@pass_globals
def check(g: Globals, snapshotter: str, quiet: bool, filters: tuple[str, ...]) -> None:
    """Check that images' content is all present locally, and unpacked."""
    client = g.client()
    # ctr ends the header's last cell with a tab but not the rows' (so the
    # UNPACKED column is not padded): keep that byte for byte.
    lines = ["REF\tTYPE\tDIGEST\tSTATUS\tSIZE\tUNPACKED\t\n"]
    failed: list[str] = []  # ctr exits with the first error, after all rows
    for image in client.list_images(*filters):
        row, ready, error = _check_row(client, image, snapshotter)
        if error:
            failed.append(error)
        if quiet:
            if ready:
                click.echo(image.name)
        else:
            lines.append("\t".join(row) + "\n")
    if not quiet and len(lines) > 1:
        echo_tabbed("".join(lines), minwidth=1, tabwidth=8, padding=1)
    if failed:
        raise errdefs.Unknown(failed[0])


@images_group.command("usage")
@_snapshotter_option
@click.argument("ref", required=False, default="")
@pass_globals
def usage(g: Globals, snapshotter: str, ref: str) -> None:
    """Show the disk each snapshot of an unpacked image uses (top first)."""
    if not ref:
        raise click.ClickException("please provide an image reference")
    client = g.client()
    snapshotter = snapshotter or resolve_snapshotter(client)
    image = client.get_image(ref)
    if not image.is_unpacked(snapshotter):
        raise errdefs.FailedPrecondition(f"image {ref} isn't unpacked in snapshotter {snapshotter}")
    sn = client.snapshot_service(snapshotter)
    rows = [["KEY", "SIZE", "INODES"]]
    key = chain_id(image.rootfs())
    while key:
        used = sn.usage(key)
        rows.append([key, human_bytes(used.size), str(used.inodes)])
        key = sn.stat(key).parent
    echo_table(rows, minwidth=1, tabwidth=8, padding=1)
