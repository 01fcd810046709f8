"""``pyctr content``: list, read, ingest, label, fetch and remove blobs; show active ingests.

Flags, arguments and output follow ``ctr content`` (containerd 1.6): tables
through a tabwriter padded with tabs, sizes and ages as go-units prints them
(``1.074GB``, ``Less than a second``).  Where ctr prints a map in Go's
random order (labels), we print it sorted.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

import click

from pycontainerd import errdefs
from pycontainerd.cli._registry import registry_kwargs, registry_options
from pycontainerd.cli.app import (
    CommandError,
    Duration,
    Globals,
    Group,
    echo_tabbed,
    echo_table,
    label_args,
    pass_globals,
    sorted_labels,
)
from pycontainerd.digest import validate as validate_digest

__all__ = ["command", "human_duration", "human_size"]

log = logging.getLogger("pycontainerd.cli")

#: ctr reads stdin and writes stdout with a 1 MiB buffer.
_BUFFER = 1 << 20

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: float) -> str:
    """go-units' ``HumanSize``: decimal units, four significant digits (``1.074GB``)."""
    unit = 0
    while size >= 1000 and unit < len(_DECIMAL_UNITS) - 1:
        size /= 1000
        unit += 1
    return f"{size:.4g}{_DECIMAL_UNITS[unit]}"


