"""Shim binaries: which one a runtime name runs, and the ``start``/``delete``
commands (containerd's ``runtime/v2/binary.go`` and ``shim/util.go``).

Resolution, in order:

1. a runtime given as an absolute path is that binary;
2. a name the configuration maps (``[plugins."io.containerd.runtime.v2.task"
   .runtimes."NAME"] shim = ...``) runs the mapped shim: an absolute path,
   or a binary name looked up beside the daemon's Python (the venv's
   ``bin``), then on ``PATH``;
3. any other name resolves as containerd resolves it:
   ``io.containerd.NAME.vN`` -> ``containerd-shim-NAME-vN`` on ``PATH``,
   then beside the daemon.

The shim protocol: ``SHIM -namespace NS -address GRPC -publish-binary DAEMON
-id ID [-debug] start``, run in the bundle with ``TTRPC_ADDRESS``,
``GRPC_ADDRESS`` and ``NAMESPACE`` in its environment and the runtime
options (a serialized ``Any``) on stdin, prints the address of the ttrpc
socket it serves (``unix:///path``, or an abstract name without the
scheme).  ``... -id ID -bundle PATH delete`` cleans up after a shim that is
gone and prints a serialized ``containerd.task.v2.DeleteResponse``.
containerd 1.6's shims publish events to ``TTRPC_ADDRESS``; the
``-publish-binary`` they are given is only their fallback.

What ``start`` and ``delete`` print costs the daemon at most
:data:`MAX_OUTPUT` (64 KiB) per stream, however much a misbehaving shim
prints: both pipes are read at once, the first 64 KiB of each kept and the
rest read and dropped (so the shim never blocks on a full pipe), until the
shim closes them or the timeout kills it.  A cut answer is an error; a cut
stderr is reported as cut.

A shim logs to the fifo ``log`` in its bundle and blocks until someone
reads it: :class:`ShimLog` opens it (read-write, so it never sees EOF nor
blocks the shim) before the shim starts, and copies its lines to the
daemon's log, each cut at 16 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from pycontainerd import errdefs, ttrpc
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.runtime import Exit
from pycontainerd.runtime.bundle import Bundle
from pycontainerd.shim import address as shim_address
from pycontainerd.shim._layout import ADDRESS_FILE

__all__ = [
    "OUR_SHIM",
    "Resolver",
    "ShimLog",
    "binary_name",
    "delete_shim",
    "live_group_server",
    "start_shim",
]

log = logging.getLogger(__name__)

#: What ``start`` and ``delete`` may print before they are cut off (an address
#: or a DeleteResponse is tiny; a shim that prints more is misbehaving).
MAX_OUTPUT = 64 << 10
#: The longest line of a shim's log passed on whole.
MAX_LOG_LINE = 16 << 10
#: Our shim, which both runc runtime names run unless the config says otherwise.
OUR_SHIM = "containerd-shim-pyrunc-v2"


def binary_name(runtime: str) -> str:
    """``io.containerd.runc.v2`` -> ``containerd-shim-runc-v2``; ``""`` when the
    name has fewer than two dot-separated parts (containerd's ``BinaryName``)."""
    parts = runtime.split(".")
    if len(parts) < 2 or not parts[0]:
        return ""
    return f"containerd-shim-{parts[-2]}-{parts[-1]}"


def _executable(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK)


class Resolver:
    """Runtime name -> absolute path of its shim, remembered once found."""

    def __init__(self, runtimes: Mapping[str, str], *, beside: Path | None = None) -> None:
        #: runtime name -> shim (absolute path or binary name), from the config.
        self._runtimes = dict(runtimes)
        #: Where the daemon's own binaries are (the venv's bin).
        self._beside = beside if beside is not None else Path(sys.executable).parent
        self._found: dict[str, str] = {}

    def is_ours(self, binary: str) -> bool:
        """Whether ``binary`` is our own shim, installed beside the daemon
        (the same code, so its servers' addresses are computed here alike)."""
        return binary == str(self._beside / OUR_SHIM)

    def resolve(self, runtime: str) -> str:
        if not runtime:
            raise errdefs.InvalidArgument("no runtime name")
        if runtime.startswith("/"):
            if not _executable(Path(runtime)):
                raise errdefs.NotFound(f"invalid custom binary path: {runtime}")
            return runtime
        cached = self._found.get(runtime)
        if cached is not None:
            return cached
        mapped = self._runtimes.get(runtime)
        path = self._mapped(runtime, mapped) if mapped else self._by_name(runtime)
        self._found[runtime] = path
        return path

    def _mapped(self, runtime: str, shim: str) -> str:
        if shim.startswith("/"):
            if not _executable(Path(shim)):
                raise errdefs.NotFound(f"runtime {errdefs.q(runtime)}: shim {shim} not installed")
            return shim
        if "/" in shim:
            raise errdefs.InvalidArgument(
                f"runtime {errdefs.q(runtime)}: shim {errdefs.q(shim)} must be an absolute "
                "path or a binary name"
            )
        if _executable(self._beside / shim):
            return str(self._beside / shim)
        found = shutil.which(shim)
        if found is None:
            raise errdefs.NotFound(f"runtime {errdefs.q(runtime)} binary not installed {shim!r}")
        return os.path.abspath(found)

    def _by_name(self, runtime: str) -> str:
        name = binary_name(runtime)
        if not name:
            raise errdefs.InvalidArgument(
                f"invalid runtime name {runtime}, correct runtime name should be either "
                "format like `io.containerd.runc.v1` or a full path to the binary"
            )
        found = shutil.which(name)
        if found is not None:
            return os.path.abspath(found)
        if _executable(self._beside / name):
            return str(self._beside / name)
        raise errdefs.NotFound(f"runtime {errdefs.q(runtime)} binary not installed {name!r}")


class ShimLog:
    """The ``log`` fifo of a bundle, copied line by line to the daemon's log."""

    def __init__(self, fd: int, bundle: Bundle, transport: asyncio.ReadTransport) -> None:
        self._fd = fd
        self._transport = transport
        self.bundle = bundle

    @classmethod
    async def open(cls, bundle: Bundle) -> ShimLog:
        path = bundle.path / "log"
        with contextlib.suppress(FileExistsError):
            os.mkfifo(path, 0o700)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
            loop = asyncio.get_running_loop()
            shim_log = logging.getLogger("pycontainerd.shim")
            transport, _ = await loop.connect_read_pipe(
                lambda: _LogProtocol(shim_log, bundle), pipe
            )
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, bundle, transport)

    def close(self) -> None:
        if self._fd >= 0:
            self._transport.close()
            os.close(self._fd)
            self._fd = -1


