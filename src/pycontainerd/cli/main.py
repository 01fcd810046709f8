"""``pyctr``: ctr's command line for pycontainerd, or any containerd 1.6.

The root group holds ctr's global options; each command group lives in its
own module under :mod:`pycontainerd.cli.commands`, imported when it runs, so
``pyctr --help`` loads neither the commands nor the client nor grpcio.
:func:`main` is the console script: every failure ends as one
``pyctr: <message>`` line on stderr and exit status 1, as ctr reports
``ctr: <message>``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from pycontainerd import errdefs
from pycontainerd import namespaces as ns
from pycontainerd.cli.app import Duration, Globals, LazyGroup
from pycontainerd.cli.commands import COMMANDS
from pycontainerd.client import DEFAULT_ADDRESS
from pycontainerd.version import VERSION

__all__ = ["cli", "main", "run"]


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="A command line client for containerd (and pycontainerd), like ctr.",
)
@click.option(
    "-a",
    "--address",
    envvar="CONTAINERD_ADDRESS",
    default=DEFAULT_ADDRESS,
    show_default=True,
    show_envvar=True,
    help="Address of the daemon's gRPC socket.",
)
@click.option(
    "-n",
    "--namespace",
    envvar="CONTAINERD_NAMESPACE",
    default=ns.DEFAULT,
    show_default=True,
    show_envvar=True,
    help="Namespace to use with commands.",
)
@click.option(
    "--timeout",
    type=Duration(),
    default=0.0,
    help="Timeout for each call: seconds or a Go duration (10s, 1m30s); 0 for none.",
)
@click.option(
    "--connect-timeout",
    type=Duration(),
    default=0.0,
    help="How long to wait for the daemon to accept the connection; 0 fails at once.",
)
@click.option("--debug", is_flag=True, help="Enable debug output in logs.")
@click.version_option(
    VERSION, "-v", "--version", prog_name="pyctr", message="%(prog)s pycontainerd %(version)s"
)
@click.pass_context
def cli(
    ctx: click.Context,
    address: str,
    namespace: str,
    timeout: float,
    connect_timeout: float,
    debug: bool,
) -> None:
    import logging  # not before a command runs: ``pyctr --help`` logs nothing

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    g = ctx.ensure_object(Globals)
    g.address = address
    g.namespace = namespace
    g.timeout = timeout
    g.connect_timeout = connect_timeout
    g.debug = debug


def _log_failure() -> None:
    import logging

    logging.getLogger("pycontainerd.cli").debug("command failed", exc_info=True)


def _fail(message: str) -> int:
    click.echo(f"pyctr: {message}", err=True)
    return 1


def _error_message(exc: errdefs.ContainerdError, g: Globals) -> str:
    message = errdefs.wire_message(exc)
    if isinstance(exc, errdefs.Unavailable) and message.startswith("failed to connect"):
        # gRPC's words for "nothing listens there"; say which address, as ctr does.
        return f"failed to dial {errdefs.q(g.address)}: {message}"
    return message


def run(argv: Sequence[str] | None = None) -> int:
    """Run pyctr with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    g = Globals()
    try:
        rv = cli.main(
            args=None if argv is None else list(argv),
            prog_name="pyctr",
            standalone_mode=False,
            obj=g,
        )
    except click.UsageError as exc:
        if exc.ctx is not None:
            click.echo(exc.ctx.get_usage(), err=True)
            hint = f"{exc.ctx.command_path} {exc.ctx.help_option_names[0]}"
            click.echo(f"Try '{hint}' for help.\n", err=True)
        return _fail(exc.format_message())
    except click.ClickException as exc:
        return _fail(exc.format_message())
    except click.Abort:
        return 130  # Ctrl-C; click has already ended the line
    except errdefs.ContainerdError as exc:
        _log_failure()
        return _fail(_error_message(exc, g))
    except Exception as exc:
        _log_failure()
        return _fail(str(exc) or type(exc).__name__)
    return rv if isinstance(rv, int) else 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    sys.exit(run(argv))
