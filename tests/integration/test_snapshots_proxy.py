"""A proxy snapshotter: ``python -m pycontainerd.daemon.snapshotter_server``
as a second process, configured as ``[proxy_plugins.myproxy]`` and driven
by Debian's ctr.

One behaviour suite then runs over every face of the Snapshotter contract:
the daemon's namespaced overlayfs and native snapshotters and its proxy
snapshotter through :class:`AsyncClient`, over the socket and in-process,
and the serve process directly through :class:`ProxySnapshotter` (a core
snapshotter, no namespaces).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.client import AsyncClient
from pycontainerd.daemon.proxies import ProxySnapshotter
from pycontainerd.snapshots import Info, Kind, Snapshotter
from tests.integration._cli import Cli, table
from tests.support import daemons, inprocess
from tests.unit._meta import run

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def serving() -> Iterator[tuple[Path, str]]:
    """The serve process (native snapshotter); yields its root and socket."""
    with daemons.temp_base("pxy-") as base:
        sock = str(base / "snap.sock")
        root = base / "root"
        log = base / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pycontainerd.daemon.snapshotter_server",
                    "--snapshotter",
                    "native",
                    "--root",
                    str(root),
                    "--address",
                    sock,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 15
            while not os.path.exists(sock):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "serve did not listen"
                time.sleep(0.05)
            yield root, sock
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def proxy() -> Iterator[tuple[Path, str]]:
    with serving() as p:
        yield p


def _config(sock: str) -> str:
    return f'version = 2\n[proxy_plugins.myproxy]\n  type = "snapshot"\n  address = "{sock}"\n'


def test_ctr_drives_a_proxy_snapshotter(proxy: tuple[Path, str]) -> None:
    root, sock = proxy
    with daemons.pycontainerd(config=_config(sock)) as d:
        ctr = Cli("ctr", d.address)
        plugins = table(ctr("plugins", "ls").stdout)
        assert ["io.containerd.snapshotter.v1", "myproxy", "-", "ok"] in plugins

        def snap(*args: str) -> str:
            return ctr("snapshots", "--snapshotter", "myproxy", *args).stdout

        snap("prepare", "work")
        snap("commit", "base", "work")
        snap("prepare", "child", "base")
        assert table(snap("ls")) == [
            ["KEY", "PARENT", "KIND"],
            ["base", "Committed"],
            ["child", "base", "Active"],
        ]
        # The serve process holds them, under the daemon's namespaced keys.
        (line,) = snap("mounts", "/mnt", "child").splitlines()
        assert line.startswith(f"mount -t bind {root}/snapshots/")
        ns_table = table(
            Cli("ctr", d.address, "other")("snapshots", "--snapshotter", "myproxy", "ls").stdout
        )
        assert ns_table == [["KEY", "PARENT", "KIND"]]
        err = ctr.error("snapshots", "--snapshotter", "myproxy", "rm", "base")
        assert (
            err == 'failed to remove "base": cannot remove snapshot with child: failed precondition'
        )
        snap("rm", "child")
        snap("rm", "base")
        ctr("leases", "create", "--id", "tick")
        ctr("leases", "rm", "--sync", "tick")
        assert list((root / "snapshots").iterdir()) == []


# --------------------------------------------------------------------------
# One suite, every face


async def _suite(sn: Snapshotter, p: str) -> None:
    """The contract's behaviours, with keys under the prefix ``p``."""
    mounts = await sn.prepare(f"{p}w", "", {"a": "1"})
    assert mounts and mounts[0].source
    assert (await sn.stat(f"{p}w")).kind == Kind.ACTIVE
    with pytest.raises(errdefs.AlreadyExists):
        await sn.prepare(f"{p}w")
    with pytest.raises(errdefs.NotFound):
        await sn.prepare(f"{p}x", f"{p}nope")
    await sn.commit(f"{p}c", f"{p}w")
    with pytest.raises(errdefs.NotFound):
        await sn.stat(f"{p}w")
    committed = await sn.stat(f"{p}c")
    assert (committed.kind, committed.parent) == (Kind.COMMITTED, "")
    await sn.prepare(f"{p}k", f"{p}c")
    await sn.view(f"{p}v", f"{p}c")
    with pytest.raises(errdefs.FailedPrecondition):
        await sn.commit(f"{p}c2", f"{p}v")
    mine = [i async for i in sn.walk() if i.name.startswith(p)]
    assert sorted((i.name, i.parent, i.kind) for i in mine) == [
        (f"{p}c", "", Kind.COMMITTED),
        (f"{p}k", f"{p}c", Kind.ACTIVE),
        (f"{p}v", f"{p}c", Kind.VIEW),
    ]
    views = [i.name async for i in sn.walk("kind==view") if i.name.startswith(p)]
    assert views == [f"{p}v"]
    updated = await sn.update(Info(f"{p}k", Kind.UNKNOWN, labels={"b": "2"}), ["labels.b"])
    assert updated.labels.get("b") == "2"
    assert (await sn.usage(f"{p}c")).inodes >= 0
    assert (await sn.mounts(f"{p}k"))[0].source
    with pytest.raises(errdefs.FailedPrecondition):
        await sn.remove(f"{p}c")
    for key in ("k", "v", "c"):
        await sn.remove(f"{p}{key}")
    assert [i async for i in sn.walk() if i.name.startswith(p)] == []


@pytest.fixture(scope="module")
def faces() -> Iterator[tuple[str, str]]:
    """A serve process and a daemon using it: (daemon address, serve socket)."""
    with serving() as (_, sock), daemons.pycontainerd(config=_config(sock)) as d:
        yield d.address, sock


@pytest.mark.parametrize("name", ["overlayfs", "native", "myproxy"])
def test_suite_through_the_daemon(faces: tuple[str, str], name: str) -> None:
    async def go() -> None:
        async with AsyncClient(faces[0], "suite") as client, client.lease():
            # Under a lease: collections (other tests remove snapshots) keep them.
            await _suite(client.snapshot_service(name), f"{uuid.uuid4().hex[:6]}-")

    run(go())


@pytest.mark.parametrize("name", ["overlayfs", "native", "myproxy"])
def test_suite_through_the_daemon_in_process(name: str) -> None:
    """The same, with the daemon embedded in this process and called without
    its socket; a serve process of its own (see below) backs its proxy."""

    async def go(config: str) -> None:
        async with (
            inprocess.serving(config) as server,
            AsyncClient(str(server.address), "suite", channel=server.channel()) as client,
            client.lease(),
        ):
            await _suite(client.snapshot_service(name), f"{uuid.uuid4().hex[:6]}-")

    with serving() as (_, sock):
        run(go(_config(sock)))


def test_suite_on_the_serve_process_directly() -> None:
    # A serve process of its own: a daemon's collector removes whatever
    # its proxy's backend holds that the daemon has no record of.
    async def go(sock: str) -> None:
        sn = ProxySnapshotter(sock, "direct")
        try:
            await _suite(sn, f"{uuid.uuid4().hex[:6]}-")
        finally:
            await sn.close()

    with serving() as (_, sock):
        run(go(sock))
