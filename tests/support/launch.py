"""Run our daemon on paths a test chooses: to restart it on the same root, to
send it signals, or to watch it refuse to start.

``daemons.pycontainerd()`` gives every daemon a fresh temp base; these helpers
take the base (and any path in it) from the test instead, and keep one log
file per start so a restarted daemon's first run can still be read.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycontainerd.client import Client
from tests.support import daemons

__all__ = ["Layout", "assert_serving", "exit_of", "running", "start"]

_starts = itertools.count()


@dataclass(frozen=True)
class Layout:
    """Where one daemon keeps its things, all under ``base``."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def address(self) -> Path:
        return self.base / "pcd.sock"

    @property
    def config(self) -> Path:
        return self.base / "config.toml"

    def command(
        self,
        *,
        address: Path | None = None,
        root: Path | None = None,
        log_level: str | None = "debug",
    ) -> list[str]:
        """The daemon's command line; the config file is used if the test wrote one.

        ``log_level=None`` leaves the level to the config file.
        """
        return [
            str(daemons.VENV_BIN / "pycontainerd"),
            "--config",
            str(self.config),
            "--root",
            str(root or self.root),
            "--state",
            str(self.state),
            "--address",
            str(address or self.address),
            *(["--log-level", log_level] if log_level else []),
        ]


def start(layout: Layout, **kwargs: Any) -> daemons.RunningDaemon:
    """Start a daemon and wait until it serves; the caller must stop it."""
    log = layout.base / f"daemon-{next(_starts)}.log"
    command = layout.command(**kwargs)
    address = command[command.index("--address") + 1]
    root = Path(command[command.index("--root") + 1])
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        daemons.wait_serving(address, proc, log)
    except BaseException:
        daemons.stop(proc)
        raise
    return daemons.RunningDaemon(address, root, layout.state, proc, log)


@contextlib.contextmanager
def running(layout: Layout, **kwargs: Any) -> Iterator[daemons.RunningDaemon]:
    """A daemon serving for the duration of the block, stopped after it."""
    d = start(layout, **kwargs)
    try:
        yield d
    finally:
        daemons.stop(d.process)


def exit_of(
    layout: Layout, timeout: float = 30, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a daemon expected to exit by itself (a start-up failure)."""
    command = layout.command(**kwargs)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"daemon kept running instead of failing: {exc.stderr!r}") from None


def assert_serving(address: str | Path) -> None:
    """The daemon answers a Version call as pycontainerd."""
    with Client(str(address), timeout=10) as client:
        assert client.version().revision == "pycontainerd"
