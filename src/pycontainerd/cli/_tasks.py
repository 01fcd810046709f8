"""What ``pyctr run``, ``tasks start``, ``tasks exec`` and ``tasks attach`` share.

As ctr's ``tasks.NewTask`` and friends: the IO a task gets from the flags
(a terminal, ``--null-io``, ``--log-uri``, or FIFOs copied to and from
pyctr's own stdio, the task's stdin closed when pyctr's ends), signals
forwarded to the task while pyctr waits for it, and the terminal's size
passed on when it changes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from pycontainerd import cio, errdefs
from pycontainerd.cio.console import Console

if TYPE_CHECKING:
    from pycontainerd.client._sync.task import ExitStatus, Process

__all__ = [
    "forward_signals",
    "io_creator",
    "resize_with_console",
    "wait_interruptibly",
]

log = logging.getLogger("pycontainerd.cli")

# Signals ctr's ForwardAllSignals passes on: all but those the Go runtime or
# the terminal needs (SIGCHLD, SIGPIPE, SIGURG, SIGWINCH) and those that
# cannot be caught.
_NOT_FORWARDED = {
    signal.SIGCHLD,
    signal.SIGPIPE,
    signal.SIGURG,
    signal.SIGWINCH,
    signal.SIGKILL,
    signal.SIGSTOP,
}


def io_creator(
    *,
    console: Console | None,
    null_io: bool = False,
    log_uri: str = "",
    fifo_dir: str = "",
    stdin_closer: cio.StdinCloser | None = None,
) -> cio.Creator:
    """The IO ctr gives a task for these flags (``tasks.NewTask``)."""
    if console is not None:
        if null_io:
            raise errdefs.InvalidArgument("tty and null-io cannot be used together")
        return cio.new_creator(
            stdin=sys.stdin.buffer,
            stdout=sys.stdout.buffer,
            terminal=True,
            fifo_dir=fifo_dir or None,
        )
    if null_io:
        return cio.null_io
    if log_uri:
        return cio.log_uri(log_uri)
    return cio.new_creator(
        stdin=sys.stdin.buffer,
        stdout=sys.stdout.buffer,
        stderr=sys.stderr.buffer,
        fifo_dir=fifo_dir or None,
        on_stdin_eof=stdin_closer,
    )


@contextlib.contextmanager
def forward_signals(process: Process) -> Iterator[None]:
    """Pass the signals pyctr gets on to ``process`` while the block runs."""

    def forward(signum: int, frame: object) -> None:
        log.debug("forwarding signal %d", signum)
        try:
            process.kill(signum)
        except errdefs.ContainerdError as exc:
            log.error("forward signal %d: %s", signum, exc)

    previous: dict[signal.Signals, object] = {}
    for sig in signal.valid_signals():
        if not isinstance(sig, signal.Signals) or sig in _NOT_FORWARDED:
            continue
        with contextlib.suppress(OSError, ValueError):
            previous[sig] = signal.signal(sig, forward)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, handler)  # type: ignore[arg-type]


@contextlib.contextmanager
def resize_with_console(process: Process, console: Console) -> Iterator[None]:
    """Tell ``process`` the terminal's size now and on every SIGWINCH."""

    def resize(*_: object) -> None:
        try:
            width, height = console.size()
            process.resize(width, height)
        except (OSError, errdefs.ContainerdError) as exc:
            log.error("console resize: %s", exc)

    resize()
    previous = signal.signal(signal.SIGWINCH, resize)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def wait_interruptibly(wait: Callable[[], ExitStatus]) -> ExitStatus:
    """Run ``wait`` in a thread and block until it answers.

    The main thread waits on a queue, not in gRPC, so that the signal
    handlers above run the moment a signal comes.
    """
    answers: queue.SimpleQueue[ExitStatus | BaseException] = queue.SimpleQueue()

    def run() -> None:
        try:
            answers.put(wait())
        except BaseException as exc:
            answers.put(exc)

    threading.Thread(target=run, daemon=True, name="pyctr wait").start()
    while True:
        try:
            answer = answers.get(timeout=0.5)
        except queue.Empty:
            continue
        if isinstance(answer, BaseException):
            raise answer
        return answer
