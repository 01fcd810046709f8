"""``pyctr events``: stream the daemon's events, one line each, as ``ctr events``.

A line is ``TIMESTAMP NAMESPACE TOPIC JSON``: the envelope time as Go prints
a ``time.Time``, then the event decoded from its ``Any`` and written as Go's
``encoding/json`` writes containerd's event structs.  ``--format json``
prints one JSON object per line instead.  Ctrl-C or SIGTERM ends the stream
with status 0.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click

# Imported for their side effect: they register the event types, so
# typeurl can decode every event containerd and pycontainerd publish.
import pycontainerd.api.events.container_pb2
import pycontainerd.api.events.content_pb2
import pycontainerd.api.events.image_pb2
import pycontainerd.api.events.namespace_pb2
import pycontainerd.api.events.snapshot_pb2
import pycontainerd.api.events.task_pb2
import pycontainerd.api.services.images.v1.images_pb2  # noqa: F401
from pycontainerd import errdefs, typeurl
from pycontainerd.cli import gofmt
from pycontainerd.cli.app import Command, Globals, format_option, pass_globals
from pycontainerd.events.exchange import Envelope

__all__ = ["command", "render_json", "render_line"]

log = logging.getLogger(__name__)


def _event_json(env: Envelope) -> str:
    """The event as JSON text; empty when the envelope carries none."""
    if not env.event.type_url:
        return ""
    return gofmt.marshal_event(typeurl.unmarshal_any(env.event))


def render_line(env: Envelope) -> str:
    """``2026-11-23 09:28:33.593035 +0000 UTC default /namespaces/create {"name":"ns3"}``.

    Raises ``NotFound`` when the event's type is unknown here.
    """
    # Go's Println joins operands with spaces, so an empty event leaves one trailing.
    return " ".join((gofmt.time_string(env.timestamp), env.namespace, env.topic, _event_json(env)))


def render_json(env: Envelope) -> str:
    """One envelope as a JSON object on one line, for scripts."""
    event = _event_json(env) or "null"
    return (
        "{"
        f'"timestamp":{json.dumps(gofmt.rfc3339nano(env.timestamp))},'
        f'"namespace":{json.dumps(env.namespace)},'
        f'"topic":{json.dumps(env.topic)},'
        f'"type":{json.dumps(env.event.type_url)},'
        f'"event":{event}'
        "}"
    )


class _Stop(Exception):
    """SIGTERM arrived."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("events", cls=Command, aliases=["event"])
@click.argument("filters", nargs=-1)
@format_option
@pass_globals
def command(g: Globals, filters: tuple[str, ...], output_format: str) -> None:
    """Display the daemon's events, optionally only those matching FILTERS.

    Filters use containerd's syntax (topic, namespace, event.<field>), e.g.
    'topic~="/namespaces/"'; an event matching any filter is shown.
    """
    render = render_json if output_format == "json" else render_line
    client = g.client()
    try:
        with _stop_on_sigterm():
            for env in client.events.subscribe(*filters):
                try:
                    line = render(env)
                except errdefs.ContainerdError as exc:
                    log.warning("cannot unmarshal an event from Any: %s", exc.message)
                    continue
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
    except (KeyboardInterrupt, _Stop):
        return
