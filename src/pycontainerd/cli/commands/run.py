"""``pyctr run``: create a container and its task, start it, wait for it.

As ``ctr run``: the container is made as ``containers create`` makes it
(same flags, plus ``--cpus``, ``--cgroup``, ``--uidmap``...), the task gets
pyctr's own stdio through FIFOs (or a terminal with ``-t``, nothing with
``--null-io``, a shim-side log with ``--log-uri``), signals pyctr receives
go to the task, and pyctr exits with the task's exit code.  ``-d`` leaves
it running; ``--rm`` removes the container (and its snapshot) after.

``--cni`` (as ctr's) puts the task on the CNI network of the first
configuration file in ``$CNI_CONF_DIR`` (default ``/etc/cni/net.d``), with
plugins from ``$CNI_PATH`` (``:``-separated, default ``/usr/lib/cni`` then
``/opt/cni/bin``): set up after the task is created and before it starts,
removed when pyctr has waited for it (not with ``-d``: as ctr, a detached
task's network stays until it is removed with :mod:`pycontainerd.cni`, or
until ``run --cni`` makes a container of that id again).
The plugins see the container as ``<namespace>-<id>``.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pycontainerd import cio, errdefs
from pycontainerd.api.runtime.v2.runc.options import oci_pb2 as runc_options
from pycontainerd.cio.console import Console
from pycontainerd.cli import _tasks
from pycontainerd.cli.app import Command, Globals, pass_globals
from pycontainerd.cli.commands.containers import new_container, run_flags

if TYPE_CHECKING:
    from pycontainerd.cni import Network

__all__ = ["command"]


@click.command(
    "run",
    cls=Command,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--rm", "remove", is_flag=True, help="Remove the container after running; not with --detach."
)
@click.option(
    "--cni",
    is_flag=True,
    help="Enable CNI networking for the container ($CNI_CONF_DIR, $CNI_PATH).",
)
@click.option("--null-io", is_flag=True, help="Send all IO to /dev/null.")
@click.option("--log-uri", default="", help="Log URI (file:///path, binary:///path?k=v).")
@click.option(
    "--detach", "-d", is_flag=True, help="Detach from the task after it has started; not with --rm."
)
@click.option("--fifo-dir", default="", help="Directory for the IO FIFOs.")
@click.option("--pid-file", default="", help="File to write the task's pid to.")
@click.option("--no-pivot", is_flag=True, help="Do not use pivot_root (runc).")
@run_flags
@click.argument("args", nargs=-1, metavar="IMAGE|ROOTFS ID [COMMAND] [ARG...]")
@pass_globals
def command(g: Globals, /, args: tuple[str, ...], **opts: Any) -> int:
    """Run a container."""
    id = (args[0] if args else "") if opts["config_path"] else (args[1] if len(args) > 1 else "")
    if not id:
        raise errdefs.InvalidArgument("container id must be provided")
    detach, remove, tty = opts["detach"], opts["remove"], opts["tty"]
    if remove and detach:
        raise errdefs.InvalidArgument("flags --detach and --rm cannot be specified together")
    network = _cni_network() if opts["cni"] else None
    with contextlib.ExitStack() as cleanup:
        container = new_container(g, args, opts)
        if remove:
            cleanup.callback(_quietly, container.delete, cleanup_snapshot=True)
        console: Console | None = None
        if tty:
            console = Console.current()
            cleanup.callback(console.reset)
            console.set_raw()
        closer = cio.StdinCloser()
        creator = _tasks.io_creator(
            console=console,
            null_io=opts["null_io"],
            log_uri=opts["log_uri"],
            fifo_dir=opts["fifo_dir"],
            stdin_closer=closer,
        )
        task_options = runc_options.Options(no_pivot_root=True) if opts["no_pivot"] else None
        task = container.new_task(creator, options=task_options)
        closer.bind(task)
        if not detach:
            cleanup.callback(_quietly, task.delete)
            if network is not None:  # before the task goes, as ctr
                remove_network = functools.partial(network.remove, namespace=g.namespace)
                cleanup.callback(_quietly, remove_network, container_id=container.id)
        if opts["pid_file"]:
            Path(opts["pid_file"]).write_text(str(task.pid))
        if network is not None:
            # The container was made just now, so whatever its id left on
            # the network (a `run -d --cni` whose container was removed
            # without its network) is stale: take it away, or setup would
            # find its namespace file and refuse.
            network.remove(container.id, namespace=g.namespace)
            network.setup(container.id, task.pid, namespace=g.namespace)
        task.start()
        if detach:
            return 0
        if console is not None:
            with _tasks.resize_with_console(task, console):
                status = _tasks.wait_interruptibly(task.wait)
        else:
            with _tasks.forward_signals(task):
                status = _tasks.wait_interruptibly(task.wait)
        task.delete()
        return status.code
    return 0  # not reached: the block returns (mypy cannot see that ExitStack re-raises)


def _cni_network() -> Network:
    """The CNI network ``--cni`` uses: ``$CNI_CONF_DIR``'s first config, ``$CNI_PATH``'s plugins."""
    import os

    from pycontainerd import cni

    conf_dir = os.environ.get("CNI_CONF_DIR") or cni.DEFAULT_CONF_DIR
    path = os.environ.get("CNI_PATH", "")
    bin_dirs = tuple(d for d in path.split(os.pathsep) if d) or cni.DEFAULT_BIN_DIRS
    return cni.Network.load(conf_dir, bin_dirs)


def _quietly(fn: Any, /, **kwargs: Any) -> None:
    """A deferred clean-up, as ctr's defers: a failure is logged, not raised."""
    import logging

    try:
        fn(**kwargs)
    except errdefs.NotFound:
        pass
    except errdefs.ContainerdError as exc:
        logging.getLogger("pycontainerd.cli").error("%s", errdefs.wire_message(exc))
