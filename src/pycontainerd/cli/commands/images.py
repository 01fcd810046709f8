"""``pyctr images``: list, tag, label and remove image records.

Output follows ``ctr images``.  The SIZE column shows the target's size
until the content store can be walked for the whole image.
"""

from __future__ import annotations

import logging

import click

from pycontainerd import errdefs
from pycontainerd.cli.app import Globals, Group, echo_table, label_args, pass_globals, sorted_labels
from pycontainerd.images import Descriptor, Image

__all__ = ["command", "human_bytes"]

log = logging.getLogger("pycontainerd.cli")

_NAMES_MAY_START_WITH_DASH = {"ignore_unknown_options": True}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


@click.group("images", cls=Group, aliases=["image", "i"])
def command() -> None:
    """Manage images."""


def human_bytes(size: int) -> str:
    """Sizes as ctr prints them (go-units' ``%02.1f %s`` in powers of 1024)."""
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:02.1f} {_UNITS[unit]}"


@command.command("ls", aliases=["list"])
@click.option("-q", "--quiet", is_flag=True, help="Print only the image refs.")
@click.argument("filters", nargs=-1)
@pass_globals
def list_images(g: Globals, quiet: bool, filters: tuple[str, ...]) -> None:
    """List images known to the daemon, optionally filtered (name==..., labels.k==v)."""
    images = g.client().images.list(*filters)
    if quiet:
        for image in images:
            click.echo(image.name)
        return
    rows = [["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]]
    for image in images:
        t = image.target
        rows.append(
            [
                image.name,
                t.media_type,
                t.digest,
                human_bytes(t.size),
                "-",
                sorted_labels(image.labels) or "-",
            ]
        )
    echo_table(rows, minwidth=1, tabwidth=8, padding=1)


@command.command("rm", aliases=["delete", "del", "remove"])
@click.option("--sync", is_flag=True, help="Wait for the image's resources to be collected.")
@click.argument("refs", nargs=-1)
@pass_globals
def remove(g: Globals, sync: bool, refs: tuple[str, ...]) -> None:
    """Remove one or more images by reference; a missing one is only a warning."""
    client = g.client()
    first: errdefs.ContainerdError | None = None
    for i, ref in enumerate(refs):
        try:
            # As ctr: only the last delete waits for garbage collection.
            client.images.delete(ref, sync=sync and i == len(refs) - 1)
        except errdefs.NotFound:
            log.warning("%s: image not found", ref)
        except errdefs.ContainerdError as exc:
            first = first or errdefs.Unknown(f"unable to delete {ref}: {errdefs.wire_message(exc)}")
            log.error("unable to delete %s: %s", ref, errdefs.wire_message(exc))
        else:
            click.echo(ref)
    if first is not None:
        raise first


@command.command("tag", context_settings=_NAMES_MAY_START_WITH_DASH)
@click.option("--force", is_flag=True, help="Replace a target ref that already exists.")
@click.argument("source", required=False, default="")
@click.argument("targets", nargs=-1)
@pass_globals
def tag(g: Globals, force: bool, source: str, targets: tuple[str, ...]) -> None:
    """Tag an image: create TARGET records pointing where SOURCE points."""
    if not source:
        raise click.ClickException("please provide an image reference to tag from")
    if not targets:
        raise click.ClickException("please provide an image reference to tag to")
    client = g.client()
    with client.lease():
        image = client.images.get(source)
        for target in targets:
            try:
                client.images.create(target, image.target, image.labels)
            except errdefs.AlreadyExists:
                if not force:
                    raise
                client.images.delete(target)
                client.images.create(target, image.target, image.labels)
            click.echo(target)


@command.command("label", context_settings=_NAMES_MAY_START_WITH_DASH)
@click.option("--replace-all", "-r", is_flag=True, help="Replace all labels.")
@click.argument("name", required=False, default="")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_globals
def set_labels(g: Globals, replace_all: bool, name: str, labels: tuple[str, ...]) -> None:
    """Set and clear labels for an image; an empty value (KEY=) clears the label."""
    if not name:
        raise click.ClickException("please specify an image")
    new = label_args(labels)
    paths = ["labels"] if replace_all else [f"labels.{k}" for k in new]
    # With no paths the whole record is replaced, as with ctr.
    image = Image(name=name, target=Descriptor("", "", 0), labels=new)
    updated = g.client().images.update(image, *paths)
    click.echo(",".join(f"{k}={v}" for k, v in sorted(updated.labels.items())))
