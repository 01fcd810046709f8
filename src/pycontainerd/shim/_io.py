"""A process's stdio: fifos, terminals, log files, logger binaries, nothing.

What containerd's client hands the shim is one string per stream:

- ``""``: nothing (the process gets ``/dev/null``);
- a path: a fifo the client reads (stdout, stderr) or writes (stdin).  The
  process gets a pipe and the server copies between pipe and fifo, so that
  a client that goes away never sends the process a ``SIGPIPE``: the server
  holds the fifo open read-write (as the Go shim holds a reader), and when
  the process's end of the pipe closes the fifo is closed so the client
  sees EOF;
- ``file:///path``: stdout and stderr appended to that file (the process
  writes it directly);
- ``binary:///path?k=v``: a logger process started by the server with the
  stdout and stderr pipes' read ends as fds 3 and 4 and a pipe as fd 5 it
  closes once ready (containerd's ``binary://`` protocol);
- with a terminal, runc hands the pty master over a console socket and the
  server copies stdin fifo -> master -> stdout fifo.

Copying never blocks the loop: each :class:`Pump` holds at most
:data:`PUMP_LIMIT` bytes and stops reading its source while its sink is
full, so one slow reader stalls only its own process's output.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import struct
import tempfile
import termios
import urllib.parse
from typing import Any

from pycontainerd.shim._reaper import Reaper

__all__ = ["ConsoleSocket", "ProcessIO", "Pump"]

#: Bytes a pump holds for a sink that does not keep up.
PUMP_LIMIT = 256 << 10
_CHUNK = 65536


class Pump:
    """Copy ``src`` to ``dst`` until ``src`` ends, without blocking the loop."""

    def __init__(
        self,
        src: int,
        dst: int,
        *,
        close_src: bool = True,
        close_dst: bool = True,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._src = src
        self._dst = dst
        self._close_src = close_src
        self._close_dst = close_dst
        self._buffer = bytearray()
        self._reading = False
        self._writing = False
        self._eof = False
        self._broken = False  # the sink is gone: drain the source, drop the data
        self.done: asyncio.Future[None] = self._loop.create_future()
        os.set_blocking(src, False)
        os.set_blocking(dst, False)
        self._read_on()

    def _read_on(self) -> None:
        if not self._reading and not self._eof:
            self._loop.add_reader(self._src, self._readable)
            self._reading = True

    def _read_off(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._src)
            self._reading = False

    def _readable(self) -> None:
        try:
            data = os.read(self._src, _CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty whose last slave closed
            data = b""
        if not data:
            self._eof = True
            self._read_off()
            if not self._buffer:
                self._finish()
            return
        if self._broken:
            return
        self._buffer += data
        self._flush()
        if len(self._buffer) >= PUMP_LIMIT:
            self._read_off()

    def _flush(self) -> None:
        while self._buffer:
            try:
                n = os.write(self._dst, self._buffer)
            except BlockingIOError:
                break
            except OSError:
                self._broken = True
                self._buffer.clear()
                break
            del self._buffer[:n]
        if self._buffer and not self._writing:
            self._loop.add_writer(self._dst, self._flush)
            self._writing = True
        elif not self._buffer:
            if self._writing:
                self._loop.remove_writer(self._dst)
                self._writing = False
            if self._eof:
                self._finish()
            else:
                self._read_on()

    def _finish(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop copying; close what this pump owns."""
        self._read_off()
        if self._writing:
            self._loop.remove_writer(self._dst)
            self._writing = False
        if self._close_src:
            self._close_src = False
            with contextlib.suppress(OSError):
                os.close(self._src)
        if self._close_dst:
            self._close_dst = False
            with contextlib.suppress(OSError):
                os.close(self._dst)
        if not self.done.done():
            self.done.set_result(None)


