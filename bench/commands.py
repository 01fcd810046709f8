"""Whole commands as measured callables: Debian's ``ctr`` against a target.

``ctr(target, "content", "ingest", ref, stdin=blob)`` returns a callable that
runs ``ctr -a ADDRESS -n NAMESPACE content ingest REF`` to completion and
raises :class:`CommandFailed` on a non-zero exit, so a scenario can yield
``Measure(ctr(...))`` and the harness times the whole process.
:func:`time_command` times one run directly.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.registry import Target

__all__ = ["CommandFailed", "command", "ctr", "ctr_argv", "ctr_binary", "time_command"]

Stdin = bytes | Path | None


class CommandFailed(RuntimeError):
    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[bytes]) -> None:
        self.argv = list(argv)
        self.returncode = proc.returncode
        self.stderr = proc.stderr.decode(errors="replace").strip()
        super().__init__(f"{' '.join(self.argv)}: exit {proc.returncode}: {self.stderr}")


def ctr_binary() -> str:
    path = shutil.which("ctr")
    if path is None:
        raise RuntimeError("ctr is not installed (Debian package containerd; make deps)")
    return path


def ctr_argv(target: Target, *args: str, namespace: str | None = None) -> list[str]:
    """``ctr -a ADDRESS -n NAMESPACE ARGS...`` for ``target``."""
    return [ctr_binary(), "-a", target.address, "-n", namespace or target.namespace, *args]


def _run(argv: Sequence[str], stdin: Stdin, timeout: float) -> subprocess.CompletedProcess[bytes]:
    if isinstance(stdin, Path):
        with stdin.open("rb") as f:
            proc = subprocess.run(argv, stdin=f, capture_output=True, timeout=timeout, check=False)
    else:
        proc = subprocess.run(
            argv,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        raise CommandFailed(argv, proc)
    return proc


def command(
    argv: Sequence[str], *, stdin: Stdin = None, timeout: float = 300
) -> Callable[[], subprocess.CompletedProcess[bytes]]:
    """A callable that runs ``argv`` (stdin from bytes or a file) and checks its exit."""
    frozen = list(argv)
    return lambda: _run(frozen, stdin, timeout)


def ctr(
    target: Target,
    *args: str,
    namespace: str | None = None,
    stdin: Stdin = None,
    timeout: float = 300,
) -> Callable[[], subprocess.CompletedProcess[bytes]]:
    """A callable running Debian's ``ctr -a <target> -n <namespace> ARGS...``."""
    return command(ctr_argv(target, *args, namespace=namespace), stdin=stdin, timeout=timeout)


def time_command(argv: Sequence[str], *, stdin: Stdin = None, timeout: float = 300) -> float:
    """Wall seconds of one checked run of ``argv``."""
    run = command(argv, stdin=stdin, timeout=timeout)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start
