"""A task's IO on the client side: FIFOs, copying, and the creators.

As containerd's ``cio`` package: a task is created with the paths of its
stdin, stdout and stderr (a :class:`Config`).  The client usually makes
them FIFOs in a fresh directory (``<dir>/<id>-stdin``, ``-stdout``,
``-stderr``, a :class:`FIFOSet`) and copies between them and the caller's
streams; the shim opens the other ends.  Instead of FIFOs a task may log
to a ``file://`` or ``binary://`` URI, or have no IO at all.

A *creator* (``Callable[[str], IO]``) makes the IO for a process id when
the task or exec is created; an *attach* (``Callable[[FIFOSet], IO]``)
reconnects to the FIFOs of a task that already runs.  An :class:`IO` is
the running copy: ``config`` is what goes in the request, ``wait()``
blocks until the output is drained, ``cancel()`` gives up on FIFOs the
shim never opened, ``close()`` releases everything and removes the FIFOs.

Copying runs in threads, one per stream, as Go's runs in goroutines, so
the same IO serves the sync and the async client; the async client waits
for it from a worker thread.  A thread opens its FIFO with a blocking
``open``, which returns when the shim opens the other end: that is how a
copy knows the shim is there, and what :meth:`IO.cancel` interrupts.
Memory per stream is bounded by one 32 KiB buffer.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO as _FileIO
from typing import Any, Protocol

from pycontainerd import errdefs
from pycontainerd.cio import uri as _uri

__all__ = [
    "DEFAULT_FIFO_DIR",
    "IO",
    "Attach",
    "Config",
    "Creator",
    "FIFOSet",
    "StdinCloser",
    "binary_io",
    "load_fifos",
    "log_file",
    "log_uri",
    "new_attach",
    "new_creator",
    "new_fifo_set_in_dir",
    "null_io",
    "stdio",
    "terminal",
]

log = logging.getLogger(__name__)

#: Where FIFO directories are made unless a creator is told otherwise
#: (containerd's client uses ``/run/containerd/fifo``; ours keeps to its own
#: state directory, and the shim only needs to reach the path).
DEFAULT_FIFO_DIR = "/run/pycontainerd/fifo"

_BUFSIZE = 32 << 10


@dataclass(frozen=True, slots=True)
class Config:
    """The IO paths a create or exec request carries ("" for none)."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


class IO(Protocol):
    """A process's IO as the client holds it (containerd's ``cio.IO``)."""

    @property
    def config(self) -> Config: ...

    def cancel(self) -> None:
        """Stop waiting for FIFOs the shim has not opened (it never will)."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the output is copied; False if ``timeout`` passed first."""

    def close(self) -> None:
        """Release the FIFOs (and remove them) and the caller's side."""


Creator = Callable[[str], IO]
"""Makes the IO of a new process, given the process id."""


@dataclass(frozen=True, slots=True)
class FIFOSet:
    """FIFO paths and how to remove them when the IO is closed."""

    config: Config
    closer: Callable[[], None] | None = None

    def close(self) -> None:
        if self.closer is not None:
            self.closer()


Attach = Callable[[FIFOSet], IO]
"""Reconnects to the FIFOs of a process that exists (``Task.attach``)."""


def new_fifo_set_in_dir(root: str | os.PathLike[str], id: str, terminal: bool) -> FIFOSet:
    """Paths for ``id``'s FIFOs in a new private directory under ``root``.

    The names are containerd's (``<id>-stdin`` ...); the FIFOs themselves
    are made when a copy opens them.  Closing the set removes the directory.
    """
    if not id or "/" in id or id in (".", ".."):
        raise errdefs.InvalidArgument(f"process id {errdefs.q(id)} cannot name a FIFO")
    root_path = Path(root)
    root_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(dir=root_path))  # mode 0700, as os.MkdirTemp

    def remove() -> None:
        shutil.rmtree(directory, ignore_errors=True)

    return FIFOSet(
        Config(
            stdin=str(directory / f"{id}-stdin"),
            stdout=str(directory / f"{id}-stdout"),
            stderr=str(directory / f"{id}-stderr"),
            terminal=terminal,
        ),
        remove,
    )


