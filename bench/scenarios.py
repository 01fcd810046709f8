"""The scenarios.  Each one registers itself; registration order is run order.

Every scenario runs the same client code against both daemons, so only the
server differs.  Add a scenario by writing a setup generator here (see
:mod:`bench.registry`).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.commands import ctr
from bench.registry import Measure, Target, scenario
from pycontainerd import errdefs, typeurl
from pycontainerd.api.runtime.v2.runc.options import oci_pb2 as runc_options
from pycontainerd.client import Client
from pycontainerd.oci import spec as oci

ROUND_TRIPS = 1000
CTR_RUNS = 20
INGEST_SIZE = 1 << 30
CONTAINERS = 5000


def _ensure_namespace(client: Client, name: str) -> None:
    with contextlib.suppress(errdefs.AlreadyExists):
        client.namespaces.create(name)


@scenario(
    "version-namespaces",
    f"{ROUND_TRIPS} x (Version + Namespaces.List) through the sync Client on one channel",
    ops=ROUND_TRIPS,
    unit="Version+List",
)
def version_namespaces(target: Target) -> Iterator[Measure]:
    with Client(target.address, target.namespace) as client:
        # Both daemons list the same single namespace.
        _ensure_namespace(client, target.namespace)

        def run() -> None:
            for _ in range(ROUND_TRIPS):
                client.version()
                client.namespaces.list()

        yield Measure(run)


@scenario(
    "ctr-version-namespaces",
    f"{CTR_RUNS} x (`ctr version` + `ctr namespaces ls`): whole Go client processes",
    ops=CTR_RUNS,
    unit="2 ctr runs",
)
def ctr_version_namespaces(target: Target) -> Iterator[Measure]:
    with Client(target.address, target.namespace) as client:
        _ensure_namespace(client, target.namespace)
    version = ctr(target, "version")
    ls = ctr(target, "namespaces", "ls")

    def run() -> None:
        for _ in range(CTR_RUNS):
            version()
            ls()

    yield Measure(run)


# --------------------------------------------------------------------------
# content-ingest-1g


@functools.cache
def _ingest_source() -> tuple[Path, str]:
    """A 1 GiB file (made once per run, shared by both daemons) and its digest.

    Random-ish: a 16 MiB random block written 64 times, each copy stamped
    with its index.  Nothing on the way compresses or deduplicates, so that
    is as good as 1 GiB of urandom and takes a second or two to make.
    """
    base = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir="/tmp"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    path = base / "blob"
    block = bytearray(os.urandom(16 << 20))
    h = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(INGEST_SIZE // len(block)):
            block[:8] = i.to_bytes(8, "big")
            f.write(block)
            h.update(block)
    return path, f"sha256:{h.hexdigest()}"


def _blob_path(target: Target, dgst: str) -> Path:
    """Where both daemons keep a committed blob (containerd's layout, which we share)."""
    algorithm, _, encoded = dgst.partition(":")
    return target.root / "io.containerd.content.v1.content" / "blobs" / algorithm / encoded


def _warm(path: Path) -> None:
    """Read ``path`` through so it sits in the page cache for every round alike."""
    with path.open("rb", buffering=0) as f:
        buf = bytearray(8 << 20)
        while f.readinto(buf):
            pass


@scenario(
    "content-ingest-1g",
    "`ctr content ingest` of a 1 GiB blob from a file on stdin (size and digest given)",
    ops=1,
    unit="ingest",
    rounds=5,  # ~15 s a pair of rounds
)
def content_ingest_1g(target: Target) -> Iterator[Measure]:
    source, dgst = _ingest_source()
    blob = _blob_path(target, dgst)
    with Client(target.address, target.namespace) as client:
        _ensure_namespace(client, target.namespace)

        def reset() -> None:
            # Each round must move the whole GiB again: a blob whose bytes are
            # still in the store (removed from the namespace, not yet collected)
            # is "shared" and needs none.  Remove the row, give the daemon's GC a
            # moment to take the bytes, then take them ourselves if it has not:
            # either way both daemons start a round with no row and no file.
            with contextlib.suppress(errdefs.NotFound):
                client.content.delete(dgst)
            deadline = time.monotonic() + 2.0
            while blob.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            blob.unlink(missing_ok=True)
            # Page cache alike for both: the last round's 1 GiB is written back
            # and dropped with its file; the source is cached.
            os.sync()
            _warm(source)

        yield Measure(
            ctr(
                target,
                "content",
                "ingest",
                "--expected-size",
                str(INGEST_SIZE),
                "--expected-digest",
                dgst,
                f"bench-ingest-{target.label}",
                stdin=source,
            ),
            reset=reset,
        )
        with contextlib.suppress(errdefs.NotFound):
            client.content.delete(dgst)
        blob.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# containers-ls-5000


def _create_containers(client: Client, namespace: str, count: int) -> None:
    """``count`` containers as ``ctr containers create --rootfs /rootfs ID`` makes them."""
    options = typeurl.marshal_any(runc_options.Options())

    def create(i: int) -> None:
        cid = f"bench-{i:05d}"
        spec = oci.generate(namespace, cid, oci.with_root_path("/rootfs"))
        client.new_container(
            cid, runtime="io.containerd.runc.v2", runtime_options=options, spec=spec
        )

    # A few in flight at once: each create is one durable write on either daemon.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(create, i) for i in range(count)]:
            f.result()


@scenario(
    "containers-ls-5000",
    f"`ctr containers ls` of {CONTAINERS} containers (ListStream, default specs)",
    ops=1,
    unit="ls",
)
def containers_ls_5000(target: Target) -> Iterator[Measure]:
    with Client(target.address, target.namespace) as client:
        _ensure_namespace(client, target.namespace)
        _create_containers(client, target.namespace, CONTAINERS)
    ls = ctr(target, "containers", "ls")
    lines = ls().stdout.count(b"\n")
    if lines != CONTAINERS + 1:  # the header, then one line a container
        raise RuntimeError(f"{target.label}: ctr containers ls printed {lines} lines")
    yield Measure(ls)
