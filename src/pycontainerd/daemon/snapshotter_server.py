"""Serve one core snapshotter over gRPC: a proxy plugin for a daemon.

``python -m pycontainerd.daemon.snapshotter_server --snapshotter native
--root DIR --address SOCK`` serves the Snapshots service on the unix socket
``SOCK`` with a ``native`` (or ``overlayfs``) snapshotter rooted at ``DIR``.
A daemon configured with ``[proxy_plugins.NAME] type = "snapshot"`` and
that address then offers it as snapshotter ``NAME``.  As containerd's
remote snapshotters do, the server ignores the request's ``snapshotter``
field and knows nothing of namespaces: the daemon's metadata layer scopes
the keys.  It serves through the daemon's edge and snapshots service,
so it is a daemon-side entry point, not part of :mod:`pycontainerd.snapshots`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pycontainerd.edge.api.snapshots import SnapshotsAPI
from pycontainerd.edge.grpc_server import GrpcServer
from pycontainerd.services.snapshots import SnapshotsService
from pycontainerd.snapshots import Snapshotter

__all__ = ["main", "serve"]

# Named: run with -m, the module is __main__.
log = logging.getLogger("pycontainerd.daemon.snapshotter_server")

#: Largest request accepted, as the daemon's default.
MAX_RECV = 16 << 20


class _AnyName(Mapping[str, Snapshotter]):
    """Every snapshotter name resolves to the one snapshotter served."""

    def __init__(self, sn: Snapshotter) -> None:
        self._sn = sn

    def __getitem__(self, name: str) -> Snapshotter:
        return self._sn

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _make(kind: str, root: Path) -> Snapshotter:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if kind == "native":
        from pycontainerd.snapshots.native import NativeSnapshotter

        return NativeSnapshotter(root)
    if kind == "overlayfs":
        from pycontainerd.snapshots.overlay import OverlaySnapshotter, check_supported

        check_supported(root)
        return OverlaySnapshotter(root)
    raise SystemExit(f"unknown snapshotter {kind!r} (native or overlayfs)")


async def serve(kind: str, root: Path, address: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    sn = _make(kind, root)
    api = SnapshotsAPI(SnapshotsService(_AnyName(sn), None))
    server = GrpcServer(api.methods(), max_recv_message_size=MAX_RECV)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address)
    old = os.umask(0o117)
    try:
        await server.start(address)
    finally:
        os.umask(old)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving %s snapshotter on %s", kind, address)
    try:
        await stop.wait()
    finally:
        await server.stop(1.0)
        await sn.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pycontainerd.daemon.snapshotter_server")
    parser.add_argument("--snapshotter", default="native", choices=("native", "overlayfs"))
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--address", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(serve(args.snapshotter, args.root, args.address))


if __name__ == "__main__":
    main()