def load_fifos(config: Config) -> FIFOSet:
    """The FIFO set of an existing process (from its task record): closing it
    removes those FIFOs, and their directories when that leaves them empty."""

    def remove() -> None:
        paths = [p for p in (config.stdin, config.stdout, config.stderr) if p]
        for path in paths:
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(os.lstat(path).st_mode):
                    os.unlink(path)
        for directory in {os.path.dirname(p) for p in paths}:
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only if empty

    return FIFOSet(config, remove)


# --- copying -------------------------------------------------------------------------


class _Cancel:
    """A flag threads can also poll for: a pipe that becomes readable when set."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        self.event = threading.Event()

    @property
    def fd(self) -> int:
        return self._read_fd

    def set(self) -> None:
        if not self.event.is_set():
            self.event.set()
            with contextlib.suppress(OSError):
                os.write(self._write_fd, b"x")

    def close(self) -> None:
        self.set()
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _mkfifo(path: str) -> None:
    try:
        os.mkfifo(path, 0o700)
    except FileExistsError:
        if not stat.S_ISFIFO(os.lstat(path).st_mode):
            raise errdefs.AlreadyExists(f"{errdefs.q(path)} exists and is no FIFO") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_chunk(stream: Any, cancel: _Cancel) -> bytes:
    """The next chunk of the caller's stream; b"" at its end or when cancelled."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:
        read1 = getattr(stream, "read1", None)
        data = read1(_BUFSIZE) if read1 is not None else stream.read(_BUFSIZE)
        return bytes(data or b"")
    # Poll with the cancel pipe, so that closing the IO ends a copy that
    # waits on a terminal nobody types into.
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    poller.register(cancel.fd, select.POLLIN)
    while True:
        ready = dict(poller.poll())
        if cancel.fd in ready:
            return b""
        if fd in ready:
            try:
                return os.read(fd, _BUFSIZE)
            except BlockingIOError:
                continue


class _FifoCopy:
    """The copies of one process's FIFOs (containerd's ``copyIO``)."""

    def __init__(
        self,
        fifos: FIFOSet,
        stdin: Any | None,
        stdout: Any | None,
        stderr: Any | None,
        on_stdin_eof: Callable[[], None] | None = None,
    ) -> None:
        self._fifos = fifos
        self._cancel = _Cancel()
        self._lock = threading.Lock()
        self._pending: set[str] = set()  # FIFOs whose open has not returned
        self._output: list[threading.Thread] = []
        self._closed = False
        cfg = fifos.config
        try:
            for path, stream in ((cfg.stdin, stdin), (cfg.stdout, stdout), (cfg.stderr, stderr)):
                if path and (stream is not None) and not (path == cfg.stderr and cfg.terminal):
                    _mkfifo(path)
        except BaseException:
            self._cancel.close()
            raise
        if cfg.stdin and stdin is not None:
            self._start(self._copy_in, cfg.stdin, stdin, on_stdin_eof, output=False)
        if cfg.stdout and stdout is not None:
            self._start(self._copy_out, cfg.stdout, stdout, output=True)
        if cfg.stderr and stderr is not None and not cfg.terminal:
            self._start(self._copy_out, cfg.stderr, stderr, output=True)

    @property
    def config(self) -> Config:
        return self._fifos.config

    def _start(self, target: Callable[..., None], *args: Any, output: bool) -> None:
        with self._lock:
            self._pending.add(args[0])
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"cio {args[0]}")
        thread.start()
        if output:
            self._output.append(thread)

    def _open(self, path: str, flags: int) -> int | None:
        """Open a FIFO, blocking until the shim opens its end; None if cancelled."""
        if self._cancel.event.is_set():
            return None
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
        except OSError as exc:
            if not self._cancel.event.is_set():
                log.warning("opening FIFO %s failed: %s", path, exc)
            return None
        finally:
            with self._lock:
                self._pending.discard(path)
        if self._cancel.event.is_set():
            os.close(fd)
            return None
        return fd

    def _copy_out(self, path: str, sink: Any) -> None:
        fd = self._open(path, os.O_RDONLY)
        if fd is None:
            return
        flush = getattr(sink, "flush", None)
        try:
            while data := os.read(fd, _BUFSIZE):
                sink.write(data)
                if flush is not None:
                    flush()
        except (OSError, ValueError) as exc:  # the caller closed its stream
            log.debug("copying from %s stopped: %s", path, exc)
        finally:
            os.close(fd)

    def _copy_in(self, path: str, source: Any, on_eof: Callable[[], None] | None) -> None:
        fd = self._open(path, os.O_WRONLY)
        if fd is None:
            return
        try:
            while data := _read_chunk(source, self._cancel):
                _write_all(fd, data)
        except (OSError, ValueError) as exc:  # the process closed its stdin
            log.debug("copying to %s stopped: %s", path, exc)
        finally:
            os.close(fd)
        if on_eof is not None and not self._cancel.event.is_set():
            try:
                on_eof()
            except Exception:
                log.debug("closing stdin of %s failed", path, exc_info=True)

    def cancel(self) -> None:
        """Unblock the opens still waiting for the shim and end their copies."""
        self._cancel.set()
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return
            for path in pending:
                # Become the missing peer for an instant: the blocked open returns,
                # sees the cancel, and its thread ends.  A non-blocking open of
                # the write end fails (ENXIO) until the reader is really waiting.
                for flags in (os.O_WRONLY | os.O_NONBLOCK, os.O_RDONLY | os.O_NONBLOCK):
                    try:
                        os.close(os.open(path, flags | os.O_CLOEXEC))
                    except OSError as exc:
                        if exc.errno not in (errno.ENXIO, errno.ENOENT):
                            raise
            self._cancel.event.wait(0.001)

    def wait(self, timeout: float | None = None) -> bool:
        for thread in self._output:
            thread.join(timeout)
            if thread.is_alive():
                return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.cancel()
        self._cancel.close()
        self._fifos.close()


