"""``pyctr snapshots``: prepare, view, commit, list and inspect snapshots.

Output mirrors ``ctr snapshots`` (containerd 1.6): the same tables, the
``mount -t …`` lines, ``info`` as Go's indented JSON, and the
``containerd.io/gc.root`` label ctr puts on what ``prepare`` and ``commit``
create so that garbage collection keeps it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from typing import Any

import click

from pycontainerd import errdefs
from pycontainerd.cli import gofmt
from pycontainerd.cli.app import Globals, Group, echo_table, label_args, pass_globals
from pycontainerd.cli.commands.images import human_bytes
from pycontainerd.client import Client
from pycontainerd.client._sync.snapshots import SnapshotService
from pycontainerd.mount import Mount
from pycontainerd.snapshots import Info, Kind

__all__ = ["command", "info_json", "tree_lines"]

GC_ROOT = "containerd.io/gc.root"


class _Ctx:
    """The group's ``--snapshotter`` beside the globals."""

    def __init__(self, g: Globals, snapshotter: str) -> None:
        self.g = g
        self.snapshotter = snapshotter

    def service(self) -> SnapshotService:
        client: Client = self.g.client()
        return client.snapshot_service(self.snapshotter)


pass_ctx = click.make_pass_decorator(_Ctx)


@click.group("snapshots", cls=Group, aliases=["snapshot"])
@click.option(
    "--snapshotter",
    envvar="CONTAINERD_SNAPSHOTTER",
    default="overlayfs",
    show_default=True,
    help="Snapshotter name.",
)
@pass_globals
@click.pass_context
def command(ctx: click.Context, g: Globals, snapshotter: str) -> None:
    """Manage snapshots."""
    ctx.obj = _Ctx(g, snapshotter)


def _gc_root() -> dict[str, str]:
    return {GC_ROOT: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _print_mounts(target: str, mounts: Sequence[Mount]) -> None:
    for m in mounts:
        where = os.path.normpath(os.path.join(target, m.target)) if m.target else target
        click.echo(f"mount -t {m.type} {m.source} {where} -o {','.join(m.options)}")


def _mounts_json(mounts: Sequence[Mount]) -> str:
    items = [
        {
            "Type": m.type,
            "Source": m.source,
            **({"Target": m.target} if m.target else {}),
            "Options": list(m.options) or None,
        }
        for m in mounts
    ]
    return json.dumps(items, indent=4, ensure_ascii=False)


@command.command("prepare")
@click.option("--target", "-t", default="", help="Mount target path; prints the mounts.")
@click.option("--mounts", "as_json", is_flag=True, help="Print the mounts as JSON.")
@click.argument("key")
@click.argument("parent", required=False, default="")
@pass_ctx
def prepare(c: _Ctx, target: str, as_json: bool, key: str, parent: str) -> None:
    """Prepare a snapshot from a committed snapshot."""
    mounts = c.service().prepare(key, parent, _gc_root())
    if target:
        _print_mounts(target, mounts)
    if as_json:
        click.echo(_mounts_json(mounts))


@command.command("view")
@click.option("--target", "-t", default="", help="Mount target path; prints the mounts.")
@click.option("--mounts", "as_json", is_flag=True, help="Print the mounts as JSON.")
@click.argument("key")
@click.argument("parent", required=False, default="")
@pass_ctx
def view(c: _Ctx, target: str, as_json: bool, key: str, parent: str) -> None:
    """Create a read-only snapshot from a committed snapshot."""
    mounts = c.service().view(key, parent)
    if target:
        _print_mounts(target, mounts)
    if as_json:
        click.echo(_mounts_json(mounts))


@command.command("mounts", aliases=["m", "mount"])
@click.argument("target")
@click.argument("key")
@pass_ctx
def mounts(c: _Ctx, target: str, key: str) -> None:
    """Print the mount commands for a snapshot."""
    _print_mounts(target, c.service().mounts(key))


@command.command("commit")
@click.argument("name")
@click.argument("key")
@pass_ctx
def commit(c: _Ctx, name: str, key: str) -> None:
    """Commit an active snapshot into the provided name."""
    c.service().commit(name, key, _gc_root())


@command.command("rm", aliases=["delete", "del", "remove"])
@click.argument("keys", nargs=-1)
@pass_ctx
def remove(c: _Ctx, keys: tuple[str, ...]) -> None:
    """Remove snapshots; stops at the first that fails."""
    sn = c.service()
    for key in keys:
        try:
            sn.remove(key)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"failed to remove {errdefs.q(key)}: {exc.message}") from None


