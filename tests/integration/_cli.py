"""Run Debian's ``ctr`` or our ``pyctr`` against a daemon, the same way."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.daemons import VENV_BIN

__all__ = ["Cli", "table"]


class Cli:
    """``cli("containers", "ls")`` runs ``<tool> -a ADDRESS [-n NS] containers ls``."""

    def __init__(self, tool: str, address: str, namespace: str | None = None) -> None:
        if tool == "ctr":
            binary = shutil.which("ctr")
            if binary is None:
                pytest.fail("Debian's ctr is not installed (make deps installs containerd)")
        else:
            binary = str(VENV_BIN / "pyctr")
        self.tool = tool
        self.binary = binary
        self.address = address
        self.namespace = namespace

    def in_namespace(self, namespace: str) -> Cli:
        return Cli(self.tool, self.address, namespace)

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, "-a", self.address]
        if self.namespace:
            argv += ["-n", self.namespace]
        result = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if ok and result.returncode != 0:
            pytest.fail(f"{self.tool} {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def error(self, *args: str) -> str:
        """Run a command that must fail; its final ``<tool>: message`` line, unprefixed."""
        result = self(*args, ok=False)
        assert result.returncode == 1, result
        last = result.stderr.strip().splitlines()[-1]
        prefix = f"{self.tool}: "
        assert last.startswith(prefix), result.stderr
        return last[len(prefix) :]


def table(output: str) -> list[list[str]]:
    """A tab-aligned table as rows of cells, header first."""
    return [line.split() for line in output.splitlines() if line.strip()]