class _LogProtocol(asyncio.Protocol):
    def __init__(self, logger: logging.Logger, bundle: Bundle) -> None:
        self._log = logger
        self._extra = {"namespace": bundle.namespace, "id": bundle.id}
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LOG_LINE:
                    self._emit(bytes(self._buffer[:MAX_LOG_LINE]))
                    del self._buffer[:]
                return
            line = bytes(self._buffer[: min(end, MAX_LOG_LINE)])
            del self._buffer[: end + 1]
            self._emit(line)

    def _emit(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            self._log.info("%s", text, extra=self._extra)


def _command(
    binary: str,
    namespace: str,
    grpc_address: str,
    publish_binary: str,
    args: list[str],
) -> list[str]:
    debug = ["-debug"] if logging.getLogger("pycontainerd").isEnabledFor(logging.DEBUG) else []
    return [
        binary,
        "-namespace",
        namespace,
        "-address",
        grpc_address,
        "-publish-binary",
        publish_binary,
        *args[:-1],
        *debug,
        args[-1],
    ]


def _env(namespace: str, grpc_address: str, ttrpc_address: str) -> dict[str, str]:
    return {
        **os.environ,
        "GOMAXPROCS": "2",
        "TTRPC_ADDRESS": ttrpc_address,
        "GRPC_ADDRESS": grpc_address,
        "NAMESPACE": namespace,
    }


@dataclass(frozen=True, slots=True)
class _Output:
    """What a ``start`` or ``delete`` printed: at most :data:`MAX_OUTPUT`
    bytes of each stream, and whether more was printed and thrown away."""

    code: int
    out: bytes
    err: bytes
    out_cut: bool = False
    err_cut: bool = False

    def stderr_text(self) -> str:
        text = self.err.decode("utf-8", "replace").strip()
        if self.err_cut:
            text += f" [stderr cut at {MAX_OUTPUT} bytes]"
        return text


class _Collector(asyncio.SubprocessProtocol):
    """Keeps the first :data:`MAX_OUTPUT` bytes a command prints on each of
    stdout and stderr and drops the rest as it arrives.

    The rest is read and dropped rather than left in the pipe: a shim blocked
    on a full pipe would only end at the timeout, and killing it as soon as
    it is over the cap would turn a chatty stderr beside a good answer into
    a failure."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self._done = done
        self.kept = {1: bytearray(), 2: bytearray()}
        self.cut = {1: False, 2: False}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        kept = self.kept[fd]
        room = MAX_OUTPUT - len(kept)
        if len(data) > room:
            self.cut[fd] = True
            data = data[:room]
        kept += data

    def connection_lost(self, exc: Exception | None) -> None:
        # Both pipes closed and the process reaped.
        if not self._done.done():
            self._done.set_result(None)


async def _run(
    argv: list[str], cwd: str | None, env: dict[str, str], stdin: bytes | None, timeout: float
) -> _Output:
    """Run a shim command and collect what it prints, bounded in memory
    (:data:`MAX_OUTPUT` per stream, whatever the shim prints) and in time
    (*timeout*, after which its process group is killed)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    transport, collector = await loop.subprocess_exec(
        lambda: _Collector(done),
        *argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Its own process group, as containerd starts shims: a signal to the
        # daemon's group (a terminal's ^C) must not reach the shims.
        start_new_session=True,
    )
    try:
        if stdin is not None:
            pipe = transport.get_pipe_transport(0)
            assert isinstance(pipe, asyncio.WriteTransport)
            # Buffered by the transport and written as the shim reads; a
            # shim that exits without reading closes the pipe, and its exit
            # status tells.
            pipe.write(stdin)
            pipe.write_eof()
        async with asyncio.timeout(timeout):
            await asyncio.shield(done)
    except TimeoutError:
        await _kill(transport, done)
        raise errdefs.DeadlineExceeded(f"{argv[0]} {argv[-1]}: no answer in {timeout}s") from None
    except BaseException:
        await _kill(transport, done)
        raise
    code = transport.get_returncode()
    transport.close()
    assert code is not None
    return _Output(
        code, bytes(collector.kept[1]), bytes(collector.kept[2]), collector.cut[1], collector.cut[2]
    )


async def _kill(transport: asyncio.SubprocessTransport, done: asyncio.Future[None]) -> None:
    """Kill a shim command that overran, with whatever it started in its
    group (a long-lived shim is in a session of its own), close its pipes (a
    helper outside the group must not keep them open) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(transport.get_pid(), signal.SIGKILL)
    transport.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.shield(done)


async def start_shim(
    binary: str,
    bundle: Bundle,
    *,
    grpc_address: str,
    ttrpc_address: str,
    publish_binary: str,
    options: any_pb2.Any | None,
    timeout: float,
) -> str:
    """Run ``SHIM start`` in the bundle; the socket path to connect to."""
    argv = _command(
        binary, bundle.namespace, grpc_address, publish_binary, ["-id", bundle.id, "start"]
    )
    stdin = options.SerializeToString() if options is not None and options.type_url else None
    result = await _run(
        argv,
        str(bundle.path),
        _env(bundle.namespace, grpc_address, ttrpc_address),
        stdin,
        timeout,
    )
    if result.code != 0:
        text = (result.out + result.err).decode("utf-8", "replace").strip()
        if result.out_cut or result.err_cut:
            text += f" [output cut at {MAX_OUTPUT} bytes per stream]"
        raise errdefs.Unknown(f"failed to start shim: {text}: exit status {result.code}")
    if result.out_cut:
        raise errdefs.Unknown(
            f"failed to start shim: it printed more than {MAX_OUTPUT} bytes where an "
            "address was expected"
        )
    return socket_path(result.out.decode("utf-8", "replace").strip())


async def live_group_server(
    bundle: Bundle, spec: bytes | None, *, grpc_address: str, timeout: float
) -> ttrpc.Client | None:
    """A connection to the live server of our shim that serves this
    bundle's group, with the bundle's ``address`` file written -- what
    ``start`` does when it finds one, without an interpreter start (about
    20 ms of every ``ctr run``) -- or None when none answers, and ``start``
    must spawn one.

    A server found this way may be leaving (idle, or signalled) just as it
    is found: then it refuses Create ``UNAVAILABLE``, exactly as when
    ``start`` found it a moment earlier."""
    path = shim_address.socket_path(
        grpc_address, bundle.namespace, shim_address.group_of_spec(spec or b"")
    )
    try:
        client = await ttrpc.Client.connect(path, timeout=timeout)
    except (OSError, TimeoutError):
        return None
    try:
        await asyncio.to_thread(_write_address, bundle, "unix://" + path)
    except BaseException:
        await client.close()
        raise
    return client


def _write_address(bundle: Bundle, address: str) -> None:
    (bundle.path / ADDRESS_FILE).write_text(address)


def socket_path(address: str) -> str:
    """A shim's printed address as a path to connect to: ``unix://`` names a
    file; anything else, an abstract socket (containerd's ``socket.path``)."""
    if not address:
        raise errdefs.Unknown("shim printed no address")
    if address.startswith("unix://"):
        return address[len("unix://") :]
    return "\0" + address


async def delete_shim(
    binary: str,
    bundle: Bundle,
    *,
    grpc_address: str,
    ttrpc_address: str,
    publish_binary: str,
    timeout: float,
) -> Exit:
    """Run ``SHIM delete`` for a shim that is gone, then remove the bundle."""
    log.info("cleaning up dead shim", extra={"namespace": bundle.namespace, "id": bundle.id})
    argv = _command(
        binary,
        bundle.namespace,
        grpc_address,
        publish_binary,
        ["-id", bundle.id, "-bundle", str(bundle.path), "delete"],
    )
    cwd = str(bundle.path) if bundle.path.is_dir() else None
    result = await _run(
        argv, cwd, _env(bundle.namespace, grpc_address, ttrpc_address), None, timeout
    )
    if result.code != 0:
        raise errdefs.Unknown(f"{result.stderr_text()}: shim delete exited {result.code}")
    if result.err.strip():
        log.warning(
            "cleanup warnings %s",
            result.stderr_text(),
            extra={"namespace": bundle.namespace, "id": bundle.id},
        )
    if result.out_cut:
        raise errdefs.Unknown(
            f"shim delete printed more than {MAX_OUTPUT} bytes where a DeleteResponse was expected"
        )
    try:
        response = shim_pb2.DeleteResponse.FromString(result.out)
    except DecodeError as exc:
        raise errdefs.Unknown(f"shim delete printed no DeleteResponse: {exc}") from None
    await asyncio.to_thread(bundle.delete)
    return Exit(
        pid=response.pid,
        status=response.exit_status,
        exited_at=response.exited_at.seconds * 1_000_000_000 + response.exited_at.nanos,
    )