def info_json(info: Info) -> dict[str, Any]:
    """A snapshot as ``ctr snapshots info`` prints it (Go's field names and order)."""
    out: dict[str, Any] = {"Kind": str(info.kind), "Name": info.name}
    if info.parent:
        out["Parent"] = info.parent
    if info.labels:
        out["Labels"] = dict(info.labels)
    out["Created"] = gofmt.rfc3339nano(info.created_at)
    out["Updated"] = gofmt.rfc3339nano(info.updated_at)
    return out


@command.command("info")
@click.argument("key")
@pass_ctx
def info(c: _Ctx, key: str) -> None:
    """Print a snapshot's record as JSON."""
    click.echo(json.dumps(info_json(c.service().stat(key)), indent=4, ensure_ascii=False))


@command.command("label")
@click.argument("key")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_ctx
def label(c: _Ctx, key: str, labels: tuple[str, ...]) -> None:
    """Set or clear (``k=``) labels of a snapshot; prints the labels it then has."""
    sn = c.service()
    wanted = label_args(labels)
    if not wanted:
        result = sn.stat(key)
    else:
        new = {k: v for k, v in wanted.items() if v}
        result = sn.update(Info(key, Kind.UNKNOWN, labels=new), [f"labels.{k}" for k in wanted])
    click.echo(",".join(f"{k}={v}" for k, v in result.labels.items()))


@command.command("ls", aliases=["list"])
@click.argument("filters", nargs=-1)
@pass_ctx
def list_snapshots(c: _Ctx, filters: tuple[str, ...]) -> None:
    """List snapshots."""
    rows: list[list[object]] = [["KEY", "PARENT", "KIND"]]
    rows += [[i.name, i.parent, str(i.kind)] for i in c.service().walk(*filters)]
    echo_table(rows, minwidth=1, tabwidth=8, padding=1)


@command.command("usage")
@click.option("-b", "in_bytes", is_flag=True, help="Display size in bytes.")
@click.argument("keys", nargs=-1)
@pass_ctx
def usage(c: _Ctx, in_bytes: bool, keys: tuple[str, ...]) -> None:
    """Print the disk usage of snapshots (all of them when none are named)."""
    sn = c.service()
    names = list(keys) or [i.name for i in sn.walk()]
    rows: list[list[object]] = [["KEY", "SIZE", "INODES"]]
    for name in names:
        u = sn.usage(name)
        rows.append([name, str(u.size) if in_bytes else human_bytes(u.size), u.inodes])
    echo_table(rows, minwidth=1, tabwidth=8, padding=1)


def tree_lines(infos: Sequence[Info]) -> list[str]:
    """ctr's tree: roots in listing order, children indented under ``\\_``."""
    order: list[str] = []
    parents: dict[str, str] = {}
    children: dict[str, list[str]] = {}

    def add(name: str, parent: str) -> None:
        if name not in parents:
            order.append(name)
        parents[name] = parent
        if parent:
            if parent not in parents:
                add(parent, "")
            children.setdefault(parent, []).append(name)

    for i in infos:
        add(i.name, i.parent)
    lines: list[str] = []

    def emit(name: str, level: int) -> None:
        prefix = "  " * level + ("\\_" if level else "")
        lines.append(f"{prefix} {name}")
        for child in children.get(name, ()):
            emit(child, level + 1)

    for name in order:
        if not parents[name]:
            emit(name, 0)
    return lines


@command.command("tree")
@pass_ctx
def tree(c: _Ctx) -> None:
    """Display a tree view of snapshot branches."""
    for line in tree_lines(list(c.service().walk())):
        click.echo(line)
