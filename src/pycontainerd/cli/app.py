"""What every pyctr command module builds on.

A command group is one module under ``cli/commands/`` exposing ``command``
(a click command or group made with :class:`Group`/:class:`Command`, which
understand ctr-style ``aliases``), listed as a :class:`LazyCommand` in
``cli/commands/__init__.py`` so that the root :class:`LazyGroup` imports it
only when it runs.  Commands get the global options as a
:class:`Globals` (``@pass_globals``), open the daemon connection with
:meth:`Globals.client`, and print through :func:`echo_table`/:func:`echo_json`
so that table and ``--format json`` output look the same everywhere.

Errors are raised, never printed: a :class:`CommandError` for a usage
problem the CLI finds itself, the typed :mod:`pycontainerd.errdefs` errors
from the client otherwise; ``main`` turns them into ``pyctr: <message>``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pycontainerd import namespaces
from pycontainerd.client import DEFAULT_ADDRESS

if TYPE_CHECKING:
    # Imported when a command first dials (Globals.client): loading the
    # client loads grpcio, which ``pyctr --help`` has no use for.
    from pycontainerd.client import Client

__all__ = [
    "Command",
    "CommandError",
    "Duration",
    "Globals",
    "Group",
    "LazyCommand",
    "LazyGroup",
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
            row = self._help_row(ctx, name, formatter.width)
            if row is not None:
                rows.append(row)
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def _help_row(self, ctx: click.Context, name: str, limit: int) -> tuple[str, str] | None:
        """The command's line in the group's help: its names, then its help line."""
        cmd = self.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            return None
        names = ", ".join((name, *getattr(cmd, "aliases", ())))
        return names, cmd.get_short_help_str(limit=limit)


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """A top-level command as ``pyctr --help`` shows it, without importing it.

    ``module`` (under :mod:`pycontainerd.cli.commands`) exposes the command as
    ``command``; ``extends`` names modules that add subcommands to it.  The
    name, aliases and help line are repeated here so that listing commands
    loads none of them (a test checks them against the commands).
    """

    name: str
    module: str
    help: str
    aliases: tuple[str, ...] = ()
    extends: tuple[str, ...] = ()

    def load(self) -> click.Command:
        package = "pycontainerd.cli.commands"
        command = importlib.import_module(f"{package}.{self.module}").command
        for module in self.extends:
            importlib.import_module(f"{package}.{module}")
        if not isinstance(command, click.Command):
            raise TypeError(f"{package}.{self.module}.command is not a click command")
        return command


class LazyGroup(Group):
    """The root group: commands are :class:`LazyCommand` entries, imported on use.

    A command's module is imported when the command is invoked (or its own
    ``--help`` asked for); the group's help is written from the entries, so
    ``pyctr --help`` starts no faster or slower with more commands.
    """

    def __init__(self, *args: Any, lazy: Sequence[LazyCommand] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = {entry.name: entry for entry in lazy}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self._entry(cmd_name)
        if entry is not None and entry.name not in self.commands:
            self.add_command(entry.load())
        return super().get_command(ctx, cmd_name)

    def _entry(self, cmd_name: str) -> LazyCommand | None:
        if cmd_name in self.lazy:
            return self.lazy[cmd_name]
        for entry in self.lazy.values():
            if cmd_name in entry.aliases:
                return entry
        return None

    def _help_row(self, ctx: click.Context, name: str, limit: int) -> tuple[str, str] | None:
        entry = self.lazy.get(name)
        if entry is None or name in self.commands:
            return super()._help_row(ctx, name, limit)
        # A stand-in command, so click shortens the line as it would the real one's.
        stand_in = click.Command(name, help=entry.help)
        return ", ".join((name, *entry.aliases)), stand_in.get_short_help_str(limit=limit)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """Seconds as a number or a Go duration (``10s``, ``1m30s``), as ctr takes them."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            from pycontainerd.cli import gofmt  # protobuf comes with it: only when needed

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
            from pycontainerd.client import Client

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
    import json

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
    from pycontainerd.cli.tabwriter import tabify

    echo_tabbed(
        tabify(rows), minwidth=minwidth, tabwidth=tabwidth, padding=padding, padchar=padchar
    )


def echo_tabbed(
    text: str, *, minwidth: int, tabwidth: int, padding: int, padchar: str = " "
) -> None:
    """Print tab-separated text through a Go-style tabwriter."""
    from pycontainerd.cli.tabwriter import TabWriter

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
