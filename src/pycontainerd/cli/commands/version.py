"""``pyctr version``: client and server versions, laid out as ``ctr version``."""

from __future__ import annotations

import platform

import click

from pycontainerd.cli.app import Command, Globals, echo_json, format_option, pass_globals
from pycontainerd.version import REVISION, VERSION

__all__ = ["command"]


@click.command("version", cls=Command)
@format_option
@pass_globals
def command(g: Globals, output_format: str) -> None:
    """Print the client and server versions."""
    python_version = platform.python_version()
    if output_format == "json":
        client = g.client()
        server, info = client.version(), client.server()
        echo_json(
            {
                "client": {
                    "version": VERSION,
                    "revision": REVISION,
                    "python_version": python_version,
                },
                "server": {
                    "version": server.version,
                    "revision": server.revision,
                    "uuid": info.uuid,
                },
            }
        )
        return
    # Like ctr, the client half prints even when the daemon cannot be reached.
    click.echo("Client:")
    click.echo(f"  Version:  {VERSION}")
    click.echo(f"  Revision: {REVISION}")
    click.echo(f"  Python version: {python_version}")
    click.echo("")
    client = g.client()
    server = client.version()
    click.echo("Server:")
    click.echo(f"  Version:  {server.version}")
    click.echo(f"  Revision: {server.revision}")
    info = client.server()
    click.echo(f"  UUID: {info.uuid}")
    if server.version != VERSION:
        click.echo("WARNING: version mismatch", err=True)
    if server.revision != REVISION:
        click.echo("WARNING: revision mismatch", err=True)
