"""Start and stop real daemons on private temp paths, always cleaning up.

Both daemons run as subprocesses with their own root, state and socket, so
tests never touch the host's /var/lib or /run and can run beside a daemon
the host already has.

This module must not import pytest: ``bench/`` (``python -m bench``) uses the
same helpers to run our daemon and Debian's containerd side by side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

VENV_BIN = Path(sys.executable).parent
GC_PLUGIN = "io.containerd.gc.v1.scheduler"
#: A config for tests whose unleased content must not be collected under them.
NO_GC_CONFIG = f'version = 2\ndisabled_plugins = ["{GC_PLUGIN}"]\n'
CONTAINERD_CONFIG = """version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[debug]
  address = "{address}.debug"
"""


@dataclass
class RunningDaemon:
    address: str
    root: Path
    state: Path
    process: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def wait_serving(
    address: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    """Block until the daemon's health check says SERVING (or it dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{log.read_text()}")
        if os.path.exists(address):
            with grpc.insecure_channel(f"unix://{address}") as ch:
                try:
                    resp = health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
        time.sleep(0.05)
    raise RuntimeError(f"daemon did not become ready in {timeout}s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def temp_base(prefix: str) -> Iterator[Path]:
    """A short temp dir (unix socket paths are limited to 107 bytes)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield base
    finally:
        # Whatever a test mounted under here must be gone before removal.
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True, check=False)
        # rm, not shutil.rmtree: a test may leave a tree deeper than Python recurses.
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def pycontainerd_args(
    base: Path, address: str, *, config: str | None = None, log_level: str = "debug"
) -> list[str]:
    """Our daemon's command line with root, state and config under ``base``
    (the config, when given, is written there; none means an absent file)."""
    args = [
        str(VENV_BIN / "pycontainerd"),
        "--root",
        str(base / "root"),
        "--state",
        str(base / "state"),
        "--address",
        address,
        "--log-level",
        log_level,
    ]
    if config is not None:
        cfg = base / "config.toml"
        cfg.write_text(config)
        return [*args, "--config", str(cfg)]
    return [*args, "--config", str(base / "absent.toml")]


def containerd_args(base: Path, address: str) -> list[str]:
    """Debian's containerd's command line with root, state and config under ``base``."""
    binary = shutil.which("containerd")
    if binary is None:
        raise RuntimeError("containerd is not installed (make deps installs it)")
    cfg = base / "config.toml"
    cfg.write_text(CONTAINERD_CONFIG.format(address=address))
    return [
        binary,
        "--config",
        str(cfg),
        "--root",
        str(base / "root"),
        "--state",
        str(base / "state"),
    ]


@contextlib.contextmanager
def pycontainerd(
    *extra_args: str,
    config: str | None = None,
    log_level: str = "debug",
    prelude: str | None = None,
) -> Iterator[RunningDaemon]:
    """Run our daemon; yields once it serves, stops it (SIGTERM, then KILL) after.

    Tests want ``debug`` logs for post-mortems; benchmarks pass ``info``, the
    level containerd runs at by default.  ``prelude``, Python source run in
    the daemon's process before it starts, lets a test inject a fault.
    """
    with temp_base("pcd-") as base:
        address = str(base / "pcd.sock")
        log = base / "daemon.log"
        args = pycontainerd_args(base, address, config=config, log_level=log_level)
        if prelude is not None:
            launcher = f"{prelude}\nfrom pycontainerd.daemon.main import main\nmain()"
            args = [sys.executable, "-c", launcher, *args[1:]]
        with open(log, "wb") as out:
            proc = subprocess.Popen([*args, *extra_args], stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_serving(address, proc, log)
            yield RunningDaemon(address, base / "root", base / "state", proc, log)
        finally:
            stop(proc)


def wait_startup_gc(daemon: RunningDaemon, timeout: float = 5) -> None:
    """Block until our daemon's first garbage collection (100ms after start) ran.

    As in containerd, it removes content no lease or image holds: a test
    that writes without a lease right after start must wait for it (or run
    with ``NO_GC_CONFIG``) or race it.  Needs the daemon's debug log.
    """
    deadline = time.monotonic() + timeout
    while b'msg="garbage collected"' not in daemon.log.read_bytes():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no garbage collection in {timeout}s:\n{daemon.logs()}")
        time.sleep(0.02)


@contextlib.contextmanager
def containerd() -> Iterator[RunningDaemon]:
    """Run Debian's containerd on private paths (for interop and benchmarks)."""
    with temp_base("ctd-") as base:
        address = str(base / "c.sock")
        log = base / "containerd.log"
        args = containerd_args(base, address)
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_serving(address, proc, log)
            yield RunningDaemon(address, base / "root", base / "state", proc, log)
        finally:
            stop(proc)
