"""Our daemon embedded in the test process, for the client suites' in-process face.

A real :class:`~pycontainerd.daemon.server.Server` with its root, state and
socket under a short temp dir, as :mod:`tests.support.daemons` runs one in a
subprocess; the clients reach it through its in-process channel instead of
the socket.  :func:`serving` runs it on the caller's event loop (for
``AsyncClient``), :func:`in_thread` on a loop of its own in a thread (for the
sync ``Client``, which may not block the daemon's loop).  It still listens
on its socket, so ``ctr`` can look at what a test made through the channel.

Like ``daemons``, this module does not import pytest.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from pycontainerd.daemon.config import Config, parse
from pycontainerd.daemon.embedded import EmbeddedDaemon
from pycontainerd.daemon.server import Server, replace
from tests.support import daemons


def config_under(base: Path, config: str | None = None) -> Config:
    """``config`` (TOML; None: the defaults) with root, state and socket under ``base``."""
    parsed = parse(config) if config is not None else Config()
    return replace(
        parsed,
        root=str(base / "root"),
        state=str(base / "state"),
        grpc_address=str(base / "d.sock"),
    )


@contextlib.asynccontextmanager
async def serving(config: str | None = None) -> AsyncIterator[Server]:
    """A started daemon on the running loop; stopped and removed after."""
    with daemons.temp_base("ipd-") as base:
        server = Server(config_under(base, config))
        try:
            await server.start()
            yield server
        finally:
            await server.stop()


@contextlib.contextmanager
def in_thread(config: str | None = None) -> Iterator[EmbeddedDaemon]:
    """A started daemon serving from a thread; stopped and removed after."""
    with daemons.temp_base("ipd-") as base, EmbeddedDaemon(config_under(base, config)) as daemon:
        yield daemon
