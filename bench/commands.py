"""Whole commands as measured callables: Debian's ``ctr`` or our ``pyctr`` against a target.

``ctr(target, "content", "ingest", ref, stdin=blob)`` returns a callable that
runs ``ctr -a ADDRESS -n NAMESPACE content ingest REF`` to completion and
raises :class:`CommandFailed` on a non-zero exit, so a scenario can yield
``Measure(ctr(...))`` and the harness times the whole process; ``pyctr(...)``
does the same with our CLI.  :func:`time_command` times one run directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bench.registry import Target

__all__ = [
    "CommandFailed",
    "command",
    "ctr",
    "ctr_argv",
    "ctr_binary",
    "pyctr",
    "pyctr_argv",
    "python_env",
    "time_command",
]

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


def pyctr_argv(target: Target, *args: str, namespace: str | None = None) -> list[str]:
    """``pyctr -a ADDRESS -n NAMESPACE ARGS...`` for ``target`` (the venv's pyctr)."""
    pyctr_path = str(Path(sys.executable).parent / "pyctr")
    return [pyctr_path, "-a", target.address, "-n", namespace or target.namespace, *args]


def python_env() -> dict[str, str]:
    """The environment for our Python programs (pyctr, the daemon): this one,
    with bytecode caching on.

    Installed, they load their modules from ``.pyc`` files; with
    ``PYTHONDONTWRITEBYTECODE`` set (as in some dev shells) every start would
    compile the source tree again and measure the compiler.
    """
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


Env = Mapping[str, str] | None


def _run(
    argv: Sequence[str], stdin: Stdin, timeout: float, env: Env = None
) -> subprocess.CompletedProcess[bytes]:
    if isinstance(stdin, Path):
        with stdin.open("rb") as f:
            proc = subprocess.run(
                argv, stdin=f, capture_output=True, timeout=timeout, check=False, env=env
            )
    else:
        proc = subprocess.run(
            argv,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    if proc.returncode != 0:
        raise CommandFailed(argv, proc)
    return proc


def command(
    argv: Sequence[str], *, stdin: Stdin = None, timeout: float = 300, env: Env = None
) -> Callable[[], subprocess.CompletedProcess[bytes]]:
    """A callable that runs ``argv`` (stdin from bytes or a file) and checks its exit."""
    frozen = list(argv)
    return lambda: _run(frozen, stdin, timeout, env)


def ctr(
    target: Target,
    *args: str,
    namespace: str | None = None,
    stdin: Stdin = None,
    timeout: float = 300,
) -> Callable[[], subprocess.CompletedProcess[bytes]]:
    """A callable running Debian's ``ctr -a <target> -n <namespace> ARGS...``."""
    return command(ctr_argv(target, *args, namespace=namespace), stdin=stdin, timeout=timeout)


def pyctr(
    target: Target,
    *args: str,
    namespace: str | None = None,
    stdin: Stdin = None,
    timeout: float = 300,
) -> Callable[[], subprocess.CompletedProcess[bytes]]:
    """A callable running our ``pyctr -a <target> -n <namespace> ARGS...``."""
    argv = pyctr_argv(target, *args, namespace=namespace)
    return command(argv, stdin=stdin, timeout=timeout, env=python_env())


def time_command(argv: Sequence[str], *, stdin: Stdin = None, timeout: float = 300) -> float:
    """Wall seconds of one checked run of ``argv``."""
    run = command(argv, stdin=stdin, timeout=timeout)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start
