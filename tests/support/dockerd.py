"""Docker Engine (Debian's ``dockerd`` 20.10) on a containerd socket, on private paths.

:func:`dockerd` starts ``/usr/sbin/dockerd --containerd=SOCKET`` with its data
root, exec root, pid file, API socket and config file under a temp directory
of its own (its trust key and its containers' parent cgroup too), no bridge
and no iptables rules, so it touches nothing of the host's Docker and
several can run at once; only the empty ``/run/docker/plugins``, which
dockerd 20.10 always creates, is outside.  On exit, whatever the caller
did: its containers are removed, dockerd is stopped (SIGTERM, then
SIGKILL), the shims it left on the containerd socket (namespace ``moby``)
are ended (ours lingers idle for a while after its last container), the
containers' runc state and the parent cgroup are removed, and every mount
under the temp directory (overlay2 layers, network namespaces, the data
root live restore bind-mounts) is unmounted before the directory goes.

The client is ``/usr/bin/docker`` (Debian's 20.10 CLI), never whatever
``docker`` is first on ``PATH``.

This module must not import pytest: ``bench/docker.py`` starts dockerd on
both daemons with the same helper.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import daemons, tasks

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"
#: The containerd namespace dockerd runs its containers in (its default).
NAMESPACE = "moby"
#: A daemon.json of our own: dockerd would otherwise read /etc/docker/daemon.json.
_CONFIG = {"features": {"buildkit": False}}


@dataclass
class RunningDockerd:
    base: Path
    containerd_address: str
    process: subprocess.Popen[bytes]
    log: Path
    args: list[str]

    @property
    def socket(self) -> Path:
        return self.base / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def exec_root(self) -> Path:
        return self.base / "exec"

    @property
    def runc_root(self) -> Path:
        """Where dockerd has its runtime keep runc's state (option ``Root``)."""
        return self.exec_root / "runtime-runc" / NAMESPACE

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def restart(self, *, down_for: float = 0, timeout: float = 60) -> None:
        """Stop dockerd (SIGTERM: without ``--live-restore`` it stops its
        containers first) and, ``down_for`` seconds later, start it again on
        the same paths."""
        daemons.stop(self.process, timeout=30)
        time.sleep(down_for)
        self.process = _spawn(self.args, self.log)
        _wait_ready(self, timeout)

    def api(self, path: str) -> object:
        """GET ``path`` of the Engine API (``/containers/NAME/stats?stream=false``),
        decoded from JSON."""
        connection = _UnixHTTPConnection(str(self.socket))
        try:
            connection.request("GET", path, headers={"Host": "docker"})
            response = connection.getresponse()
            body = response.read(1 << 20)
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:500]!r}")
            return json.loads(body)
        finally:
            connection.close()

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``/usr/bin/docker -H THIS ARGS``; with ``check`` a non-zero
        exit raises, with the command's output and the tail of dockerd's log."""
        result = subprocess.run(
            [DOCKER, "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env={**os.environ, "DOCKER_CONFIG": str(self.base / "client")},
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}\n"
                f"dockerd log (tail):\n{self.logs()[-4000:]}"
            )
        return result

    def inspect(self, container: str) -> dict[str, object]:
        """``docker inspect`` of one container, decoded."""
        data = json.loads(self.docker("inspect", container).stdout)
        assert isinstance(data, list) and len(data) == 1
        item = data[0]
        assert isinstance(item, dict)
        return item

    def state(self, container: str) -> dict[str, object]:
        state = self.inspect(container)["State"]
        assert isinstance(state, dict)
        return state


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("docker", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self._path)


def available() -> str | None:
    """Why dockerd cannot run here (``None`` when it can)."""
    for binary in (DOCKERD, DOCKER):
        if not os.access(binary, os.X_OK):
            return f"{binary} is not installed (make deps installs docker.io)"
    return None


def dockerd_args(
    base: Path,
    containerd_address: str,
    *,
    storage_driver: str,
    live_restore: bool = False,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    """dockerd's command line with every path it writes under ``base``."""
    config = base / "daemon.json"
    # Its trust key too: dockerd 20.10 writes /etc/docker/key.json otherwise.
    settings = {
        **_CONFIG,
        "live-restore": live_restore,
        "deprecated-key-path": str(base / "key.json"),
    }
    config.write_text(json.dumps(settings))
    return [
        DOCKERD,
        "--config-file",
        str(config),
        "--data-root",
        str(base / "data"),
        "--exec-root",
        str(base / "exec"),
        "--pidfile",
        str(base / "dockerd.pid"),
        "-H",
        f"unix://{base / 'docker.sock'}",
        "--containerd",
        containerd_address,
        "--bridge",
        "none",
        "--iptables=false",
        "--ip-masq=false",
        "--ip-forward=false",
        "--storage-driver",
        storage_driver,
        # Containers' cgroups under one of its own (not "docker"), removed after.
        "--cgroup-parent",
        f"/{base.name}",
        "--log-level",
        "debug",
        *extra_args,
    ]