def _open_fifo_writer(path: str) -> int:
    # Read-write: the open never blocks nor fails for want of a reader, and
    # a reader that leaves never turns our writes into EPIPE.
    return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def _open_fifo_reader(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


class ConsoleSocket:
    """A unix socket runc connects to, to hand over a pty master (SCM_RIGHTS)."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="pty", dir=os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
        self.path = os.path.join(self._dir, "pty.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.bind(self.path)
        self._sock.listen(1)

    async def receive(self, timeout: float = 10) -> int:
        """The master fd runc sent (runc sent it before its create returned)."""
        loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        async with asyncio.timeout(timeout):
            conn, _ = await loop.sock_accept(self._sock)
        with conn:
            fds = array.array("i")
            conn.setblocking(True)
            conn.settimeout(timeout)
            _msg, ancdata, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(4 * 4))
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        if not fds:
            raise OSError(errno.EPROTO, "runc sent no console master")
        for extra in fds[1:]:
            os.close(extra)
        os.set_inheritable(fds[0], False)
        return fds[0]

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)


class ProcessIO:
    """The stdio of one process (init or exec) and the copies that serve it."""

    def __init__(
        self,
        stdin: str,
        stdout: str,
        stderr: str,
        *,
        terminal: bool,
        uid: int = 0,
        gid: int = 0,
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal
        self._uid = uid
        self._gid = gid
        self._child: list[int] = []  # the process's ends, closed once it started
        self._ours: list[int] = []  # fds we hold until close()
        self._pumps: list[Pump] = []
        self._stdin_pump: Pump | None = None
        self.console: int | None = None
        self._logger: tuple[int, asyncio.Future[int]] | None = None

    # --- setting up -----------------------------------------------------------------------

    def _pipe(self) -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        if self._uid or self._gid:
            for fd in (r, w):
                os.fchown(fd, self._uid, self._gid)
        return r, w

    def _devnull(self) -> int:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._child.append(fd)
        return fd

    async def open(self, reaper: Reaper, container_id: str, namespace: str) -> tuple[int, int, int]:
        """The fds the process gets as 0, 1, 2 (a terminal's come later)."""
        try:
            return await self._open(reaper, container_id, namespace)
        except BaseException:
            self.close()
            raise

    async def _open(
        self, reaper: Reaper, container_id: str, namespace: str
    ) -> tuple[int, int, int]:
        if self.terminal:
            null = self._devnull()
            return null, null, null
        if self.stdin:
            r, w = self._pipe()
            self._child.append(r)
            fifo = _open_fifo_reader(self.stdin)
            self._stdin_pump = Pump(fifo, w)
            stdin = r
        else:
            stdin = self._devnull()
        scheme = urllib.parse.urlsplit(self.stdout).scheme if "://" in self.stdout else ""
        if scheme == "file":
            path = urllib.parse.urlsplit(self.stdout).path
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self._child.append(fd)
            return stdin, fd, fd
        if scheme == "binary":
            out_r, out_w = self._pipe()
            err_r, err_w = self._pipe()
            self._child += [out_w, err_w]
            await self._start_logger(reaper, out_r, err_r, container_id, namespace)
            return stdin, out_w, err_w
        if scheme:
            raise ValueError(f"unsupported stdio scheme {scheme!r}")
        return stdin, self._output(self.stdout), self._output(self.stderr)

    def _output(self, path: str) -> int:
        if not path:
            return self._devnull()
        r, w = self._pipe()
        self._child.append(w)
        try:
            fifo = _open_fifo_writer(path)
        except BaseException:
            os.close(r)
            raise
        self._pumps.append(Pump(r, fifo))
        return w

    async def _start_logger(
        self, reaper: Reaper, out_r: int, err_r: int, container_id: str, namespace: str
    ) -> None:
        url = urllib.parse.urlsplit(self.stdout)
        argv = [url.path]
        for key, values in urllib.parse.parse_qs(url.query).items():
            for value in values:
                argv += [f"--{key}", value] if value else [f"--{key}"]
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        env = {**os.environ, "CONTAINER_ID": container_id, "CONTAINER_NAMESPACE": namespace}
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid, exited = reaper.spawn(
                argv, (null, null, null), env=env, extra_fds=(out_r, err_r, ready_w)
            )
        finally:
            for fd in (null, out_r, err_r, ready_w):
                os.close(fd)
        self._logger = (pid, exited)
        try:
            # The logger closes fd 5 once it is ready (or dies).
            ready: asyncio.Future[None] = asyncio.ensure_future(_wait_closed(ready_r))
            waiting: set[asyncio.Future[Any]] = {ready, exited}
            await asyncio.wait(waiting, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            if exited.done() and exited.result() != 0:
                raise OSError(f"logger {url.path} exited with status {exited.result()}")
            if not ready.done():
                ready.cancel()
                raise TimeoutError(f"logger {url.path} did not get ready in 10s")
        finally:
            with contextlib.suppress(OSError):
                os.close(ready_r)

    def attach_console(self, master: int) -> None:
        """Copy the terminal: stdin fifo -> master, master -> stdout fifo."""
        self.console = master
        if self.stdin:
            self._stdin_pump = Pump(_open_fifo_reader(self.stdin), master, close_dst=False)
        if self.stdout:
            self._pumps.append(Pump(master, _open_fifo_writer(self.stdout), close_src=False))

    def started(self) -> None:
        """The process holds its ends now: close ours, so its exit ends the copies."""
        for fd in self._child:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child.clear()

    # --- while it runs ----------------------------------------------------------------------

    def close_stdin(self) -> None:
        if self._stdin_pump is not None:
            self._stdin_pump.close()
            self._stdin_pump = None

    def resize(self, width: int, height: int) -> None:
        if self.console is None:
            raise ValueError("the process has no terminal")
        fcntl.ioctl(self.console, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def drained(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the output copies to reach EOF."""
        pending = [p.done for p in self._pumps if not p.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def close(self) -> None:
        self.started()
        self.close_stdin()
        for pump in self._pumps:
            pump.close()
        self._pumps.clear()
        if self.console is not None:
            with contextlib.suppress(OSError):
                os.close(self.console)
            self.console = None
        for fd in self._ours:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._ours.clear()


async def _wait_closed(fd: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data and not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
