"""The daemon's life: plugins in dependency order, the gRPC server, shutdown.

:class:`Server` is also what tests and embedders use to run a daemon inside
an existing event loop (``await server.start()`` / ``await server.stop()``),
and to call it without its socket::

    async with AsyncClient(namespace="default", channel=server.channel()) as client:
        print(await client.version())

(:mod:`pycontainerd.daemon.embedded` runs one in a thread for sync programs.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import io
import linecache
import logging
import os
import resource
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from pycontainerd import plugin
from pycontainerd.daemon import builtins, proxies
from pycontainerd.daemon.config import Config, ConfigError, decode
from pycontainerd.daemon.metrics_http import MetricsServer
from pycontainerd.daemon.socket import finish_socket, prepare_socket
from pycontainerd.edge import Method
from pycontainerd.edge.grpc_server import GrpcServer
from pycontainerd.edge.inprocess import InProcessChannel
from pycontainerd.edge.inprocess_sync import SyncInProcessChannel
from pycontainerd.edge.ttrpc_server import TtrpcServer
from pycontainerd.events import Exchange

__all__ = ["Server", "StartupError"]

log = logging.getLogger("pycontainerd")


class StartupError(Exception):
    """The daemon cannot start; ``str()`` is one line for the operator."""


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = Path(config.root)
        self.state = Path(config.state)
        self.address = Path(config.grpc.address)
        #: Where shims reach the daemon (``[ttrpc] address``; by default beside the gRPC socket).
        self.ttrpc_address = Path(config.ttrpc.address or f"{config.grpc.address}.ttrpc")
        self.plugins = plugin.PluginSet()
        self.events = Exchange()
        #: Every API method the loaded plugins serve (set by start()).
        self.methods: list[Method] = []
        self._grpc: GrpcServer | None = None
        self._ttrpc: TtrpcServer | None = None
        self._metrics: MetricsServer | None = None
        self._lock_fd: int | None = None
        #: Set once our listener owns the socket file; only then may stop() remove it.
        self._bound = False
        self._ttrpc_bound = False

    # --- start-up ------------------------------------------------------------

    def _lock_root(self) -> None:
        """One daemon per root: a second one would corrupt the stores."""
        fd = os.open(self.root / "pycontainerd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(f"{self.root}: root directory in use by another daemon") from None
        self._lock_fd = fd

    def _plugin_config(self, reg: plugin.Registration) -> Any:
        section = self.config.plugin_section(reg.uri)
        if reg.config is None:
            return dict(section)
        try:
            return decode(reg.config, section, f'plugins."{reg.uri}"')
        except ConfigError as exc:
            raise StartupError(f"config: {exc}") from None

    async def _init_plugins(self) -> None:
        builtins.load()
        proxies.register(self.config.proxy_plugins)
        disabled = frozenset(self.config.disabled_plugins)
        for reg in plugin.registrations(disabled):
            ctx = plugin.InitContext(
                registration=reg,
                root=self.root / reg.uri,
                state=self.state / reg.uri,
                config=self._plugin_config(reg),
                plugins=self.plugins,
                grpc_address=str(self.address),
                ttrpc_address=str(self.ttrpc_address),
                events=self.events,
            )
            p = await plugin.initialise(reg, ctx)
            self.plugins.add(p)
            if p.skipped:
                log.info("skip loading plugin", extra={"id": reg.uri, "reason": str(p.error)})
            elif p.error is not None:
                log.warning("failed to load plugin", extra={"id": reg.uri, "error": str(p.error)})
            else:
                log.debug("loaded plugin", extra={"id": reg.uri})
        loaded = {p.registration.uri for p in self.plugins if p.ok}
        missing = [r for r in self.config.required_plugins if r not in loaded]
        if missing:
            raise StartupError(f"required plugins failed to load: {', '.join(missing)}")

    async def start(self) -> None:
        for d in (self.root, self.state):
            try:
                d.mkdir(parents=True, exist_ok=True, mode=0o711)
                os.chmod(d, 0o711)
            except OSError as exc:
                raise StartupError(f"{d}: cannot create directory: {exc.strerror}") from None
        self._lock_root()
        try:
            prepare_socket(self.address)
            prepare_socket(self.ttrpc_address)
        except Exception as exc:
            raise StartupError(str(exc)) from None
        raise_open_file_limit()
        if self.config.oom_score:
            with contextlib.suppress(OSError):
                Path("/proc/self/oom_score_adj").write_text(str(self.config.oom_score))
        await self._init_plugins()
        grpc_cfg = self.config.grpc
        self.methods = [
            method
            for p in self.plugins
            if p.ok and p.registration.type == plugin.PluginType.GRPC
            for method in p.instance.methods()
        ]
        self._grpc = GrpcServer(self.methods, max_recv_message_size=grpc_cfg.max_recv_message_size)
        old = os.umask(0o117)  # the socket is never world-accessible, not even briefly
        try:
            await self._grpc.start(str(self.address))
            self._bound = True
        except OSError as exc:
            raise StartupError(f"{self.address}: cannot listen: {exc.strerror or exc}") from None
        finally:
            os.umask(old)
        finish_socket(self.address, grpc_cfg.uid, grpc_cfg.gid)
        await self._start_ttrpc()
        if self.config.metrics.address:
            address = self.config.metrics.address
            try:
                metrics = MetricsServer(address)
                await metrics.start()
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise StartupError(f"metrics address {address}: {reason}") from None
            self._metrics = metrics
        log.info("serving...", extra={"address": str(self.address)})
        log.info("containerd successfully booted")

    async def _start_ttrpc(self) -> None:
        """The ttrpc listener, with every loaded io.containerd.ttrpc.v1 plugin's methods."""
        methods = [
            method
            for p in self.plugins
            if p.ok and p.registration.type == plugin.PluginType.TTRPC
            for method in p.instance.methods()
        ]
        self._ttrpc = TtrpcServer(methods)
        old = os.umask(0o117)
        try:
            await self._ttrpc.start(str(self.ttrpc_address))
            self._ttrpc_bound = True
        except OSError as exc:
            raise StartupError(
                f"{self.ttrpc_address}: cannot listen: {exc.strerror or exc}"
            ) from None
        finally:
            os.umask(old)
        ttrpc_cfg = self.config.ttrpc
        finish_socket(self.ttrpc_address, ttrpc_cfg.uid, ttrpc_cfg.gid)

    # --- in-process clients -----------------------------------------------------

    def channel(self) -> InProcessChannel:
        """A channel to this daemon's methods for an ``AsyncClient`` on the
        loop that runs it: every call as over the socket, without the socket.
        Close it (the client does) before stop()."""
        return InProcessChannel(
            self.methods,
            max_server_receive_message_length=self.config.grpc.max_recv_message_size,
        )

    def sync_channel(self, loop: asyncio.AbstractEventLoop) -> SyncInProcessChannel:
        """The same for a sync ``Client`` in another thread; ``loop`` runs this daemon."""
        return SyncInProcessChannel(
            self.methods,
            loop,
            max_server_receive_message_length=self.config.grpc.max_recv_message_size,
        )

    # --- shutdown ------------------------------------------------------------

    async def stop(self, grace: float = 5.0) -> None:
        if self._metrics is not None:
            await self._metrics.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._ttrpc is not None:
            await self._ttrpc.stop(grace)
            self._ttrpc = None
        for p in reversed(list(self.plugins)):
            if p.ok and p.instance is not None:
                try:
                    await plugin.close_instance(p.instance)
                except Exception:
                    log.exception("closing plugin failed", extra={"id": p.registration.uri})
        if self._bound:
            # Never before: a daemon that failed to start (root locked, address in
            # use) must not remove the socket of the daemon that is serving on it.
            with contextlib.suppress(FileNotFoundError):
                self.address.unlink()
            self._bound = False
            log.info("stopped")
        if self._ttrpc_bound:
            with contextlib.suppress(FileNotFoundError):
                self.ttrpc_address.unlink()
            self._ttrpc_bound = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def serve_forever(self) -> None:
        """Start, then run until SIGTERM or SIGINT; SIGUSR1 dumps task stacks."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        loop.add_signal_handler(signal.SIGUSR1, dump_stacks)
        try:
            await self.start()
            await done.wait()
            log.info("stopping...")
        finally:
            await self.stop()


def _write_frames(buf: io.StringIO, frames: list[FrameType]) -> None:
    # Not Task.print_stack()/traceback: both fail on a frame whose f_lineno is
    # None (a coroutine that has not started yet), losing the whole dump.
    for f in frames:
        code, lineno = f.f_code, f.f_lineno
        buf.write(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
        if lineno is not None:
            line = linecache.getline(code.co_filename, lineno, f.f_globals).strip()
            if line:
                buf.write(f"    {line}\n")


def raise_open_file_limit() -> None:
    """Lift the soft open-file limit to the hard one, as Go's runtime does for
    containerd: layer apply keeps many directories open, and every client
    connection and shim holds descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def dump_stacks() -> None:
    """Log every asyncio task's and thread's stack (kill -USR1 <pid>)."""
    buf = io.StringIO()
    for task in asyncio.all_tasks():
        buf.write(f"--- task {task.get_name()} ({task.get_coro()!r})\n")
        _write_frames(buf, task.get_stack())
    for ident, frame in sys._current_frames().items():
        buf.write(f"--- thread {ident}\n")
        _write_frames(buf, list(reversed(list(_walk(frame)))))
    log.info(
        "=== BEGIN goroutine stack dump ===\n%s=== END goroutine stack dump ===", buf.getvalue()
    )


def _walk(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def replace(config: Config, **changes: Any) -> Config:
    """A config with top-level or ``grpc`` fields overridden (for CLI flags)."""
    grpc_changes = {k[5:]: v for k, v in changes.items() if k.startswith("grpc_")}
    top = {k: v for k, v in changes.items() if not k.startswith("grpc_")}
    if grpc_changes:
        top["grpc"] = dataclasses.replace(config.grpc, **grpc_changes)
    return dataclasses.replace(config, **top)
