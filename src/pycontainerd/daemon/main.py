"""``pycontainerd``: the daemon's command line, with containerd's flags.

    pycontainerd [-c CONFIG] [-a ADDRESS] [--root DIR] [--state DIR] [-l LEVEL]
    pycontainerd config default

Every start-up failure ends in one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from pycontainerd import plugin
from pycontainerd.daemon import builtins, logs
from pycontainerd.daemon.config import DEFAULT_CONFIG_PATH, Config, ConfigError, dump, load
from pycontainerd.daemon.server import Server, StartupError, replace

__all__ = ["main"]


def _fail(message: str) -> None:
    click.echo(f"pycontainerd: {message}", err=True)
    sys.exit(1)


def _plugin_defaults() -> dict[str, dict[str, object]]:
    """Each built-in plugin's default settings, by plugin URI (configurable ones only)."""
    builtins.load()
    sections = {}
    for reg in plugin.registrations():
        cfg = plugin.config_fields(plugin.default_config(reg))
        if cfg:
            sections[reg.uri] = cfg
    return sections


def default_config_text() -> str:
    """The complete default config, with every built-in plugin's section."""
    return dump(Config(), _plugin_defaults())


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    default=DEFAULT_CONFIG_PATH,
    show_default=True,
    help="Path to the configuration file.",
)
@click.option("-a", "--address", default=None, help="Address for pycontainerd's gRPC server.")
@click.option("--root", default=None, help="Root directory for persistent data.")
@click.option("--state", default=None, help="State directory for runtime data.")
@click.option(
    "-l", "--log-level", default=None, help="Log level (trace, debug, info, warn, error)."
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str,
    address: str | None,
    root: str | None,
    state: str | None,
    log_level: str | None,
) -> None:
    """pycontainerd: a container runtime daemon speaking containerd's API."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        config = load(config_path)
    except ConfigError as exc:
        _fail(str(exc))
    overrides: dict[str, object] = {}
    if root:
        overrides["root"] = str(Path(root).absolute())
    if state:
        overrides["state"] = str(Path(state).absolute())
    if address:
        overrides["grpc_address"] = str(Path(address.removeprefix("unix://")).absolute())
    config = replace(config, **overrides)
    level = log_level or config.debug.level or "info"
    try:
        logs.setup(level)
    except ValueError as exc:
        _fail(str(exc))
    try:
        asyncio.run(Server(config).serve_forever())
    except StartupError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


@cli.group()
def config() -> None:
    """Information about the daemon's configuration."""


@config.command("default")
def config_default() -> None:
    """Print the default config (it reads back unchanged)."""
    click.echo(default_config_text(), nl=False)


@config.command("dump")
@click.pass_context
def config_dump(ctx: click.Context) -> None:
    """Print the config the daemon would run with."""
    path = ctx.parent.parent.params["config_path"] if ctx.parent and ctx.parent.parent else None
    try:
        cfg = load(path or DEFAULT_CONFIG_PATH)
    except ConfigError as exc:
        _fail(str(exc))
    click.echo(dump(cfg, _plugin_defaults()), nl=False)


def main() -> None:
    cli(prog_name="pycontainerd")


if __name__ == "__main__":
    main()
