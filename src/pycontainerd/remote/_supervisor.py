"""The daemon supervisor: our daemon for a program that embeds it.

:class:`Remote` is Docker's libcontainerd ``remote``: it runs
``pycontainerd`` on a root, state and socket of its own (unless a daemon
already serves at the address), checks its health, restarts it with a
backoff when it dies, and stops it on :meth:`Remote.cleanup`.  Each
:meth:`Remote.client` follows one namespace's tasks for a :class:`Backend`.

Layout, under the ``root`` and ``state`` the program gives::

    <root>/daemon/           the daemon's --root
    <state>/daemon/          the daemon's --state
    <state>/pycontainerd.sock
    <state>/pycontainerd.toml  the config it runs with (written at each start)
    <state>/pycontainerd.log   its output, appended
    <state>/fifo/            the FIFOs of the processes the clients start
    <state>/runtimes/runc    a wrapper running ``runtime_path runtime_args...``

With ``in_process=True`` the daemon runs in this process instead
(:class:`~pycontainerd.daemon.embedded.EmbeddedDaemon`, on a thread of its
own), and the clients call it through its in-process channel; the shims,
and so the containers, are processes of their own and outlive it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2

from pycontainerd import errdefs, namespaces, typeurl
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.client import Client
from pycontainerd.remote._restart import Backoff

if TYPE_CHECKING:
    from pycontainerd.daemon.embedded import EmbeddedDaemon
    from pycontainerd.remote._client import RemoteClient
    from pycontainerd.remote._types import Backend

__all__ = ["Remote"]

log = logging.getLogger(__name__)

#: gRPC's own reconnect backoff grows to two minutes; a client of a daemon
#: that was restarted must find it again within a second.
#: And a call made while the daemon restarts waits for it (up to the
#: client's timeout) instead of failing at once.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.service_config", json.dumps({"methodConfig": [{"name": [{}], "waitForReady": True}]})),
)
#: Consecutive failed health checks of a live daemon process before it is
#: taken for hung and restarted.
HEALTH_FAILURES = 3
#: Bound on the daemon's log kept in an error message.
LOG_TAIL = 4096


class Remote:
    """Our daemon, run and watched for the program that embeds it.

    ``start_daemon=False`` only connects to ``address``.  ``debug`` runs the
    daemon at log level debug.  ``live_restore`` leaves the containers
    running at :meth:`cleanup` (else their tasks are killed and deleted
    first).  ``oom_score`` is written to the daemon's ``oom_score_adj``.
    ``runtime_path`` and ``runtime_args`` are the runc binary the containers
    run with (its runtime option ``BinaryName``; with arguments, through a
    wrapper script, as dockerd does for its runtimes).

    The keyword-only settings tune the watch: a health check every
    ``health_interval`` seconds, restarts after ``backoff``, ``start_timeout``
    for the daemon to serve, ``stop_timeout`` from SIGTERM to SIGKILL; and
    the clients' calls wait up to ``call_timeout`` seconds for an answer
    (for the daemon to be back, if it is restarting).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        state: str | os.PathLike[str],
        start_daemon: bool = True,
        address: str | os.PathLike[str] | None = None,
        debug: bool = False,
        live_restore: bool = False,
        oom_score: int | None = None,
        runtime_path: str | os.PathLike[str] | None = None,
        runtime_args: Sequence[str] = (),
        in_process: bool = False,
        *,
        health_interval: float = 0.5,
        backoff: Backoff = Backoff(initial=0.5, maximum=10.0),  # noqa: B008 -- frozen
        start_timeout: float = 30.0,
        stop_timeout: float = 15.0,
        call_timeout: float = 60.0,
    ) -> None:
        self.root = Path(root).absolute()
        self.state = Path(state).absolute()
        self.address = (
            str(Path(address).absolute()) if address else str(self.state / "pycontainerd.sock")
        )
        if len(os.fsencode(self.address)) > 107:
            raise errdefs.InvalidArgument(
                f"socket path {errdefs.q(self.address)} is longer than 107 bytes"
            )
        if oom_score is not None and not -1000 <= oom_score <= 1000:
            raise errdefs.InvalidArgument(f"oom score {oom_score} is not in [-1000, 1000]")
        if health_interval <= 0 or start_timeout <= 0 or stop_timeout < 0 or call_timeout <= 0:
            raise errdefs.InvalidArgument("health_interval and the timeouts must be positive")
        if in_process and not start_daemon:
            raise errdefs.InvalidArgument("in_process runs the daemon: start_daemon must be set")
        self.start_daemon = start_daemon
        self.debug = debug
        self.live_restore = live_restore
        self.oom_score = oom_score
        self.runtime_path = str(runtime_path) if runtime_path else None
        self.runtime_args = tuple(runtime_args)
        self.in_process = in_process
        self.health_interval = health_interval
        self.backoff = backoff
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.call_timeout = call_timeout
        #: How many times the daemon was restarted after it died or hung.
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._embedded: EmbeddedDaemon | None = None
        self._clients: list[RemoteClient] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._monitor: threading.Thread | None = None
        self._runtime_options = self._write_runtime()
        self._start()

    # --- the daemon ---------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The daemon's pid, when this Remote runs it as a process."""
        process = self._process
        return process.pid if process is not None else None

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.state.mkdir(parents=True, exist_ok=True, mode=0o711)
        if self.in_process:
            self._start_embedded()
            return
        if not self.start_daemon or self._serving(timeout=1.0):
            # Someone else's daemon: used, not watched, not stopped.
            return
        self._spawn()
        self._monitor = threading.Thread(
            target=self._watch, name="pycontainerd-remote-monitor", daemon=True
        )
        self._monitor.start()

    def _start_embedded(self) -> None:
        from pycontainerd.daemon.config import Config, GRPCConfig
        from pycontainerd.daemon.embedded import EmbeddedDaemon

        config = Config(
            root=str(self.root / "daemon"),
            state=str(self.state / "daemon"),
            grpc=GRPCConfig(address=self.address),
            oom_score=self.oom_score or 0,
        )
        self._embedded = EmbeddedDaemon(config)
        self._embedded.start()

    def _command(self) -> list[str]:
        config = self.state / "pycontainerd.toml"
        config.write_text("version = 2\n")
        binary = Path(sys.executable).parent / "pycontainerd"
        launcher = (
            [str(binary)]
            if binary.exists()
            else [sys.executable, "-c", "from pycontainerd.daemon.main import main; main()"]
        )
        return [
            *launcher,
            "--config",
            str(config),
            "--root",
            str(self.root / "daemon"),
            "--state",
            str(self.state / "daemon"),
            "--address",
            self.address,
            "--log-level",
            "debug" if self.debug else "info",
        ]

    def _spawn(self) -> None:
        """Start the daemon and wait until it serves (Unavailable if it does not)."""
        logfile = self.state / "pycontainerd.log"
        with open(logfile, "ab") as out:
            # A session of its own: a ^C for the program is not the daemon's.
            process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._process = process
        log.info("started pycontainerd", extra={"pid": process.pid, "address": self.address})
        if self.oom_score is not None:
            try:
                Path(f"/proc/{process.pid}/oom_score_adj").write_text(str(self.oom_score))
            except OSError as exc:  # lowering it needs CAP_SYS_RESOURCE
                log.warning("could not set the oom score of pycontainerd: %s", exc)
        deadline = time.monotonic() + self.start_timeout
        while not self._serving(timeout=1.0):
            if process.poll() is not None:
                raise errdefs.Unavailable(
                    f"pycontainerd exited with {process.returncode} at start: {self._log_tail()}"
                )
            if time.monotonic() > deadline or self._closing.is_set():
                self._terminate(process)
                raise errdefs.Unavailable(
                    f"pycontainerd did not serve at {errdefs.q(self.address)} "
                    f"in {self.start_timeout}s: {self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            with open(self.state / "pycontainerd.log", "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _serving(self, timeout: float) -> bool:
        if not os.path.exists(self.address):
            return False
        with Client(self.address, timeout=timeout) as client:
            return client.is_serving()

    def _watch(self) -> None:
        """Restart the daemon when it dies, or stops answering its health check."""
        failures = 0
        delay = 0.0
        healthy_since = time.monotonic()
        while not self._closing.wait(self.health_interval):
            process = self._process
            assert process is not None
            dead = process.poll() is not None
            if not dead:
                if self._serving(timeout=max(self.health_interval, 1.0)):
                    failures = 0
                    if time.monotonic() - healthy_since >= self.backoff.reset_after:
                        delay = 0.0
                    continue
                failures += 1
                if failures < HEALTH_FAILURES:
                    continue
                log.warning("pycontainerd stopped answering; restarting it")
                self._terminate(process)
            else:
                log.warning(
                    "pycontainerd exited; restarting it",
                    extra={"pid": process.pid, "status": process.returncode},
                )
            delay = self.backoff.next(delay)
            if self._closing.wait(delay):
                return
            try:
                with self._lock:
                    if self._closing.is_set():
                        return
                    self._spawn()
            except errdefs.ContainerdError as exc:
                log.error("pycontainerd failed to restart: %s", exc)
                continue
            failures = 0
            healthy_since = time.monotonic()
            self.restarts += 1

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM, up to ``stop_timeout`` seconds to go, then SIGKILL."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait_serving(self, timeout: float) -> None:
        """Block until the daemon serves (after a restart); Unavailable after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._serving(timeout=1.0):
            if time.monotonic() > deadline:
                raise errdefs.Unavailable(
                    f"pycontainerd at {errdefs.q(self.address)} not serving after {timeout}s"
                )
            time.sleep(0.05)

    # --- runtime ------------------------------------------------------------------

    def _write_runtime(self) -> any_pb2.Any | None:
        if self.runtime_path is None and not self.runtime_args:
            return None
        binary = self.runtime_path or "runc"
        if self.runtime_args:
            # runc's options carry a binary, not arguments: dockerd's answer
            # is a script that runs the binary with them.
            wrapper = self.state / "runtimes" / "runc"
            wrapper.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            args = " ".join(shlex.quote(a) for a in (binary, *self.runtime_args))
            temp = wrapper.with_name(".runc.tmp")
            temp.write_text(f'#!/bin/sh\nexec {args} "$@"\n')
            temp.chmod(0o755)
            temp.replace(wrapper)
            binary = str(wrapper)
        return typeurl.marshal_any(oci_pb2.Options(binary_name=binary))

    def runtime_options(self) -> any_pb2.Any | None:
        """The runtime options new containers get (runc's ``Options`` with
        ``runtime_path``), or None for the shim's defaults."""
        if self._runtime_options is None:
            return None
        return any_pb2.Any(
            type_url=self._runtime_options.type_url, value=self._runtime_options.value
        )

    # --- clients ------------------------------------------------------------------

    def connect(self, namespace: str = namespaces.DEFAULT, **kwargs: Any) -> Client:
        """A client of the daemon: over its socket, or its in-process channel."""
        kwargs.setdefault("timeout", self.call_timeout)
        if self._embedded is not None:
            return Client(self.address, namespace, channel=self._embedded.channel(), **kwargs)
        options = [*CHANNEL_OPTIONS, *kwargs.pop("options", ())]
        return Client(self.address, namespace, options=options, **kwargs)

    def client(
        self,
        backend: Backend,
        *,
        namespace: str = namespaces.DEFAULT,
        backoff: Backoff | None = None,
    ) -> RemoteClient:
        """A client for ``backend`` of the containers of ``namespace``;
        ``backoff`` is their restarts' (Docker's: from 100ms to a minute)."""
        from pycontainerd.remote._client import RemoteClient

        if self._closing.is_set():
            raise errdefs.FailedPrecondition("the remote was cleaned up")
        client = RemoteClient(self, backend, namespace, backoff or Backoff())
        with self._lock:
            self._clients.append(client)
        return client

    def _forget(self, client: RemoteClient) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._clients.remove(client)

    # --- the end ------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop: without ``live_restore`` the clients' tasks are killed and
        deleted first; then the clients are closed and the daemon this
        Remote started is stopped (SIGTERM, then SIGKILL)."""
        if self._closing.is_set():
            return
        with self._lock:
            self._closing.set()
            clients = list(self._clients)
        if self._monitor is not None:
            self._monitor.join()
        # A dead daemon cannot kill anything; its calls would only wait.
        serving = self._embedded is not None or self._serving(timeout=1.0)
        for client in clients:
            if not self.live_restore and serving:
                try:
                    client.kill_all()
                except errdefs.ContainerdError as exc:
                    log.warning("could not stop the tasks of %s: %s", client.namespace, exc)
            client.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
        if self._process is not None:
            self._terminate(self._process)

    def __enter__(self) -> Remote:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<Remote {self.address!r} pid={self.pid}>"
