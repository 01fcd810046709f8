"""ctr's registry flags, shared by ``images pull|push|fetch`` and ``content fetch``.

``--plain-http``, ``--user/-u user[:password]`` (the password is asked for
when missing and stdin is a terminal), ``--refresh`` (a token server's
refresh token, for when no user is given), ``--hosts-dir``,
``--skip-verify/-k``, the TLS files, extra headers, and ``--http-dump`` and
``--http-trace`` (shown on stderr), turned into the client's keyword
arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["registry_kwargs", "registry_options"]

F = TypeVar("F", bound=Callable[..., Any])


def registry_options(f: F) -> F:
    """Add ctr's registry flags to a command (they arrive as ``registry_*`` kwargs)."""
    options = [
        click.option(
            "--skip-verify",
            "-k",
            "registry_skip_verify",
            is_flag=True,
            help="Skip SSL certificate validation.",
        ),
        click.option(
            "--plain-http",
            "registry_plain_http",
            is_flag=True,
            help="Allow connections using plain HTTP.",
        ),
        click.option(
            "--user",
            "-u",
            "registry_user",
            default=None,
            help="User[:password] Registry user and password.",
        ),
        click.option(
            "--refresh",
            "registry_refresh",
            default=None,
            help="Refresh token for authorization server.",
        ),
        click.option(
            "--hosts-dir",
            "registry_hosts_dir",
            default=None,
            help="Custom hosts configuration directory (<dir>/<host>/hosts.toml).",
        ),
        click.option(
            "--tlscacert",
            "registry_tlscacert",
            default=None,
            help="Path to TLS root CA.",
        ),
        click.option(
            "--tlscert",
            "registry_tlscert",
            default=None,
            help="Path to TLS client certificate.",
        ),
        click.option(
            "--tlskey",
            "registry_tlskey",
            default=None,
            help="Path to TLS client key.",
        ),
        click.option(
            "--header",
            "registry_headers",
            multiple=True,
            help="Add additional header to registry requests (name: value).",
        ),
        click.option(
            "--http-dump",
            "registry_http_dump",
            is_flag=True,
            help="Dump all HTTP request/responses when interacting with container registry.",
        ),
        click.option(
            "--http-trace",
            "registry_http_trace",
            is_flag=True,
            help="Enable HTTP tracing for registry interactions.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def registry_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the ``registry_*`` flags out of ``kwargs``; the client's keywords."""
    user = kwargs.pop("registry_user")
    refresh = kwargs.pop("registry_refresh")
    if user is not None and ":" not in user and sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, default="", show_default=False)
        user = f"{user}:{password}"
    headers: dict[str, str] = {}
    for header in kwargs.pop("registry_headers"):
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"header {header!r}: expected 'name: value'")
        headers[name.strip()] = value.strip()
    ca, cert, key = (kwargs.pop(f"registry_tls{k}") for k in ("cacert", "cert", "key"))
    dump, trace = kwargs.pop("registry_http_dump"), kwargs.pop("registry_http_trace")
    if dump or trace:
        # Shown on stderr: heads at INFO, the connections' life at DEBUG.
        import logging

        logging.getLogger("pycontainerd.remotes.http").setLevel(
            logging.DEBUG if trace else logging.INFO
        )
    if bool(cert) != bool(key):
        raise click.UsageError("--tlscert and --tlskey go together")
    return {
        "plain_http": kwargs.pop("registry_plain_http"),
        "skip_verify": kwargs.pop("registry_skip_verify"),
        "ca_files": (ca,) if ca else (),
        "client_certs": ((cert, key),) if cert else (),
        "hosts_dir": kwargs.pop("registry_hosts_dir"),
        "user": user,
        "refresh_token": refresh or None,
        "headers": headers or None,
        "http_dump": dump,
        "http_trace": trace,
    }
