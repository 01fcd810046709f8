"""``pyctr images``: list, tag, label, remove, import, export, pull, fetch and push images.

Output follows ``ctr images``: ``ls`` computes SIZE for the host's platform
and PLATFORMS from the image's index or config, as ctr does; ``import``
prints ``unpacking NAME (DIGEST)...done`` for each image it unpacks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from pycontainerd import errdefs, platforms
from pycontainerd.cli._registry import registry_kwargs, registry_options
from pycontainerd.cli.app import Globals, Group, echo_table, label_args, pass_globals, sorted_labels
from pycontainerd.images import Descriptor, Image
from pycontainerd.images.handlers import walk_size
from pycontainerd.images.manifest import drive, platforms_of

if TYPE_CHECKING:
    from pycontainerd.client import Client
    from pycontainerd.client._sync.image import Image as ImageObject

__all__ = ["command", "human_bytes"]

log = logging.getLogger("pycontainerd.cli")

_NAMES_MAY_START_WITH_DASH = {"ignore_unknown_options": True}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


@click.group("images", cls=Group, aliases=["image", "i"])
def command() -> None:
    """Manage images."""


def human_bytes(size: int) -> str:
    """Sizes as ctr prints them (go-units' ``%02.1f %s`` in powers of 1024)."""
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:02.1f} {_UNITS[unit]}"


def _size_and_platforms(image: ImageObject) -> tuple[int, str]:
    """ctr's SIZE (for the host's platform) and PLATFORMS cells; errors are logged."""
    walk = walk_size(image.target, platforms.only(platforms.default()))
    size, error = drive(walk, image.read_blob)
    if error is not None:
        log.error("failed calculating size for image %s: %s", image.name, error.message)
    try:
        found = platforms_of(image.read_blob, image.target)
    except errdefs.ContainerdError as exc:
        log.error("failed resolving platform for image %s: %s", image.name, exc.message)
        return size, "-"
    names = sorted({platforms.format(p) for p in found})
    return size, ",".join(names) or "-"


