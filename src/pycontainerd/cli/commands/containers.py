"""``pyctr containers``: create, list, inspect, label, remove, checkpoint
and restore containers.

Output follows ``ctr containers``: ``ls`` prints ``CONTAINER IMAGE RUNTIME``,
``info`` the record as ctr's JSON (Go field names, the spec decoded), and
``label`` the labels after the change as ``k=v,...``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
from google.protobuf import any_pb2

from pycontainerd import containers, errdefs, typeurl
from pycontainerd import labels as label_limits
from pycontainerd.api.runtime.v2.runc.options import oci_pb2 as runc_options
from pycontainerd.cli import gofmt
from pycontainerd.cli.app import Globals, Group, echo_table, label_args, pass_globals
from pycontainerd.client import Client
from pycontainerd.client._sync.containers import (
    DEFAULT_RUNTIME,
    AnyContainerOpt,
    Container,
    with_image,
    with_new_snapshot,
    with_remapped_snapshot,
    with_snapshotter,
)
from pycontainerd.client._sync.image import Image
from pycontainerd.images.unpack import LABEL_STOP_SIGNAL
from pycontainerd.oci import spec as oci

__all__ = [
    "command",
    "container_flags",
    "info_json",
    "new_container",
    "parse_mount",
    "run_flags",
]

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("pycontainerd.cli")

# ctr stops reading flags at the first argument: the rest is the command.
_ARGS_AFTER_FIRST = {"ignore_unknown_options": True, "allow_interspersed_args": False}
_NAMES_MAY_START_WITH_DASH = {"ignore_unknown_options": True}


@click.group("containers", cls=Group, aliases=["c", "container"])
def command() -> None:
    """Manage containers."""


def _env_file(path: str) -> list[str]:
    lines = Path(path).read_text().splitlines()
    return [line for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]


def container_flags(f: F) -> F:
    """The flags ``containers create`` and ``run`` share (ctr's ContainerFlags)."""
    options = [
        click.option(
            "--snapshotter", envvar="CONTAINERD_SNAPSHOTTER", default="", help="Snapshotter name."
        ),
        click.option(
            "--snapshotter-label",
            multiple=True,
            help="Label for the container's new snapshot (foo=bar); repeatable.",
        ),
        click.option(
            "--config", "-c", "config_path", default="", help="Path to a runtime spec file."
        ),
        click.option("--cwd", default="", help="Working directory of the process."),
        click.option("--env", multiple=True, help="Environment variable (FOO=bar); repeatable."),
        click.option("--env-file", default="", help="File of environment variables, one a line."),
        click.option("--label", multiple=True, help="Container label (foo=bar); repeatable."),
        click.option("--annotation", multiple=True, help="OCI annotation (foo=bar); repeatable."),
        click.option(
            "--mount",
            multiple=True,
            help="Additional mount (type=bind,src=/tmp,dst=/host,options=rbind:ro); repeatable.",
        ),
        click.option("--net-host", is_flag=True, help="Use the host's network."),
        click.option("--privileged", is_flag=True, help="Run a privileged container."),
        click.option("--read-only", is_flag=True, help="Make the root filesystem read-only."),
        click.option(
            "--runtime", default=DEFAULT_RUNTIME, show_default=True, help="Runtime name."
        ),
        click.option("--tty", "-t", is_flag=True, help="Allocate a TTY for the container."),
        click.option(
            "--with-ns",
            multiple=True,
            help="Join an existing Linux namespace (nstype:path); repeatable.",
        ),
        click.option("--allow-new-privs", is_flag=True, help="Turn off NoNewPrivileges."),
        click.option("--memory-limit", type=int, default=0, help="Memory limit in bytes."),
        click.option("--cpu-quota", type=int, default=-1, help="CFS CPU quota (microseconds)."),
        click.option("--cpu-period", type=int, default=0, help="CFS CPU period (microseconds)."),
        click.option("--device", multiple=True, help="Host device (or tree) to add; repeatable."),
        click.option("--rootfs-propagation", default="", help="Propagation of the rootfs."),
        click.option("--cap-add", multiple=True, help="Add a capability (CAP_...); repeatable."),
        click.option("--cap-drop", multiple=True, help="Drop a capability (CAP_...); repeatable."),
        click.option(
            "--rootfs", is_flag=True, help="Use a root filesystem directory, not an image."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def run_flags(f: F) -> F:
    """The flags only ``run`` has (ctr's platformRunFlags), on top of the shared ones."""
    options = [
        click.option("--cgroup", default=None, help='Cgroup path ("" for none).'),
        click.option(
            "--uidmap",
            default="",
            metavar="container-uid:host-uid:length",
            help="Run in a user namespace with this UID mapping.",
        ),
        click.option(
            "--gidmap",
            default="",
            metavar="container-gid:host-gid:length",
            help="Run in a user namespace with this GID mapping.",
        ),
        click.option("--cpus", type=float, default=0.0, help="CFS CPU quota, in CPUs."),
        click.option(
            "--cpu-shares", type=int, default=1024, show_default=True, help="CPU shares."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return container_flags(f)


@command.command("create", context_settings=_ARGS_AFTER_FIRST)
@container_flags
@click.argument("args", nargs=-1, metavar="IMAGE|ROOTFS CONTAINER [COMMAND] [ARG...]")
@pass_globals
def create(g: Globals, /, args: tuple[str, ...], **opts: Any) -> None:
    """Create a container (its record and OCI spec; no task is started)."""
    new_container(g, args, opts)


def new_container(g: Globals, args: tuple[str, ...], opts: dict[str, Any]) -> Container:
    """The container ``containers create`` and ``run`` make from their flags."""
    if opts["config_path"]:
        if len(args) > 1:
            raise errdefs.InvalidArgument(
                "with spec config file, only container id should be provided"
            )
        id = args[0] if args else ""
        ref = ""
    else:
        ref = args[0] if args else ""
        id = args[1] if len(args) > 1 else ""
        if args[2:3] == ("--",):
            # ctr's ``IMAGE ID -- CMD...``: the terminator is not the command.
            args = (*args[:2], *args[3:])
        if not ref:
            raise errdefs.InvalidArgument("image ref must be provided")
    if not id:
        raise errdefs.InvalidArgument("container id must be provided")
    client = g.client()
    labels = label_args(opts["label"])
    record_labels = labels
    container_opts: list[AnyContainerOpt] = []
    if opts["config_path"]:
        spec: dict[str, Any] = json.loads(Path(opts["config_path"]).read_text())
    elif opts["rootfs"]:
        root = oci.with_root_path(os.path.abspath(ref))
        spec = oci.generate(g.namespace, id, *_spec_opts(root, args[2:], labels, opts))
    else:
        image, container_opts, record_labels = _from_image(client, ref, id, labels, opts)
        root = image.spec_opts(args[2:], snapshotter=opts["snapshotter"])
        spec = oci.generate(g.namespace, id, *_spec_opts(root, args[2:], labels, opts))
    runtime = opts["runtime"]
    options = (
        typeurl.marshal_any(runc_options.Options()) if runtime == "io.containerd.runc.v2" else None
    )
    return client.new_container(
        id,
        *container_opts,
        labels=record_labels,
        runtime=runtime,
        runtime_options=options,
        spec=spec,
    )


def _from_image(
    client: Client, ref: str, id: str, labels: dict[str, str], opts: dict[str, Any]
) -> tuple[Image, list[AnyContainerOpt], dict[str, str]]:
    """The image, container options and labels ctr uses for ``create IMAGE``.

    The image is unpacked first if needed; the container gets a new active
    snapshot named after it on the image's layers (with ``--uidmap`` and
    ``--gidmap``, on a copy of them owned by the mapped host ids).  Labels
    are the image's, then the image config's, then the command line's (last
    wins), plus the image's stop signal.
    """
    snapshotter = opts["snapshotter"]
    image = client.get_image(ref)
    if not image.is_unpacked(snapshotter):
        image.unpack(snapshotter)
    config = image.image_config().raw.get("config") or {}
    merged = {**_valid_labels(image.labels), **(config.get("Labels") or {}), **labels}
    merged[LABEL_STOP_SIGNAL] = config.get("StopSignal") or "SIGTERM"
    if opts.get("uidmap") and opts.get("gidmap"):
        # As ctr run: the container's root owns what root owned in the image
        # only in a copy shifted to the host ids it is mapped to.
        snapshot = with_remapped_snapshot(
            id,
            image,
            oci.parse_id_mapping(opts["uidmap"]).host_id,
            oci.parse_id_mapping(opts["gidmap"]).host_id,
        )
    else:
        snapshot = with_new_snapshot(id, image, labels=label_args(opts["snapshotter_label"]))
    container_opts: list[AnyContainerOpt] = [
        with_image(image),
        with_snapshotter(snapshotter),
        snapshot,
    ]
    return image, container_opts, merged


def _valid_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Image labels a container can take: an oversized one is skipped with a warning."""
    result = {}
    for key, value in labels.items():
        try:
            label_limits.validate(key, value)
        except errdefs.InvalidArgument as exc:
            log.warning("unable to add image label with key %s to the container: %s", key, exc)
            continue
        result[key] = value
    return result


_NAMESPACE_TYPES = ("pid", "network", "uts", "mount", "user", "ipc", "cgroup")


def parse_mount(text: str) -> dict[str, Any]:
    """ctr's ``--mount``: ``type=bind,src=/tmp,dst=/host,options=rbind:ro`` (CSV)."""
    import csv

    mount: dict[str, Any] = {}
    for field in next(csv.reader([text]), []):
        key, sep, value = field.partition("=")
        if not sep:
            raise errdefs.InvalidArgument("invalid mount specification: expected key=val")
        if key == "type":
            mount["type"] = value
        elif key in ("source", "src"):
            mount["source"] = value
        elif key in ("destination", "dst"):
            mount["destination"] = value
        elif key == "options":
            mount["options"] = value.split(":")
        else:
            raise errdefs.InvalidArgument(f"mount option {errdefs.q(key)} not supported")
    return mount


def _spec_opts(
    root: oci.SpecOpt,
    process_args: tuple[str, ...],
    labels: Mapping[str, str],
    opts: dict[str, Any],
) -> list[oci.SpecOpt]:
    """The spec options ctr applies for these flags, in ctr's order; ``root``
    is the rootfs path (``--rootfs``) or the image config's process."""
    result: list[oci.SpecOpt] = []
    if opts["env_file"]:
        result.append(oci.with_env(_env_file(opts["env_file"])))
    result.append(oci.with_env(opts["env"]))
    result.append(oci.with_mounts([parse_mount(m) for m in opts["mount"]]))
    result.append(root)
    if opts.get("uidmap") and opts.get("gidmap"):
        uid_map = oci.parse_id_mapping(opts["uidmap"])
        gid_map = oci.parse_id_mapping(opts["gidmap"])
        result.append(oci.with_user_namespace([uid_map], [gid_map]))
    if opts["read_only"]:
        result.append(oci.with_readonly_rootfs)
    if process_args:
        result.append(oci.with_process_args(*process_args))
    if opts["cwd"]:
        result.append(oci.with_process_cwd(opts["cwd"]))
    if opts["tty"]:
        result.append(oci.with_tty)
    if opts["privileged"]:
        result += [oci.with_privileged, oci.with_all_devices_allowed, oci.with_host_devices]
    if opts["net_host"]:
        result += [
            oci.with_host_namespace("network"),
            oci.with_host_hosts_file,
            oci.with_host_resolvconf,
            oci.with_env([f"HOSTNAME={os.uname().nodename}"]),
        ]
    cpus = opts.get("cpus", 0.0)
    if cpus > 0:
        result.append(oci.with_cpu_cfs(int(cpus * 100000.0), 100000))
    if opts.get("cpu_shares", 0) > 0:
        result.append(oci.with_cpu_shares(opts["cpu_shares"]))
    if opts["cpu_quota"] != -1 or opts["cpu_period"] != 0:
        if cpus > 0:
            raise errdefs.InvalidArgument("cpus and quota/period should be used separately")
        result.append(oci.with_cpu_cfs(opts["cpu_quota"], opts["cpu_period"]))
    for joined in opts["with_ns"]:
        kind, sep, path = joined.partition(":")
        if not sep or ":" in path:
            raise errdefs.InvalidArgument(
                "joining a Linux namespace using --with-ns requires the format 'nstype:path'"
            )
        if kind not in _NAMESPACE_TYPES:
            raise errdefs.InvalidArgument(
                f"the Linux namespace type specified in --with-ns is not valid: {kind}"
            )
        result.append(oci.with_linux_namespace(kind, path))
    if opts["allow_new_privs"]:
        result.append(oci.with_new_privileges)
    if opts.get("cgroup") is not None:
        result.append(oci.with_cgroup(opts["cgroup"]))
    if opts["memory_limit"]:
        result.append(oci.with_memory_limit(opts["memory_limit"]))
    for device in opts["device"]:
        result.append(oci.with_devices(device, "", "rwm"))
    if opts["rootfs_propagation"]:
        result.append(oci.with_rootfs_propagation(opts["rootfs_propagation"]))
    if opts["cap_add"]:
        result.append(oci.with_add_capabilities(opts["cap_add"]))
    if opts["cap_drop"]:
        result.append(oci.with_drop_capabilities(opts["cap_drop"]))
    result.append(oci.with_annotations(labels))
    result.append(oci.with_annotations(label_args(opts["annotation"])))
    return result


@command.command("ls", aliases=["list"])
@click.option("-q", "--quiet", is_flag=True, help="Print only the container ids.")
@click.argument("filters", nargs=-1)
@pass_globals
def list_containers(g: Globals, quiet: bool, filters: tuple[str, ...]) -> None:
    """List containers, optionally filtered (id==web, labels.app==x, image~=busybox)."""
    records = g.client().containers.list(*filters)
    if quiet:
        click.echo("".join(f"{c.id}\n" for c in records), nl=False)
        return
    rows = [["CONTAINER", "IMAGE", "RUNTIME"]]
    rows += [[c.id, c.image or "-", c.runtime.name] for c in records]
    # ctr's tabwriter.NewWriter(os.Stdout, 4, 8, 4, ' ', 0)
    echo_table(rows, minwidth=4, tabwidth=8, padding=4)


def _any_json(value: any_pb2.Any | None) -> dict[str, str] | None:
    if value is None:
        return None
    out: dict[str, str] = {}
    if value.type_url:
        out["type_url"] = value.type_url
    if value.value:
        out["value"] = base64.b64encode(value.value).decode()
    return out


def info_json(c: containers.Container) -> dict[str, Any]:
    """A record as ``ctr containers info`` prints it (Go's field names and order)."""
    info: dict[str, Any] = {
        "ID": c.id,
        "Labels": dict(c.labels) or None,
        "Image": c.image,
        "Runtime": {"Name": c.runtime.name, "Options": _any_json(c.runtime.options)},
        "SnapshotKey": c.snapshot_key,
        "Snapshotter": c.snapshotter,
        "CreatedAt": gofmt.rfc3339nano(c.created_at),
        "UpdatedAt": gofmt.rfc3339nano(c.updated_at),
        "Extensions": {k: _any_json(v) for k, v in c.extensions.items()} or None,
    }
    if c.spec is not None and c.spec.value:
        info["Spec"] = oci.from_any(c.spec)
    else:
        info["Spec"] = _any_json(c.spec)
    return info


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=4, ensure_ascii=False))


@command.command("info", context_settings=_NAMES_MAY_START_WITH_DASH)
@click.option("--spec", "spec_only", is_flag=True, help="Only display the spec.")
@click.argument("id", required=False, default="")
@pass_globals
def info(g: Globals, spec_only: bool, id: str) -> None:
    """Get info about a container."""
    if not id:
        raise errdefs.InvalidArgument("container id must be provided")
    record = g.client().containers.get(id)
    if spec_only:
        _print_json(oci.from_any(record.spec) if record.spec is not None else None)
        return
    _print_json(info_json(record))


@command.command("label", context_settings=_NAMES_MAY_START_WITH_DASH)
@click.argument("id", required=False, default="")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_globals
def set_labels(g: Globals, id: str, labels: tuple[str, ...]) -> None:
    """Set and clear labels for a container; an empty value (KEY=) clears the label."""
    if not id:
        raise errdefs.InvalidArgument("container id must be provided")
    client = g.client()
    container = client.load_container(id)
    after = container.set_labels(label_args(labels))
    click.echo(",".join(f"{k}={v}" for k, v in sorted(after.items())))


@command.command("rm", aliases=["delete", "del", "remove"])
@click.option("--keep-snapshot", is_flag=True, help="Do not clean up the container's snapshot.")
@click.argument("ids", nargs=-1)
@pass_globals
def remove(g: Globals, keep_snapshot: bool, ids: tuple[str, ...]) -> None:
    """Delete one or more containers; the others are still tried when one fails."""
    if not ids:
        raise errdefs.InvalidArgument("must specify at least one container to delete")
    client = g.client()
    first: errdefs.ContainerdError | None = None
    for id in ids:
        try:
            # Loading first gives ctr's "in namespace" message for a missing id.
            client.load_container(id).delete(cleanup_snapshot=not keep_snapshot)
        except errdefs.ContainerdError as exc:
            first = first or exc
            log.error("failed to delete container %s: %s", errdefs.q(id), errdefs.wire_message(exc))
    if first is not None:
        raise first


@command.command("checkpoint")
@click.option("--rw", is_flag=True, help="Include the rw layer in the checkpoint.")
@click.option("--image", "with_image", is_flag=True, help="Include the image in the checkpoint.")
@click.option("--task", "with_task", is_flag=True, help="Checkpoint container task.")
@click.argument("id", required=False, default="")
@click.argument("ref", required=False, default="")
@pass_globals
def checkpoint(g: Globals, rw: bool, with_image: bool, with_task: bool, id: str, ref: str) -> None:
    """Checkpoint a container into the image REF (its task with CRIU: --task)."""
    if not id:
        raise errdefs.InvalidArgument("container id must be provided")
    if not ref:
        raise errdefs.InvalidArgument("ref must be provided")
    container = g.client().load_container(id)
    try:
        task = container.task()
    except errdefs.NotFound:
        task = None
    # As ctr: the task is paused while its files and memory are saved.
    if task is not None:
        task.pause()
    try:
        container.checkpoint(ref, image=with_image, rw=rw, task=with_task)
    finally:
        if task is not None:
            try:
                task.resume()
            except errdefs.ContainerdError as exc:
                log.error("resuming task %s: %s", errdefs.q(id), errdefs.wire_message(exc))


@command.command("restore")
@click.option("--rw", is_flag=True, help="Restore the rw layer from the checkpoint.")
@click.option(
    "--live", is_flag=True, help="Restore the runtime and memory data from the checkpoint."
)
@click.argument("id", required=False, default="")
@click.argument("ref", required=False, default="")
@pass_globals
def restore(g: Globals, rw: bool, live: bool, id: str, ref: str) -> int:
    """Restore a container from the checkpoint REF and start its task."""
    from pycontainerd.cio.console import Console
    from pycontainerd.cli import _tasks
    from pycontainerd.client._sync import checkpoint as checkpoints
    from pycontainerd.wire.images import descriptor_to_pb

    if not id:
        raise errdefs.InvalidArgument("container id must be provided")
    if not ref:
        raise errdefs.InvalidArgument("ref must be provided")
    client = g.client()
    checkpoint_image = client.get_image(ref)
    container = checkpoints.restore(client, id, checkpoint_image, rw=rw)
    task_checkpoint = None
    if live:
        task_checkpoint = descriptor_to_pb(checkpoints.task_checkpoint(client, checkpoint_image))
    tty = bool((container.spec().get("process") or {}).get("terminal"))
    console = Console.current() if tty else None
    task = container.new_task(_tasks.io_creator(console=console), checkpoint=task_checkpoint)
    if console is None:
        # As ctr: a task without a terminal is left running.
        task.start()
        return 0
    console.set_raw()
    try:
        task.start()
        with _tasks.resize_with_console(task, console):
            status = _tasks.wait_interruptibly(task.wait)
    finally:
        console.reset()
    return status.code
