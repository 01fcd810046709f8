"""``pyctr leases``: create, list and remove leases."""

from __future__ import annotations

import datetime as dt
import logging

import click

from pycontainerd import errdefs, leases
from pycontainerd.cli.app import (
    Duration,
    Globals,
    Group,
    echo_table,
    label_args,
    pass_globals,
    sorted_labels,
)

__all__ = ["command"]

log = logging.getLogger("pycontainerd.cli")


@click.group("leases", cls=Group, aliases=["lease"])
def command() -> None:
    """Manage leases."""


@command.command("create")
@click.option("--id", "lease_id", default="", help="Lease id; generated when not given.")
@click.option(
    "--expires",
    "-x",
    type=Duration(),
    default=24 * 3600.0,
    help="Expiration of the lease (0 never expires).  [default: 24h0m0s]",
)
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_globals
def create(g: Globals, lease_id: str, expires: float, labels: tuple[str, ...]) -> None:
    """Create a lease and print its id."""
    lease = g.client().leases.create(
        lease_id or leases.random_id(),
        label_args(labels),
        expiration=dt.timedelta(seconds=expires) if expires > 0 else None,
    )
    click.echo(lease.id)


def _local_rfc3339(when: dt.datetime) -> str:
    local = when.astimezone().replace(microsecond=0)
    text = local.isoformat()
    return text[:-6] + "Z" if local.utcoffset() == dt.timedelta(0) else text


@command.command("ls", aliases=["list"])
@click.option("-q", "--quiet", is_flag=True, help="Print only the lease ids.")
@click.argument("filters", nargs=-1)
@pass_globals
def list_leases(g: Globals, quiet: bool, filters: tuple[str, ...]) -> None:
    """List active leases, optionally filtered (id==..., labels.k==v)."""
    items = g.client().leases.list(*filters)
    if quiet:
        for lease in items:
            click.echo(lease.id)
        return
    rows = [["ID", "CREATED AT", "LABELS"]]
    rows += [
        [lease.id, _local_rfc3339(lease.created_at), sorted_labels(lease.labels) or "-"]
        for lease in items
    ]
    echo_table(rows, minwidth=1, tabwidth=8, padding=1)


@command.command("rm", aliases=["delete", "del", "remove"])
@click.option("--sync", is_flag=True, help="Wait for the leases' resources to be collected.")
@click.argument("ids", nargs=-1)
@pass_globals
def remove(g: Globals, sync: bool, ids: tuple[str, ...]) -> None:
    """Delete leases; a missing one is reported and the others are still deleted."""
    client = g.client()
    first: errdefs.ContainerdError | None = None
    for lease_id in ids:
        try:
            client.leases.delete(lease_id, sync=sync)
        except errdefs.NotFound as exc:
            first = first or errdefs.NotFound(f"lease {errdefs.q(lease_id)}")
            log.warning("lease %s not found: %s", errdefs.q(lease_id), errdefs.wire_message(exc))
        except errdefs.ContainerdError as exc:
            first = first or exc
            log.error(
                "failed to delete lease %s: %s", errdefs.q(lease_id), errdefs.wire_message(exc)
            )
        else:
            click.echo(lease_id)
    if first is not None:
        raise first
