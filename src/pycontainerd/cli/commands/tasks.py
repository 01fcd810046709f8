"""``pyctr tasks``: start, attach, exec, signal, pause, inspect and delete tasks.

Output follows ``ctr tasks``: ``ls`` prints ``TASK PID STATUS``, ``ps``
``PID INFO``, ``metrics`` ctr's table of cgroup v1 statistics (or the
decoded statistics as JSON); commands that wait for a process exit with
its exit code.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import click
from google.protobuf import any_pb2

from pycontainerd import cio, errdefs
from pycontainerd.api.runtime.v2.runc.options import oci_pb2 as runc_options
from pycontainerd.cio import new_attach
from pycontainerd.cio.console import Console
from pycontainerd.cli import _tasks, gofmt
from pycontainerd.cli.app import Globals, Group, echo_tabbed, pass_globals
from pycontainerd.client import Client
from pycontainerd.client._sync.task import ExitStatus, Task
from pycontainerd.images.unpack import LABEL_STOP_SIGNAL

__all__ = ["command", "parse_signal"]

log = logging.getLogger("pycontainerd.cli")

_ARGS_AFTER_FIRST = {"ignore_unknown_options": True, "allow_interspersed_args": False}


@click.group("tasks", cls=Group, aliases=["t", "task"])
def command() -> None:
    """Manage tasks."""


def _required_id(id: str) -> str:
    if not id:
        raise errdefs.InvalidArgument("container id must be provided")
    return id


def _load_task(client: Client, id: str, *, attach_fifos: bool = False) -> Task:
    container = client.load_container(_required_id(id))
    # With an attach that copies nothing, deleting the task removes its FIFOs
    # (ctr's cio.Load).
    return container.task(new_attach() if attach_fifos else None)


def parse_signal(text: str) -> int:
    """A signal as ctr takes one: ``SIGKILL``, ``KILL`` or ``9``."""
    if text.isdigit():
        return int(text)
    name = text.upper()
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise errdefs.InvalidArgument(f"unknown signal {text}") from None


def _wait_and_report(task_or_process: Any, console: Console | None) -> ExitStatus:
    if console is not None:
        with _tasks.resize_with_console(task_or_process, console):
            return _tasks.wait_interruptibly(task_or_process.wait)
    with _tasks.forward_signals(task_or_process):
        return _tasks.wait_interruptibly(task_or_process.wait)


@command.command("start")
@click.option("--null-io", is_flag=True, help="Send all IO to /dev/null.")
@click.option("--log-uri", default="", help="Log URI (file:///path, binary:///path?k=v).")
@click.option("--fifo-dir", default="", help="Directory for the IO FIFOs.")
@click.option("--pid-file", default="", help="File to write the task's pid to.")
@click.option("--detach", "-d", is_flag=True, help="Detach from the task after it has started.")
@click.option("--no-pivot", is_flag=True, help="Do not use pivot_root (runc).")
@click.argument("id", required=False, default="")
@pass_globals
def start(g: Globals, /, id: str, **opts: Any) -> int:
    """Start a container that has been created."""
    client = g.client()
    container = client.load_container(_required_id(id))
    spec = container.spec()
    tty = bool((spec.get("process") or {}).get("terminal"))
    console: Console | None = None
    task: Task | None = None
    try:
        if tty:
            console = Console.current()
            console.set_raw()
        closer = cio.StdinCloser()
        creator = _tasks.io_creator(
            console=console,
            null_io=opts["null_io"],
            log_uri=opts["log_uri"],
            fifo_dir=opts["fifo_dir"],
            stdin_closer=closer,
        )
        options = runc_options.Options(no_pivot_root=True) if opts["no_pivot"] else None
        task = container.new_task(creator, options=options)
        closer.bind(task)
        if opts["pid_file"]:
            Path(opts["pid_file"]).write_text(str(task.pid))
        task.start()
        if opts["detach"]:
            task = None  # leave it running
            return 0
        status = _wait_and_report(task, console)
        task.delete()
        task = None
        return status.code
    finally:
        if task is not None:
            try:
                task.delete()
            except errdefs.NotFound:
                pass
            except errdefs.ContainerdError as exc:
                log.error("failed to cleanup task: %s", errdefs.wire_message(exc))
        if console is not None:
            console.reset()


@command.command("attach")
@click.argument("id", required=False, default="")
@pass_globals
def attach(g: Globals, id: str) -> int:
    """Attach to the IO of a running container."""
    client = g.client()
    container = client.load_container(_required_id(id))
    tty = bool((container.spec().get("process") or {}).get("terminal"))
    console = Console.current() if tty else None
    if console is not None:
        console.set_raw()
    try:
        import sys

        task = container.task(
            new_attach(
                stdin=sys.stdin.buffer,
                stdout=sys.stdout.buffer,
                stderr=None if tty else sys.stderr.buffer,
            )
        )
        status = _wait_and_report(task, console)
        if task.io is not None:
            task.io.wait(1.0)
        return status.code
    finally:
        if console is not None:
            console.reset()


@command.command("exec", context_settings=_ARGS_AFTER_FIRST)
@click.option("--cwd", default="", help="Working directory of the new process.")
@click.option("--tty", "-t", is_flag=True, help="Allocate a TTY for the process.")
@click.option("--detach", "-d", is_flag=True, help="Detach once the process has started.")
@click.option("--exec-id", default="", help="Exec specific id for the process (required).")
@click.option("--fifo-dir", default="", help="Directory for the IO FIFOs.")
@click.option("--log-uri", default="", help="Log URI for the shim to write output to.")
@click.argument("args", nargs=-1, metavar="CONTAINER CMD [ARG...]")
@pass_globals
def exec_process(g: Globals, /, args: tuple[str, ...], **opts: Any) -> int:
    """Execute additional processes in an existing container."""
    id = _required_id(args[0] if args else "")
    if not opts["exec_id"]:
        raise errdefs.InvalidArgument('Required flag "exec-id" not set')
    tty = opts["tty"]
    client = g.client()
    container = client.load_container(id)
    spec = container.spec()
    process_spec = dict(spec.get("process") or {})
    process_spec["terminal"] = tty
    process_spec["args"] = list(args[1:])
    if opts["cwd"]:
        process_spec["cwd"] = opts["cwd"]
    task = container.task()
    closer = cio.StdinCloser()
    if opts["log_uri"]:
        if opts["fifo_dir"]:
            raise errdefs.InvalidArgument("can't use log-uri with fifo-dir")
        if tty:
            raise errdefs.InvalidArgument("can't use log-uri with tty")
    console = Console.current() if tty else None
    creator = _tasks.io_creator(
        console=console, log_uri=opts["log_uri"], fifo_dir=opts["fifo_dir"], stdin_closer=closer
    )
    process = task.exec(opts["exec_id"], process_spec, creator)
    closer.bind(process)
    try:
        if console is not None:
            console.set_raw()
        process.start()
        if opts["detach"]:
            return 0
        status = _wait_and_report(process, console)
        return status.code
    finally:
        if console is not None:
            console.reset()
        if not opts["detach"]:
            try:
                process.delete()
            except errdefs.ContainerdError as exc:
                log.debug("deleting exec %s: %s", opts["exec_id"], exc)


@command.command("kill", context_settings={"ignore_unknown_options": True})
@click.option("--signal", "-s", "signal_name", default="", help="Signal to send.")
@click.option("--exec-id", default="", help="Process ID to kill.")
@click.option("--all", "-a", "all_processes", is_flag=True,
              help="Send the signal to all processes inside the container.")
@click.argument("id", required=False, default="")
@pass_globals
def kill(g: Globals, id: str, signal_name: str, exec_id: str, all_processes: bool) -> None:
    """Signal a container (default: SIGTERM, or the image's stop signal)."""
    _required_id(id)
    if all_processes and exec_id:
        raise errdefs.InvalidArgument("specify an exec-id or all; not both")
    client = g.client()
    container = client.load_container(id)
    if signal_name:
        sig = parse_signal(signal_name)
    else:
        sig = parse_signal(container.info().labels.get(LABEL_STOP_SIGNAL) or "SIGTERM")
    task = container.task()
    if exec_id:
        task.load_process(exec_id).kill(sig, all=all_processes)
    else:
        task.kill(sig, all=all_processes)


@command.command("pause")
@click.argument("id", required=False, default="")
@pass_globals
def pause(g: Globals, id: str) -> None:
    """Pause an existing container."""
    _load_task(g.client(), id).pause()


@command.command("resume")
@click.argument("id", required=False, default="")
@pass_globals
def resume(g: Globals, id: str) -> None:
    """Resume a paused container."""
    _load_task(g.client(), id).resume()


def _info_text(info: any_pb2.Any | None) -> str:
    """A process's info as ctr prints it with ``%+v`` (runc's ProcessDetails)."""
    if info is None:
        return "-"
    if info.type_url == "containerd.runc.v1.ProcessDetails":
        details = runc_options.ProcessDetails.FromString(info.value)
        return f"&ProcessDetails{{ExecID:{details.exec_id},XXX_unrecognized:[],}}"
    return f"{info.type_url}"


@command.command("ps")
@click.argument("id", required=False, default="")
@pass_globals
def ps(g: Globals, id: str) -> None:
    """List processes for container."""
    processes = _load_task(g.client(), id).pids()
    text = "PID\tINFO\n" + "".join(f"{p.pid}\t{_info_text(p.info)}\n" for p in processes)
    # ctr's tabwriter.NewWriter(os.Stdout, 1, 8, 4, ' ', 0)
    echo_tabbed(text, minwidth=1, tabwidth=8, padding=4)


@command.command("ls", aliases=["list"])
@click.option("-q", "--quiet", is_flag=True, help="Print only the task id.")
@pass_globals
def list_tasks(g: Globals, quiet: bool) -> None:
    """List tasks."""
    records = g.client().tasks.list()
    if quiet:
        click.echo("".join(f"{t.id}\n" for t in records), nl=False)
        return
    text = "TASK\tPID\tSTATUS\t\n" + "".join(
        f"{t.id}\t{t.pid}\t{t.status.value.upper()}\n" for t in records
    )
    # ctr's tabwriter.NewWriter(os.Stdout, 4, 8, 4, ' ', 0)
    echo_tabbed(text, minwidth=4, tabwidth=8, padding=4)


@command.command("rm", aliases=["delete", "del", "remove"])
@click.option("--force", "-f", is_flag=True, help="Force delete task process.")
@click.option("--exec-id", default="", help="Process ID to delete.")
@click.argument("ids", nargs=-1)
@pass_globals
def remove(g: Globals, force: bool, exec_id: str, ids: tuple[str, ...]) -> int:
    """Delete one or more tasks."""
    client = g.client()
    if exec_id:
        task = _load_task(client, ids[0] if ids else "")
        status = task.load_process(exec_id, new_attach()).delete(force=force)
        return status.code
    first: errdefs.ContainerdError | None = None
    for id in ids:
        try:
            task = _load_task(client, id, attach_fifos=True)
        except errdefs.ContainerdError as exc:
            first = first or exc
            log.error("failed to load task from %s: %s", id, errdefs.wire_message(exc))
            continue
        try:
            status = task.delete(force=force)
        except errdefs.ContainerdError as exc:
            first = first or exc
            log.error("unable to delete %s: %s", id, errdefs.wire_message(exc))
            continue
        if status.code != 0:
            log.warning("task %s exit with non-zero exit code %d", id, status.code)
    if first is not None:
        raise first
    return 0


@command.command("metrics", aliases=["metric"])
@click.option("--format", "output_format", type=click.Choice(["table", "json"]),
              default="table", show_default=True, help='"table" or "json".')
@click.argument("id", required=False, default="")
@pass_globals
def metrics(g: Globals, id: str, output_format: str) -> None:
    """Get a single data point of metrics for a task with the built-in Linux runtime."""
    from pycontainerd.cli import _cgroups

    metric = _load_task(g.client(), id).metrics()
    if metric.data.type_url != _cgroups.TYPE_URL:
        raise errdefs.NotImplemented(
            f"cannot convert metric data of type {metric.data.type_url} (cgroup v1 only)"
        )
    decoded = _cgroups.decode(metric.data.value)
    if output_format == "json":
        click.echo(json.dumps(decoded, indent=2))
        return
    when = gofmt.time_string(metric.timestamp, metric.timestamp_nanos)
    text = f"ID\tTIMESTAMP\t\n{metric.id}\t{when}\t\n\n"
    text += "METRIC\tVALUE\t\n" + "".join(
        f"{name}\t{value}\t\n" for name, value in _cgroups.table_rows(decoded)
    )
    # ctr's tabwriter.NewWriter(os.Stdout, 1, 8, 4, ' ', 0)
    echo_tabbed(text, minwidth=1, tabwidth=8, padding=4)


@command.command("update")
@click.option("--resources", "resources_path", default="",
              help="File holding the new resources as an OCI LinuxResources JSON.")
@click.option("--memory-limit", type=int, default=0, help="New memory limit in bytes.")
@click.option("--cpu-shares", type=int, default=0, help="New CPU shares.")
@click.option("--cpu-quota", type=int, default=0, help="New CFS CPU quota (microseconds).")
@click.option("--cpu-period", type=int, default=0, help="New CFS CPU period (microseconds).")
@click.option("--annotation", multiple=True, help="Annotation to set (k=v); repeatable.")
@click.argument("id", required=False, default="")
@pass_globals
def update(g: Globals, /, id: str, resources_path: str, **opts: Any) -> None:
    """Update the resources of a running task."""
    from pycontainerd.cli.app import label_args

    resources: dict[str, Any] = (
        json.loads(Path(resources_path).read_text()) if resources_path else {}
    )
    if opts["memory_limit"]:
        resources.setdefault("memory", {})["limit"] = opts["memory_limit"]
    for flag, key in (("cpu_shares", "shares"), ("cpu_quota", "quota"), ("cpu_period", "period")):
        if opts[flag]:
            resources.setdefault("cpu", {})[key] = opts[flag]
    _load_task(g.client(), id).update(
        resources=resources, annotations=label_args(opts["annotation"])
    )


@command.command("checkpoint")
@click.option("--exit", "exit_after", is_flag=True, help="Stop the container after the checkpoint.")
@click.option("--image-path", default="", help="Path to criu image files.")
@click.option("--work-path", default="", help="Path to criu work files and logs.")
@click.argument("id", required=False, default="")
@pass_globals
def checkpoint(g: Globals, id: str, exit_after: bool, image_path: str, work_path: str) -> None:
    """Checkpoint a container's task with CRIU: into an image, whose name is
    printed, or into --image-path."""
    from pycontainerd.client._sync import checkpoint as checkpoints

    client = g.client()
    container = client.load_container(_required_id(id))
    options = None
    # As ctr: runc's options go to the runtimes it knows as runc.
    if container.info().runtime.name in ("io.containerd.runc.v1", "io.containerd.runc.v2"):
        options = runc_options.CheckpointOptions(
            exit=exit_after, image_path=image_path, work_path=work_path
        )
    image = checkpoints.checkpoint_task(client, container, options=options)
    if image is not None:
        click.echo(image.name)
