"""Tasks on our daemon, for tests: a busybox image with the applets tests
run, a daemon whose runtime runs a given shim, and a cleanup that leaves no
shim, container process, mount or runc state behind, even when a test fails.

By default ``io.containerd.runc.v2`` maps to our shim; :func:`shim_config`
maps it to Debian's Go shim (``/usr/bin/containerd-shim-runc-v2``) instead,
so a test parametrized over :data:`SHIMS` proves the daemon against both.
Both shims keep their runc state under ``/run/containerd/runc/<namespace>``:
every test uses a namespace of its own and :func:`reap` removes that
directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from pycontainerd.shim import main as shim_entry
from tests.support import daemons

GO_SHIM = "/usr/bin/containerd-shim-runc-v2"
RUNC_STATE = Path("/run/containerd/runc")
IMAGE = "docker.io/library/tasks:test"
APPLETS = ("sh", "echo", "sleep", "pwd", "cat", "env", "tty", "true")


#: The shims a test runs its tasks through: ours (the default) and Go's.
SHIMS = ("pyrunc", "go")


def shim_config(shim: str) -> str:
    """A daemon config whose ``io.containerd.runc.v2`` runs ``shim``; skips
    the test when that shim is not installed."""
    if shim == "go":
        if not os.path.exists(GO_SHIM):
            pytest.skip("containerd-shim-runc-v2 is not installed")
        return go_shim_config()
    return ""


def go_shim_config(runtime: str = "io.containerd.runc.v2") -> str:
    return (
        "version = 2\n"
        f'[plugins."io.containerd.runtime.v2.task".runtimes."{runtime}"]\n'
        f'  shim = "{GO_SHIM}"\n'
    )


def busybox_layer() -> bytes:
    """A root filesystem: /bin/busybox and its applets as symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755 if name != "tmp" else 0o1777
            tar.addfile(info)
        data = Path("/bin/busybox").read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


def namespace() -> str:
    return f"tasks-{uuid.uuid4().hex[:8]}"


def shim_pids(address: str, namespace: str | None = None) -> list[int]:
    """The pids of the shims serving the daemon at ``address`` (only those of
    ``namespace``, when given)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # Go's shim runs as itself; our shim's server as "python SCRIPT".
        shim = any(os.path.basename(arg).startswith(b"containerd-shim-") for arg in argv[:2])
        ours = shim and b"-address" in argv and os.fsencode(address) in argv
        if ours and (namespace is None or os.fsencode(namespace) in argv):
            pids.append(int(entry.name))
    return pids


def reap(
    address: str, namespaces: list[str], base: Path | None = None, sockets: Iterable[str] = ()
) -> None:
    """Kill what a test left running: shims of our daemon, their containers
    (``runc delete -f``), their sockets (and ``sockets``, shim addresses a
    test recorded), the namespaces' runc state directories, and the mounts
    left under ``base`` (the rootfs of a bundle nobody deleted)."""
    for pid in shim_pids(address):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # A killed shim leaves its socket in /run/containerd/s: ours is named by
    # (daemon, namespace), Go's is in the address file of its bundles (a
    # test that kills one records it first: the bundle goes with the task).
    addresses = {*sockets, *(shim_entry.socket_path(address, ns, "") for ns in namespaces)}
    if base is not None:
        for ns in namespaces:
            for bundle in (base / "state" / "io.containerd.runtime.v2.task" / ns).glob("*"):
                with contextlib.suppress(OSError):
                    addresses.add((bundle / "address").read_text())
    for shim_address in addresses:
        path = shim_address.strip().removeprefix("unix://")
        if path.startswith(shim_entry.SOCKET_DIR + "/"):
            shim_entry.remove_group(path)
    for ns in namespaces:
        root = RUNC_STATE / ns
        if not root.is_dir():
            continue
        for state in root.iterdir():
            subprocess.run(
                ["runc", "--root", str(root), "delete", "-f", state.name],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)
    for ns in namespaces:
        remove_cgroups(ns)
    if base is not None:
        prefix = str(base) + "/"
        points = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)
        ]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def remove_cgroups(name: str) -> None:
    """Remove the empty cgroups ``/<name>/...`` of every hierarchy: runc
    removes a container's own cgroup but leaves its namespace's parent, and
    thousands of them left by test runs slow every later cgroup operation."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda e: -len(e[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


@dataclass
class Daemon:
    """Our daemon on ``base``, which a test may kill and start again."""

    base: Path
    config: str
    process: subprocess.Popen[bytes] | None = None
    #: Shim sockets to remove at the end (of shims a test kills).
    sockets: set[str] = field(default_factory=set)

    @property
    def address(self) -> str:
        return str(self.base / "pcd.sock")

    @property
    def state(self) -> Path:
        return self.base / "state" / "io.containerd.runtime.v2.task"

    def start(self) -> None:
        args = daemons.pycontainerd_args(self.base, self.address, config=self.config)
        log = open(self.base / "daemon.log", "ab")  # noqa: SIM115 -- the child holds it
        try:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        daemons.wait_serving(self.address, self.process, self.base / "daemon.log")

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is closed or cleaned up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            daemons.stop(self.process)

    def logs(self) -> str:
        return (self.base / "daemon.log").read_text(errors="replace")

    def wait(self, ns: str, container_id: str, timeout: float = 20) -> tasks_pb2.WaitResponse:
        """The Tasks/Wait call (ctr 1.6 has no ``task wait`` command)."""
        with grpc.insecure_channel(f"unix://{self.address}") as channel:
            response: tasks_pb2.WaitResponse = tasks_pb2_grpc.TasksStub(channel).Wait(
                tasks_pb2.WaitRequest(container_id=container_id),
                metadata=[("containerd-namespace", ns)],
                timeout=timeout,
            )
            return response


@contextlib.contextmanager
def daemon(config: str, namespaces: list[str]) -> Iterator[Daemon]:
    """A daemon (started) on a temp base; on exit every task of
    ``namespaces`` is reaped, the daemon stopped and the base removed."""
    with daemons.temp_base("pcdt-") as base:
        d = Daemon(base, config)
        try:
            d.start()
            yield d
        finally:
            d.stop()
            reap(d.address, namespaces, base, d.sockets)


def wait_for(predicate: object, timeout: float = 10, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s")
        time.sleep(interval)