@command.command("ls", aliases=["list"])
@click.option("-q", "--quiet", is_flag=True, help="Print only the image refs.")
@click.argument("filters", nargs=-1)
@pass_globals
def list_images(g: Globals, quiet: bool, filters: tuple[str, ...]) -> None:
    """List images known to the daemon, optionally filtered (name==..., labels.k==v)."""
    images = g.client().list_images(*filters)
    if quiet:
        for image in images:
            click.echo(image.name)
        return
    rows = [["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]]
    for image in images:
        t = image.target
        size, platform_cell = _size_and_platforms(image)
        rows.append(
            [
                image.name,
                t.media_type,
                t.digest,
                human_bytes(size),
                platform_cell,
                sorted_labels(image.labels) or "-",
            ]
        )
    echo_table(rows, minwidth=1, tabwidth=8, padding=1)


def _parse_platform(spec: str) -> platforms.Platform:
    try:
        return platforms.parse(spec)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"unable to parse platform {spec}: {exc.message}") from exc


@contextlib.contextmanager
def _input(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as f:
        yield f


def _unpack(client: Client, image: Image, snapshotter: str, matcher: platforms.Matcher) -> None:
    """Unpack as ctr prints it: ``unpacking NAME (DIGEST)...done``."""
    click.echo(f"unpacking {image.name} ({image.target.digest})...", nl=False)
    client.get_image(image.name, platform=matcher).unpack(snapshotter)
    click.echo("done")


@command.command("import")
@click.option(
    "--base-name",
    default="",
    help="Base image name for added images; when "
    "given, only images with this name prefix are imported.",
)
@click.option("--digests", is_flag=True, help="Also create digest images (BASE@DIGEST).")
@click.option(
    "--skip-digest-for-named", is_flag=True, help="Skip --digests for images named in the archive."
)
@click.option("--index-name", default="", help="Image name to keep the index as.")
@click.option("--all-platforms", is_flag=True, help="Import content for all platforms.")
@click.option("--platform", "platform_spec", default="", help="Import content for a platform.")
@click.option("--no-unpack", is_flag=True, help="Skip unpacking the images.")
@click.option(
    "--compress-blobs",
    is_flag=True,
    help="Compress uncompressed blobs when creating the manifest (Docker format only).",
)
@click.option(
    "--snapshotter",
    envvar="CONTAINERD_SNAPSHOTTER",
    default="",
    help="Snapshotter name; empty for the default.",
)
@click.option(
    "--from-rootfs",
    "rootfs",
    default="",
    metavar="PATH",
    help="Build a one-layer image from a directory or tar; the argument is its name.",
)
@click.option("--config-cmd", multiple=True, help="With --from-rootfs: a Cmd argument.")
@click.option("--config-env", multiple=True, help="With --from-rootfs: an Env entry K=V.")
@click.option("--config-workdir", default="", help="With --from-rootfs: the WorkingDir.")
@click.argument("source", required=False, default="")
@pass_globals
def import_images(
    g: Globals,
    base_name: str,
    digests: bool,
    skip_digest_for_named: bool,
    index_name: str,
    all_platforms: bool,
    platform_spec: str,
    no_unpack: bool,
    compress_blobs: bool,
    snapshotter: str,
    rootfs: str,
    config_cmd: tuple[str, ...],
    config_env: tuple[str, ...],
    config_workdir: str,
    source: str,
) -> None:
    """Import images from a tar stream (OCI v1, Docker v1.1/v1.2), or from a rootfs.

    FILE is a path or - for stdin.  Without --base-name, tag-only names get
    the prefix import-YYYY-MM-DD.
    """
    # Here, not at the top: the archive code it brings would slow ``images ls``.
    from pycontainerd.images import archive_import as ai

    if skip_digest_for_named and not digests:
        raise click.ClickException(
            "--skip-digest-for-named must be specified with --digests option"
        )
    platform = _parse_platform(platform_spec) if platform_spec else None
    matcher = platforms.only(platform) if platform is not None else None
    client = g.client()
    with client.lease():
        if rootfs:
            if not source:
                raise click.ClickException("please provide a name for the image")
            images = [
                client.import_rootfs(
                    Path(rootfs),
                    source,
                    platform=platform,
                    cmd=config_cmd,
                    env=config_env,
                    workdir=config_workdir,
                )
            ]
        else:
            if not source:
                raise click.ClickException("please provide an archive to import (or - for stdin)")
            prefix = base_name or f"import-{dt.datetime.now().strftime('%Y-%m-%d')}"
            translator = ai.filter_ref_prefix(prefix) if base_name else ai.add_ref_prefix(prefix)
            with _input(source) as stream:
                images = client.import_archive(
                    stream,
                    ref_translator=translator,
                    digest_ref=ai.digest_translator(prefix) if digests else None,
                    skip_digest_for_named=skip_digest_for_named,
                    index_name=index_name,
                    platform=matcher,
                    all_platforms=all_platforms,
                    compress_blobs=compress_blobs,
                )
        if no_unpack:
            return
        log.debug("unpacking %d images", len(images))
        for image in images:
            _unpack(client, image, snapshotter, matcher or platforms.only(platforms.default()))


@command.command("export")
@click.option(
    "--skip-manifest-json",
    is_flag=True,
    help="Do not add Docker compatible manifest.json to the archive.",
)
@click.option(
    "--skip-non-distributable",
    is_flag=True,
    help="Do not add non-distributable blobs such as Windows layers.",
)
@click.option("--platform", "platform_specs", multiple=True, help="Export content for a platform.")
@click.option("--all-platforms", is_flag=True, help="Export content for all platforms.")
@click.argument("out", required=False, default="")
@click.argument("refs", nargs=-1)
@pass_globals
def export_images(
    g: Globals,
    skip_manifest_json: bool,
    skip_non_distributable: bool,
    platform_specs: tuple[str, ...],
    all_platforms: bool,
    out: str,
    refs: tuple[str, ...],
) -> None:
    """Export images to OUT (a path, or - for stdout) as an OCI archive.

    A Docker manifest.json is added for the platform (--skip-manifest-json
    leaves it out); --all-platforms exports every platform of an index.
    """
    if not out or not refs:
        raise click.ClickException(
            "please provide both an output filename and an image reference to export"
        )
    selected = [_parse_platform(p) for p in platform_specs]
    client = g.client()
    with contextlib.ExitStack() as stack:
        f = sys.stdout.buffer if out == "-" else stack.enter_context(open(out, "wb"))
        client.export(
            f,
            *refs,
            platforms=selected,
            all_platforms=all_platforms,
            skip_manifest_json=skip_manifest_json,
            skip_non_distributable=skip_non_distributable,
        )


@command.command("rm", aliases=["delete", "del", "remove"])
@click.option("--sync", is_flag=True, help="Wait for the image's resources to be collected.")
@click.argument("refs", nargs=-1)
@pass_globals
def remove(g: Globals, sync: bool, refs: tuple[str, ...]) -> None:
    """Remove one or more images by reference; a missing one is only a warning."""
    client = g.client()
    first: errdefs.ContainerdError | None = None
    for i, ref in enumerate(refs):
        try:
            # As ctr: only the last delete waits for garbage collection.
            client.images.delete(ref, sync=sync and i == len(refs) - 1)
        except errdefs.NotFound:
            log.warning("%s: image not found", ref)
        except errdefs.ContainerdError as exc:
            first = first or errdefs.Unknown(f"unable to delete {ref}: {errdefs.wire_message(exc)}")
            log.error("unable to delete %s: %s", ref, errdefs.wire_message(exc))
        else:
            click.echo(ref)
    if first is not None:
        raise first


@command.command("tag", context_settings=_NAMES_MAY_START_WITH_DASH)
@click.option("--force", is_flag=True, help="Replace a target ref that already exists.")
@click.argument("source", required=False, default="")
@click.argument("targets", nargs=-1)
@pass_globals
def tag(g: Globals, force: bool, source: str, targets: tuple[str, ...]) -> None:
    """Tag an image: create TARGET records pointing where SOURCE points."""
    if not source:
        raise click.ClickException("please provide an image reference to tag from")
    if not targets:
        raise click.ClickException("please provide an image reference to tag to")
    client = g.client()
    with client.lease():
        image = client.images.get(source)
        for target in targets:
            try:
                client.images.create(target, image.target, image.labels)
            except errdefs.AlreadyExists:
                if not force:
                    raise
                client.images.delete(target)
                client.images.create(target, image.target, image.labels)
            click.echo(target)


@command.command("label", context_settings=_NAMES_MAY_START_WITH_DASH)
@click.option("--replace-all", "-r", is_flag=True, help="Replace all labels.")
@click.argument("name", required=False, default="")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_globals
def set_labels(g: Globals, replace_all: bool, name: str, labels: tuple[str, ...]) -> None:
    """Set and clear labels for an image; an empty value (KEY=) clears the label."""
    if not name:
        raise click.ClickException("please specify an image")
    new = label_args(labels)
    paths = ["labels"] if replace_all else [f"labels.{k}" for k in new]
    # With no paths the whole record is replaced, as with ctr.
    image = Image(name=name, target=Descriptor("", "", 0), labels=new)
    updated = g.client().images.update(image, *paths)
    click.echo(",".join(f"{k}={v}" for k, v in sorted(updated.labels.items())))


# --- registries ------------------------------------------------------------------


def _platform_arg(specs: tuple[str, ...]) -> str | None:
    if len(specs) > 1:
        raise click.UsageError("only one --platform may be given here")
    return specs[0] if specs else None


def _by_transfer(client: Any, local: bool, registry: dict[str, object]) -> bool:
    """Pull or push through the daemon's Transfer service: when it offers one,
    unless ``--local`` (or ``--skip-verify`` or TLS files, which the
    service's registry type cannot carry, or ``--http-dump``/``--http-trace``,
    whose output would go to the daemon's log rather than this terminal)."""
    client_side = ("skip_verify", "ca_files", "client_certs", "http_dump", "http_trace")
    if local or any(registry.get(k) for k in client_side):
        return False
    from pycontainerd.client import _transfer_service as transfer_service

    return transfer_service.available(client)


def _pull(
    g: Globals,
    ref: str,
    *,
    local: bool,
    unpack: bool,
    snapshotter: str,
    platform_specs: tuple[str, ...],
    all_platforms: bool,
    all_metadata: bool,
    labels: tuple[str, ...],
    max_concurrent_downloads: int,
    registry: dict[str, object],
    print_chainid: bool = False,
) -> None:
    from pycontainerd.cli.progress import ProgressDisplay

    client = g.client()
    platform = _platform_arg(platform_specs)
    if platform is not None:
        _parse_platform(platform)
    start = time.monotonic()
    display = ProgressDisplay(title=ref)
    try:
        if _by_transfer(client, local, registry):
            from pycontainerd.client import _transfer_service as transfer_service

            transfer_service.pull(
                client,
                ref,
                unpack=unpack,
                snapshotter=snapshotter,
                platform=platform,
                all_platforms=all_platforms,
                all_metadata=all_metadata,
                labels=label_args(labels),
                plain_http=bool(registry["plain_http"]),
                hosts_dir=registry["hosts_dir"],  # type: ignore[arg-type]
                user=registry["user"],  # type: ignore[arg-type]
                refresh_token=registry["refresh_token"],  # type: ignore[arg-type]
                headers=registry["headers"],  # type: ignore[arg-type]
                progress=display,
            )
            target = client.images.get(ref).target
        elif unpack:
            image = client.pull(
                ref,
                snapshotter=snapshotter,
                platform=platform,
                all_platforms=all_platforms,
                all_metadata=all_metadata,
                labels=label_args(labels),
                progress=display,
                max_concurrent_downloads=max_concurrent_downloads,
                **registry,  # type: ignore[arg-type]
            )
            target = image.target
        else:
            target = client.fetch(
                ref,
                platform=platform,
                all_platforms=all_platforms,
                all_metadata=all_metadata,
                labels=label_args(labels),
                progress=display,
                max_concurrent_downloads=max_concurrent_downloads,
                **registry,  # type: ignore[arg-type]
            ).target
    finally:
        display.close()
    if unpack:
        shown = platform or platforms.format(platforms.default())
        click.echo(f"unpacking {shown} {target.digest}...")
    click.echo(f"done: {time.monotonic() - start:.6g}s")
    if print_chainid:
        from pycontainerd.client._distribution import platform_matcher
        from pycontainerd.client._sync.image import Image
        from pycontainerd.images.identity import chain_id

        pulled = Image(client, client.images.get(ref), platform=platform_matcher(platform))
        click.echo(f"image chain ID: {chain_id(pulled.rootfs())}")


_pull_options = [
    click.option("--snapshotter", default="", help="Snapshotter name (default: overlayfs)."),
    click.option("--label", "labels", multiple=True, help="Labels to attach to the image."),
    click.option(
        "--platform", "platform_specs", multiple=True, help="Pull content from a specific platform."
    ),
    click.option(
        "--all-platforms", is_flag=True, help="Pull content and metadata from all platforms."
    ),
    click.option("--all-metadata", is_flag=True, help="Pull metadata for all platforms."),
    click.option(
        "--max-concurrent-downloads",
        type=int,
        default=3,
        show_default=True,
        help="Set the max concurrent downloads for each pull.",
    ),
    click.option(
        "--local",
        is_flag=True,
        help="Fetch content from the local client rather than using the transfer service.",
    ),
]


def _with_pull_options(f: Any) -> Any:
    for option in reversed(_pull_options):
        f = option(f)
    return registry_options(f)


@command.command("pull")
@_with_pull_options
@click.option("--print-chainid", is_flag=True, help="Print the resulting image's chain ID.")
@click.argument("ref")
@pass_globals
def pull(g: Globals, /, ref: str, **kwargs: Any) -> None:
    """Pull an image from a remote registry and unpack it.

    Blobs are fetched concurrently into the content store (progress per
    blob), each layer unpacked into the snapshotter as soon as it and its
    parent are in, then the image record is created.
    """
    registry = registry_kwargs(kwargs)
    _pull(g, ref, unpack=True, registry=registry, **kwargs)


@command.command("fetch")
@_with_pull_options
@click.argument("ref")
@pass_globals
def fetch(g: Globals, /, ref: str, **kwargs: Any) -> None:
    """Fetch an image's content and record it, without unpacking."""
    registry = registry_kwargs(kwargs)
    kwargs.pop("snapshotter")
    _pull(g, ref, unpack=False, snapshotter="", registry=registry, **kwargs)


@command.command("push")
@registry_options
@click.option(
    "--platform", "platform_spec", default="", help="Push content from a specific platform."
)
@click.option(
    "--max-concurrent-uploaded-layers",
    type=int,
    default=3,
    show_default=True,
    help="Set the max concurrent uploaded layers for each push.",
)
@click.option(
    "--local",
    "client_side",
    is_flag=True,
    help="Push content from the local client rather than using the transfer service.",
)
@click.argument("remote")
@click.argument("local", required=False)
@pass_globals
def push(
    g: Globals,
    /,
    remote: str,
    local: str | None,
    platform_spec: str,
    max_concurrent_uploaded_layers: int,
    client_side: bool,
    **kwargs: Any,
) -> None:
    """Push an image to a remote registry (REMOTE, from the image LOCAL, default REMOTE)."""
    from pycontainerd.cli.progress import ProgressDisplay

    registry = registry_kwargs(kwargs)
    client = g.client()
    if platform_spec:
        _parse_platform(platform_spec)
    image = client.images.get(local or remote)
    start = time.monotonic()
    display = ProgressDisplay()
    try:
        if _by_transfer(client, client_side, registry):
            from pycontainerd.client import _transfer_service as transfer_service

            transfer_service.push(
                client,
                remote,
                image.name,
                platform=platform_spec or None,
                plain_http=bool(registry["plain_http"]),
                hosts_dir=registry["hosts_dir"],
                user=registry["user"],
                refresh_token=registry["refresh_token"],
                headers=registry["headers"],
                progress=display,
            )
        else:
            client.push(
                remote,
                image,
                platform=platform_spec or None,
                progress=display,
                max_concurrent_uploads=max_concurrent_uploaded_layers,
                **registry,
            )
    finally:
        display.close()
    click.echo(f"done: {time.monotonic() - start:.6g}s")
