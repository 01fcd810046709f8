"""``pyctr namespaces``: create, list, label and remove namespaces."""

from __future__ import annotations

import click

from pycontainerd import errdefs
from pycontainerd.cli.app import (
    Globals,
    Group,
    echo_json,
    echo_table,
    format_option,
    label_args,
    pass_globals,
    sorted_labels,
)
from pycontainerd.wire.namespaces import NamespaceInfo

__all__ = ["command", "table_rows"]


@click.group("namespaces", cls=Group, aliases=["namespace", "ns"])
def command() -> None:
    """Manage namespaces."""


def table_rows(items: list[NamespaceInfo]) -> list[list[str]]:
    return [["NAME", "LABELS"], *([ns.name, sorted_labels(ns.labels)] for ns in items)]


# A name that starts with "-" is still a name: let the daemon reject it by name
# rather than failing here with "no such option".
_NAMES_MAY_START_WITH_DASH = {"ignore_unknown_options": True}


@command.command("create", aliases=["c"], context_settings=_NAMES_MAY_START_WITH_DASH)
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_globals
def create(g: Globals, name: str, labels: tuple[str, ...]) -> None:
    """Create a new namespace; it must be unique."""
    g.client().namespaces.create(name, label_args(labels))


@command.command("ls", aliases=["list"])
@click.option("-q", "--quiet", is_flag=True, help="Print only the namespace names.")
@format_option
@pass_globals
def list_namespaces(g: Globals, quiet: bool, output_format: str) -> None:
    """List namespaces."""
    items = g.client().namespaces.list()
    if output_format == "json":
        echo_json([{"name": ns.name, "labels": dict(sorted(ns.labels.items()))} for ns in items])
    elif quiet:
        for ns in items:
            click.echo(ns.name)
    else:
        # ctr's tabwriter.NewWriter(os.Stdout, 1, 8, 1, ' ', 0)
        echo_table(table_rows(items), minwidth=1, tabwidth=8, padding=1)


@command.command("label", context_settings=_NAMES_MAY_START_WITH_DASH)
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_globals
def set_labels(g: Globals, name: str, labels: tuple[str, ...]) -> None:
    """Set and clear labels for a namespace; an empty value (KEY=) clears the label."""
    if labels:
        g.client().namespaces.set_labels(name, label_args(labels))


@command.command("rm", aliases=["remove"], context_settings=_NAMES_MAY_START_WITH_DASH)
@click.argument("names", nargs=-1, required=True)
@pass_globals
@click.pass_context
def remove(ctx: click.Context, g: Globals, names: tuple[str, ...]) -> None:
    """Remove one or more namespaces; for now a namespace must be empty.

    Each removed (or already absent) name is printed; a failure is reported
    and the others are still tried, then the exit status is 1.
    """
    client = g.client()
    failed = False
    for name in names:
        try:
            client.namespaces.delete(name)
        except errdefs.NotFound:
            pass  # gone already is what the caller wanted, as ctr sees it
        except errdefs.ContainerdError as exc:
            click.echo(f"pyctr: unable to delete {name}: {errdefs.wire_message(exc)}", err=True)
            failed = True
            continue
        click.echo(name)
    if failed:
        ctx.exit(1)