def human_duration(d: dt.timedelta) -> str:
    """go-units' ``HumanDuration`` (``Less than a second``, ``3 minutes``, ``About an hour``)."""
    total = d.total_seconds()
    seconds = int(total)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(total / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = math.floor(total / 3600 + 0.5)  # Go's math.Round: half away from zero
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(total / 3600) // 24 // 365} years"


def _age(when: dt.datetime) -> str:
    return human_duration(dt.datetime.now(dt.UTC) - when)


@click.group("content", cls=Group)
def command() -> None:
    """Manage content."""


@command.command("ls", aliases=["list"])
@click.option("-q", "--quiet", is_flag=True, help="Print only the blob digest.")
@click.argument("filters", nargs=-1)
@pass_globals
def list_content(g: Globals, quiet: bool, filters: tuple[str, ...]) -> None:
    """List all blobs in the store, optionally filtered (digest==..., labels.k==v)."""
    blobs = g.client().content.walk(*filters)
    if quiet:
        for info in blobs:
            click.echo(info.digest)
        return
    lines = ["DIGEST\tSIZE\tAGE\tLABELS\n"]
    for info in blobs:
        labels = sorted_labels(info.labels) or "-"
        lines.append(f"{info.digest}\t{human_size(info.size)}\t{_age(info.created_at)}\t{labels}\n")
    echo_tabbed("".join(lines), minwidth=1, tabwidth=8, padding=1, padchar="\t")


def _parse_digest(arg: str) -> str:
    """Check a digest argument here, as ctr does, before asking the daemon."""
    try:
        validate_digest(arg)
    except errdefs.InvalidArgument as exc:
        raise CommandError(exc.message) from None
    return arg


@command.command("get")
@click.argument("digest", required=False, default="")
@pass_globals
def get(g: Globals, digest: str) -> None:
    """Get the data for an object (written to stdout)."""
    dgst = _parse_digest(digest)
    content = g.client().content
    content.info(dgst)  # NotFound before any output, as ctr's ReaderAt
    out = sys.stdout.buffer
    for chunk in content.chunks(dgst):
        out.write(chunk)
    out.flush()


def _stdin_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(_BUFFER):
        yield chunk


@command.command("ingest")
@click.option("--expected-size", type=int, default=0, help="Validate against provided size.")
@click.option("--expected-digest", default="", help="Verify content against expected digest.")
@click.argument("ref", required=False, default="")
@pass_globals
def ingest(g: Globals, expected_size: int, expected_digest: str, ref: str) -> None:
    """Accept content into the store: the bytes on stdin, written through REF."""
    if expected_digest:
        _parse_digest(expected_digest)
    if not ref:
        raise CommandError("must specify a transaction reference")
    g.client().content.write_blob(
        ref,
        _stdin_chunks(sys.stdin.buffer),
        size=expected_size,
        expected=expected_digest,
        # ctr waits for a held ref as long as the command may run.
        lock_timeout=g.timeout or math.inf,
    )


@command.command("active")
@click.option(
    "-t",
    "--timeout",
    type=Duration(),
    default=0.0,
    envvar="CONTAINERD_FETCH_TIMEOUT",
    help="Total timeout for fetch.",
)
@click.option("--root", default="/tmp/content", help="Path to content store root (unused).")
@click.argument("match", required=False, default="")
@pass_globals
def active(g: Globals, timeout: float, root: str, match: str) -> None:
    """Display active transfers (MATCH is a filter, e.g. 'ref~=layer')."""
    statuses = g.client().content.list_statuses(*([match] if match else []))
    rows: list[list[str]] = [["REF", "SIZE", "AGE"]]
    rows += [[s.ref, human_size(s.offset), _age(s.started_at)] for s in statuses]
    echo_table(rows, minwidth=1, tabwidth=8, padding=1, padchar="\t")


@command.command("label")
@click.argument("digest")
@click.argument("labels", nargs=-1, metavar="[<label>=<value> ...]")
@pass_globals
def label(g: Globals, digest: str, labels: tuple[str, ...]) -> None:
    """Add labels to content (an empty value removes a label)."""
    content = g.client().content
    dgst = _parse_digest(digest)
    changes = label_args(labels)
    info = content.set_labels(dgst, changes) if changes else content.info(dgst)
    click.echo(sorted_labels(info.labels))


@command.command("rm", aliases=["delete", "del", "remove"])
@click.argument("digests", nargs=-1)
@pass_globals
def remove(g: Globals, digests: tuple[str, ...]) -> None:
    """Permanently delete one or more blobs; deleted ones are printed to stdout."""
    content = g.client().content
    first: Exception | None = None
    for arg in digests:
        try:
            content.delete(_parse_digest(arg))
        except errdefs.NotFound:
            continue  # as ctr: already gone is not an error
        except (errdefs.ContainerdError, CommandError) as exc:
            first = first or exc
            message = exc.format_message() if isinstance(exc, CommandError) else str(exc)
            log.error("could not delete %s: %s", arg, message)
            continue
        click.echo(arg)
    if first is not None:
        raise first


@command.command("fetch")
@registry_options
@click.option(
    "--platform", "platform_specs", multiple=True, help="Pull content from a specific platform."
)
@click.option("--all-platforms", is_flag=True, help="Pull content from all platforms.")
@click.option("--all-metadata", is_flag=True, help="Pull metadata for all platforms.")
@click.option(
    "--metadata-only", is_flag=True, help="Pull all metadata including manifests and configs."
)
@click.option(
    "--max-concurrent-downloads",
    type=int,
    default=3,
    show_default=True,
    help="Set the max concurrent downloads for each pull.",
)
@click.argument("ref")
@pass_globals
def fetch(
    g: Globals,
    /,
    ref: str,
    platform_specs: tuple[str, ...],
    all_platforms: bool,
    all_metadata: bool,
    metadata_only: bool,
    max_concurrent_downloads: int,
    **kwargs: Any,
) -> None:
    """Fetch all content for an image into the content store (and record the image)."""
    from pycontainerd.cli.progress import ProgressDisplay

    registry = registry_kwargs(kwargs)
    if len(platform_specs) > 1:
        raise click.UsageError("only one --platform may be given here")
    display = ProgressDisplay(title=ref)
    try:
        g.client().fetch(
            ref,
            platform=platform_specs[0] if platform_specs else None,
            all_platforms=all_platforms,
            all_metadata=all_metadata,
            metadata_only=metadata_only,
            progress=display,
            max_concurrent_downloads=max_concurrent_downloads,
            **registry,
        )
    finally:
        display.close()