class _PathsOnly:
    """IO whose paths the shim handles alone: a log URI, or nothing at all."""

    def __init__(self, config: Config) -> None:
        self._config = config

    @property
    def config(self) -> Config:
        return self._config

    def cancel(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass


class StdinCloser:
    """Closes a process's stdin (``close_io``) when the caller's stdin ends.

    Pass it as ``on_stdin_eof`` and :meth:`bind` the process once created:
    containerd's shims keep the stdin FIFO open for later attaches, so the
    process sees EOF only when asked with ``CloseIO`` (ctr's
    ``stdinCloser``).  The stream may end before the process exists (stdin
    is ``/dev/null``); the close then happens at :meth:`bind`.  An async
    process's ``close_io`` is run on the loop :meth:`bind` was called on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: Any = None
        self._loop: Any = None
        self._ended = False

    def __call__(self) -> None:
        with self._lock:
            self._ended = True
            process = self._process
        if process is not None:
            self._close(process)

    def bind(self, process: Any) -> None:
        """Close ``process``'s stdin when (or, if it has already, now) the stream ends."""
        import asyncio

        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        with self._lock:
            self._process = process
            ended = self._ended
        if ended:
            self._close(process)

    def _close(self, process: Any) -> None:
        import asyncio
        import inspect

        try:
            result = process.close_io(stdin=True)
            if inspect.isawaitable(result):
                if self._loop is None:
                    raise RuntimeError("an async process needs bind() on its loop")
                coro: Any = result
                if _on_loop(self._loop):
                    self._loop.create_task(coro)
                else:
                    asyncio.run_coroutine_threadsafe(coro, self._loop)
        except Exception as exc:
            log.debug("closing the stdin of %s: %s", getattr(process, "id", "?"), exc)


def _on_loop(loop: Any) -> bool:
    import asyncio

    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Discard:
    """An output stream that keeps nothing."""

    def write(self, data: bytes) -> int:
        return len(data)


# --- creators --------------------------------------------------------------------------

Stream = _FileIO[bytes] | Any
"""A binary file-like object: ``read``/``read1`` for stdin, ``write`` for output."""


def new_creator(
    *,
    stdin: Stream | None = None,
    stdout: Stream | None = None,
    stderr: Stream | None = None,
    terminal: bool = False,
    fifo_dir: str | os.PathLike[str] | None = None,
    on_stdin_eof: Callable[[], None] | None = None,
) -> Creator:
    """FIFOs copied to and from the given binary streams (containerd's
    ``NewCreator(WithStreams(...))``); a stream left out gets no FIFO (but
    an output stream left out beside a given one is discarded instead).

    With ``terminal`` the process gets a pty: its output all comes on
    stdout, and stderr is not used.  ``on_stdin_eof`` runs when ``stdin``
    ends, as ctr closes the task's stdin then.
    """

    # containerd's runc shims open stdout and stderr together or neither
    # ("opening file "" failed"): with one output stream given, the other
    # gets a FIFO too, drained into nothing.
    out, err = stdout, stderr
    if not terminal and (out is None) != (err is None):
        out, err = out or _Discard(), err or _Discard()

    def create(id: str) -> IO:
        fifos = new_fifo_set_in_dir(fifo_dir or DEFAULT_FIFO_DIR, id, terminal)
        cfg = fifos.config
        fifos = FIFOSet(
            Config(
                stdin=cfg.stdin if stdin is not None else "",
                stdout=cfg.stdout if out is not None else "",
                stderr=cfg.stderr if err is not None else "",
                terminal=terminal,
            ),
            fifos.closer,
        )
        try:
            return _FifoCopy(fifos, stdin, out, err, on_stdin_eof)
        except BaseException:
            fifos.close()
            raise

    return create


def stdio(
    *, terminal: bool = False, fifo_dir: str | os.PathLike[str] | None = None
) -> Creator:
    """This program's own stdin, stdout and stderr (containerd's ``WithStdio``)."""
    return new_creator(
        stdin=sys.stdin.buffer,
        stdout=sys.stdout.buffer,
        stderr=None if terminal else sys.stderr.buffer,
        terminal=terminal,
        fifo_dir=fifo_dir,
    )


def terminal(
    stdin: Stream | None = None,
    stdout: Stream | None = None,
    *,
    fifo_dir: str | os.PathLike[str] | None = None,
) -> Creator:
    """A pty for the process, its input and output copied from and to the
    given streams (default: this program's own, usually its terminal)."""
    return new_creator(
        stdin=sys.stdin.buffer if stdin is None else stdin,
        stdout=sys.stdout.buffer if stdout is None else stdout,
        terminal=True,
        fifo_dir=fifo_dir,
    )


def null_io(id: str) -> IO:
    """No IO: the shim sends output to /dev/null (containerd's ``NullIO``)."""
    return _PathsOnly(Config())


def log_uri(uri: str) -> Creator:
    """Output to a log URI the shim handles (``file:///path``, ``binary:///path?k=v``)."""
    _uri.parse_log_uri(uri)  # fail here, not in the shim

    def create(id: str) -> IO:
        return _PathsOnly(Config(stdout=uri, stderr=uri))

    return create


def log_file(path: str | os.PathLike[str]) -> Creator:
    """Both output streams appended to the file at ``path`` by the shim."""
    return log_uri(_uri.log_uri("file", path))


def binary_io(binary: str | os.PathLike[str], args: Mapping[str, str] | None = None) -> Creator:
    """Both output streams piped by the shim to the logging program ``binary``
    (started with ``args`` in its environment-like query)."""
    return log_uri(_uri.log_uri("binary", binary, args))


def new_attach(
    *,
    stdin: Stream | None = None,
    stdout: Stream | None = None,
    stderr: Stream | None = None,
    on_stdin_eof: Callable[[], None] | None = None,
) -> Attach:
    """Copies to and from the FIFOs of a process that already exists."""

    def attach(fifos: FIFOSet) -> IO:
        cfg = fifos.config
        return _FifoCopy(
            fifos,
            stdin if cfg.stdin else None,
            stdout if cfg.stdout else None,
            stderr if cfg.stderr else None,
            on_stdin_eof,
        )

    return attach