def _wait_ready(running: RunningDockerd, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise DockerdFailed(
                f"dockerd exited with {running.process.returncode}:\n{running.logs()[-4000:]}"
            )
        if running.socket.exists():
            probe = running.docker("version", "--format", "{{.Server.Version}}", check=False)
            if probe.returncode == 0:
                return
        time.sleep(0.1)
    raise DockerdFailed(f"dockerd did not answer in {timeout}s:\n{running.logs()[-4000:]}")


class DockerdFailed(RuntimeError):
    """dockerd itself did not start (its log says why)."""


def overlay_supported(directory: Path) -> bool:
    """Whether an overlay mount works on ``directory``'s filesystem (overlay2 needs it)."""
    probe = directory / "overlay-probe"
    dirs = [probe / name for name in ("lower", "upper", "work", "merged")]
    for d in dirs:
        d.mkdir(parents=True)
    lower, upper, work, merged = dirs
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        capture_output=True,
        check=False,
    )
    if result.returncode == 0:
        subprocess.run(["umount", str(merged)], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", str(probe)], check=False)
    return result.returncode == 0


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"


def _stop_shims(containerd_address: str, timeout: float = 5) -> None:
    """End the shims left on ``containerd_address`` in dockerd's namespace.

    Ours lingers idle after its last container (for the next one): SIGTERM
    ends it at once and it removes its socket, log and lock in
    /run/containerd/s as it goes; whatever does not go in ``timeout`` is
    killed, and our shim's files are removed for it.
    """
    from pycontainerd.shim._group import lock_group, remove_group
    from pycontainerd.shim._layout import SOCKET_DIR
    from pycontainerd.shim.address import socket_path

    pids = tasks.shim_pids(containerd_address, NAMESPACE)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = False
    for pid in pids:
        if _alive(pid):
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    path = socket_path(containerd_address, NAMESPACE, "")
    if killed and path.startswith(SOCKET_DIR + "/"):
        lock = lock_group(path)
        try:
            remove_group(path)
        finally:
            os.close(lock)


def _cleanup(running: RunningDockerd) -> None:
    if running.process.poll() is None:
        with contextlib.suppress(Exception):
            ids = running.docker("ps", "-aq", check=False, timeout=20).stdout.split()
            if ids:
                running.docker("rm", "-f", *ids, check=False, timeout=60)
    daemons.stop(running.process, timeout=20)
    # What dockerd could not clean up (it was killed, or its containerd was):
    # the shims, the containers runc still knows of, the mounts.
    _stop_shims(running.containerd_address)
    root = running.runc_root
    if root.is_dir():
        for state in root.iterdir():
            subprocess.run(
                ["runc", "--root", str(root), "delete", "-f", state.name],
                capture_output=True,
                check=False,
            )
    for cgroup in sorted(Path("/sys/fs/cgroup").glob(f"*/{running.base.name}/**/"), reverse=True):
        with contextlib.suppress(OSError):
            cgroup.rmdir()
    # With live restore dockerd leaves its data root bind-mounted on itself
    # (and a killed one leaves layers and network namespaces mounted).
    prefix = str(running.base) + "/"
    points = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(prefix)
    ]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


@contextlib.contextmanager
def dockerd(
    containerd_address: str,
    *,
    live_restore: bool = False,
    extra_args: tuple[str, ...] = (),
    timeout: float = 60,
) -> Iterator[RunningDockerd]:
    """Run dockerd on ``containerd_address``; yields once its API answers.

    Storage is overlay2 where an overlay mount works on /tmp, vfs otherwise.
    ``live_restore`` keeps containers running while dockerd is down (and
    restores them when it starts again); ``extra_args`` go on its command
    line (``--experimental``).  Raises :class:`DockerdFailed` when
    dockerd itself does not start.
    """
    reason = available()
    if reason is not None:
        raise DockerdFailed(reason)
    with daemons.temp_base("dkr-") as base:
        driver = "overlay2" if overlay_supported(base) else "vfs"
        args = dockerd_args(
            base,
            containerd_address,
            storage_driver=driver,
            live_restore=live_restore,
            extra_args=extra_args,
        )
        log = base / "dockerd.log"
        running = RunningDockerd(base, containerd_address, _spawn(args, log), log, args)
        try:
            _wait_ready(running, timeout)
            yield running
        finally:
            _cleanup(running)


__all__ = [
    "DOCKER",
    "DOCKERD",
    "NAMESPACE",
    "DockerdFailed",
    "RunningDockerd",
    "available",
    "dockerd",
    "overlay_supported",
]
