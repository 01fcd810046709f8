"""Run one CNI plugin binary with a deadline and a cap on what it prints.

The plugin gets its configuration on stdin and the ``CNI_*`` variables in
its environment; its stdout is the result (or the spec's error object).
A plugin that prints more than ``max_output`` bytes, or runs longer than
``timeout`` seconds, is killed (with anything it started in its session)
and the call fails: ResourceExhausted, DeadlineExceeded.  stderr is kept
only for the message of a failure, its last :data:`STDERR_TAIL` bytes.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from pycontainerd import errdefs
from pycontainerd.cni.result import plugin_error

__all__ = ["STDERR_TAIL", "find_plugin", "run_plugin"]

#: The bytes of a plugin's stderr kept for an error message.
STDERR_TAIL = 64 * 1024
_CHUNK = 64 * 1024


def find_plugin(kind: str, bin_dirs: tuple[str, ...]) -> Path:
    """The executable named ``kind`` in the first of ``bin_dirs`` that has it."""
    for directory in bin_dirs:
        candidate = Path(directory, kind)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise errdefs.NotFound(f"failed to find plugin {errdefs.q(kind)} in path {list(bin_dirs)}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def run_plugin(
    path: Path,
    *,
    kind: str,
    command: str,
    env: Mapping[str, str],
    stdin: bytes,
    timeout: float,
    max_output: int,
) -> bytes:
    """Run ``path`` and return its stdout; a non-zero exit is the plugin's typed error."""
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(
            [str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            close_fds=True,
            # Its own session, so a kill reaches what it runs (iptables...).
            start_new_session=True,
        )
    except OSError as exc:
        raise errdefs.Unknown(f"cni plugin {kind} ({command}): cannot run {path}: {exc}") from exc
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdout = bytearray()
    stderr = bytearray()
    pending = memoryview(stdin)
    try:
        with selectors.DefaultSelector() as selector:
            os.set_blocking(proc.stdin.fileno(), False)
            if pending:
                selector.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
            selector.register(proc.stdout, selectors.EVENT_READ)
            selector.register(proc.stderr, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errdefs.DeadlineExceeded(
                        f"cni plugin {kind} ({command}) did not finish within {timeout:g}s"
                    )
                for key, _ in selector.select(remaining):
                    if key.fileobj is proc.stdin:
                        try:
                            written = os.write(proc.stdin.fileno(), pending[:_CHUNK])
                        except BrokenPipeError:
                            written = len(pending)  # it exited or closed stdin: its business
                        pending = pending[written:]
                        if not pending:
                            selector.unregister(proc.stdin)
                            proc.stdin.close()
                        continue
                    fd = key.fd
                    data = os.read(fd, _CHUNK)
                    if not data:
                        selector.unregister(key.fileobj)
                        continue
                    if key.fileobj is proc.stdout:
                        stdout += data
                        if len(stdout) > max_output:
                            raise errdefs.ResourceExhausted(
                                f"cni plugin {kind} ({command}) printed more than "
                                f"{max_output} bytes"
                            )
                    else:
                        stderr += data
                        del stderr[:-STDERR_TAIL]
            remaining = deadline - time.monotonic()
            try:
                exit_code = proc.wait(max(remaining, 0.001))
            except subprocess.TimeoutExpired as exc:
                raise errdefs.DeadlineExceeded(
                    f"cni plugin {kind} ({command}) did not finish within {timeout:g}s"
                ) from exc
    except BaseException:
        _kill(proc)
        raise
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
    if exit_code != 0:
        raise plugin_error(kind, command, exit_code, bytes(stdout), bytes(stderr))
    return bytes(stdout)
