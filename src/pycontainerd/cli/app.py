"""What every pyctr command module builds on.

A command group is one module under ``cli/commands/`` exposing ``command``
(a click command or group made with :class:`Group`/:class:`Command`, which
understand ctr-style ``aliases``).  Commands get the global options as a
:class:`Globals` (``@pass_globals``), open the daemon connection with
:meth:`Globals.client`, and print through :func:`echo_table`/:func:`echo_json`
so that table and ``--format json`` output look the same everywhere.

Errors are raised, never printed: a :class:`CommandError` for a usage
problem the CLI finds itself, the typed :mod:`pycontainerd.errdefs` errors
from the client otherwise; ``main`` turns them into ``pyctr: <message>``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from pycontainerd import namespaces
from pycontainerd.cli import gofmt
from pycontainerd.cli.tabwriter import TabWriter, tabify
from pycontainerd.client import DEFAULT_ADDRESS, Client

__all__ = [
    "Command",
    "CommandError",
    "Duration",
    "Globals",
    "Group",
    "OutputFormat",
    "echo_json",
    "echo_tabbed",
    "echo_table",
    "format_option",
    "label_args",
    "pass_globals",
    "sorted_labels",
]

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(click.ClickException):
    """A failure the CLI detects itself; printed as ``pyctr: <message>``, exit 1."""


class Command(click.Command):
    """A click command that also answers to ``aliases`` (``ls`` and ``list``)."""

    def __init__(self, *args: Any, aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = tuple(aliases)


class Group(click.Group):
    """A click group whose commands and subgroups may have aliases, as ctr's do."""

    command_class = Command
    group_class = type  # subgroups are Groups too

    def __init__(self, *args: Any, aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = tuple(aliases)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        for candidate in self.commands.values():
            if cmd_name in getattr(candidate, "aliases", ()):
                return candidate
        return None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Report the canonical name, so help and errors say "ls", not "list".
        _, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd is not None else None), cmd, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            names = ", ".join((name, *getattr(cmd, "aliases", ())))
            rows.append((names, cmd.get_short_help_str(limit=formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """Seconds as a number or a Go duration (``10s``, ``1m30s``), as ctr takes them."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            try:
                seconds = gofmt.parse_duration(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if seconds < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return seconds


@dataclass
class Globals:
    """The global options (``-a``, ``-n``, ``--timeout``…) and the open client."""

    address: str = DEFAULT_ADDRESS
    namespace: str = namespaces.DEFAULT
    timeout: float = 0.0
    connect_timeout: float = 0.0
    debug: bool = False
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        """The connection for this invocation, closed when the command ends."""
        if self._client is None:
            client = Client(self.address, self.namespace, timeout=self.timeout or None)
            click.get_current_context().find_root().with_resource(client)
            if self.connect_timeout > 0:
                client.wait_ready(self.connect_timeout)
            self._client = client
        return self._client


pass_globals = click.make_pass_decorator(Globals)


OutputFormat = click.Choice(["table", "json"])


def format_option(f: F) -> F:
    """``--format table|json``: tables for people, JSON for scripts."""
    return click.option(
        "--format",
        "output_format",
        type=OutputFormat,
        default="table",
        show_default=True,
        help="Output format.",
    )(f)


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def echo_table(
    rows: Iterable[Sequence[object]],
    *,
    minwidth: int = 1,
    tabwidth: int = 8,
    padding: int = 1,
    padchar: str = " ",
) -> None:
    """Print rows (header first) as ctr does: each cell tab-terminated, aligned."""
    echo_tabbed(
        tabify(rows), minwidth=minwidth, tabwidth=tabwidth, padding=padding, padchar=padchar
    )


def echo_tabbed(
    text: str, *, minwidth: int, tabwidth: int, padding: int, padchar: str = " "
) -> None:
    """Print tab-separated text through a Go-style tabwriter."""
    w = TabWriter(sys.stdout, minwidth, tabwidth, padding, padchar)
    w.write(text)
    w.flush()


def label_args(args: Iterable[str]) -> dict[str, str]:
    """``k=v`` arguments as ctr reads them: no ``=`` means ``"true"``, last one wins."""
    labels: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        labels[key] = value if sep else "true"
    return labels


def sorted_labels(labels: Mapping[str, str]) -> str:
    """Labels as one ``k=v,k2=v2`` cell, sorted, the way ctr lists them."""
    return ",".join(sorted(f"{k}={v}" for k, v in labels.items()))
