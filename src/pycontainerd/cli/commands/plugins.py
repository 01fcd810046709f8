"""``pyctr plugins ls``: the daemon's plugins and whether they loaded."""

from __future__ import annotations

from collections.abc import Sequence

import click

from pycontainerd.cli import gofmt
from pycontainerd.cli.app import (
    Globals,
    Group,
    echo_json,
    echo_tabbed,
    echo_table,
    format_option,
    pass_globals,
)
from pycontainerd.wire.introspection import PluginInfo

__all__ = ["command", "detailed_text", "table_rows"]

# ctr's tabwriter.NewWriter(os.Stdout, 4, 8, 4, ' ', 0)
_MINWIDTH, _TABWIDTH, _PADDING = 4, 8, 4


@click.group("plugins", cls=Group, aliases=["plugin"])
def command() -> None:
    """Provides information about the daemon's plugins."""


def pretty_platforms(platforms: Sequence[str]) -> str:
    """Platforms deduplicated, sorted and comma-joined, as ctr shows them."""
    return ",".join(sorted(set(platforms)))


def table_rows(plugins: Sequence[PluginInfo]) -> list[list[str]]:
    rows = [["TYPE", "ID", "PLATFORMS", "STATUS"]]
    for p in plugins:
        rows.append([p.type, p.id, pretty_platforms(p.platforms) or "-", p.status])
    return rows


def detailed_text(plugins: Sequence[PluginInfo]) -> str:
    """The tabwriter input ctr writes for ``plugins ls -d``.

    Go's ``Fprintln`` puts a space between operands, hence the cells that
    start with a blank; the ``\\t\\t\\t`` line between plugins keeps their
    columns in one block, so all plugins align together.
    """
    out: list[str] = []
    for i, p in enumerate(plugins):
        if i:
            out.append("\t\t\t\n")
        out.append(f"Type:\t {p.type}\n")
        out.append(f"ID:\t {p.id}\n")
        if p.requires:
            out.append("Requires:\t\n")
            out.extend(f"\t {r}\n" for r in p.requires)
        if p.platforms:
            out.append(f"Platforms:\t {pretty_platforms(p.platforms)}\n")
        if p.exports:
            out.append("Exports:\t\n")
            # Go ranges over the map in random order; sorted is as good and stable.
            out.extend(f"\t {k} \t {v}\n" for k, v in sorted(p.exports.items()))
        if p.capabilities:
            out.append(f"Capabilities:\t {','.join(p.capabilities)}\n")
        if p.init_err is not None:
            out.append("Error:\t\n")
            out.append(f"\t Code:\t {gofmt.code_name(p.init_err.code)}\n")
            out.append(f"\t Message:\t {p.init_err.message}\n")
    return "".join(out)


def plugin_json(p: PluginInfo) -> dict[str, object]:
    return {
        "type": p.type,
        "id": p.id,
        "requires": list(p.requires),
        "platforms": sorted(set(p.platforms)),
        "exports": dict(sorted(p.exports.items())),
        "capabilities": list(p.capabilities),
        "status": p.status,
        "error": (
            None
            if p.init_err is None
            else {
                "code": p.init_err.code,
                "code_name": gofmt.code_name(p.init_err.code),
                "message": p.init_err.message,
            }
        ),
    }


@command.command("ls", aliases=["list"])
@click.argument("filters", nargs=-1)
@click.option("-q", "--quiet", is_flag=True, help="Print only the plugin ids.")
@click.option(
    "-d", "--detailed", is_flag=True, help="Print detailed information about each plugin."
)
@format_option
@pass_globals
def list_plugins(
    g: Globals, filters: tuple[str, ...], quiet: bool, detailed: bool, output_format: str
) -> None:
    """List the daemon's plugins (FILTERS as in ctr: type==..., id==...)."""
    plugins = g.client().plugins(*filters)
    if output_format == "json":
        echo_json([plugin_json(p) for p in plugins])
    elif quiet:
        for p in plugins:
            click.echo(p.id)
    elif detailed:
        echo_tabbed(
            detailed_text(plugins), minwidth=_MINWIDTH, tabwidth=_TABWIDTH, padding=_PADDING
        )
    else:
        echo_table(table_rows(plugins), minwidth=_MINWIDTH, tabwidth=_TABWIDTH, padding=_PADDING)
