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
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from isal import isal_zlib

from bench.commands import (
    command,
    ctr,
    ctr_argv,
    ctr_binary,
    pyctr,
    pyctr_argv,
    python_env,
)
from bench.registry import Measure, Target, scenario
from bench.runner import OURS, process_cpu
from pycontainerd import errdefs, typeurl
from pycontainerd.api.runtime.v2.runc.options import oci_pb2 as runc_options
from pycontainerd.client import Client
from pycontainerd.oci import spec as oci
from tests.support import daemons

ROUND_TRIPS = 1000
CTR_RUNS = 20
CLI_RUNS = 20
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
# cli-help, cli-version, daemon-startup: how long a process takes to be useful


def _repeat(run: Callable[[], object], times: int) -> Callable[[], None]:
    def repeated() -> None:
        for _ in range(times):
            run()

    return repeated


@scenario(
    "cli-help",
    f"{CLI_RUNS} x `pyctr --help` beside {CLI_RUNS} x `ctr --help`: CLI start-up alone",
    ops=CLI_RUNS,
    unit="--help",
)
def cli_help(target: Target) -> Iterator[Measure]:
    if target.label == OURS:
        argv = [pyctr_argv(target)[0], "--help"]
        # One untimed run first leaves the .pyc files an installed pyctr has.
        command(argv, env=python_env())()
        yield Measure(_repeat(command(argv, env=python_env()), CLI_RUNS))
    else:
        yield Measure(_repeat(command([ctr_binary(), "--help"]), CLI_RUNS))


@scenario(
    "cli-version",
    f"{CLI_RUNS} x `pyctr version` against pycontainerd beside {CLI_RUNS} x `ctr version` "
    "against containerd: start-up, dial, Version and Introspection.Server",
    ops=CLI_RUNS,
    unit="version",
)
def cli_version(target: Target) -> Iterator[Measure]:
    run = pyctr(target, "version") if target.label == OURS else ctr(target, "version")
    out = run().stdout  # untimed; also writes pyctr's .pyc files
    if b"Server:" not in out:
        raise RuntimeError(f"{target.label}: version printed no server part:\n{out.decode()}")
    yield Measure(_repeat(run, CLI_RUNS))


def _wait_answering(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return as soon as the daemon's health check says SERVING: polled every
    2 ms (the 50 ms of ``daemons.wait_serving`` would swamp a start-up)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{log.read_text()}")
        if os.path.exists(address):
            with (
                grpc.insecure_channel(f"unix://{address}") as channel,
                contextlib.suppress(grpc.RpcError),
            ):
                resp = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        time.sleep(0.002)
    raise RuntimeError(f"daemon did not answer in 30 s:\n{log.read_text()}")


@scenario(
    "daemon-startup",
    "spawn the daemon on an empty root until its socket answers a health check "
    "(server CPU: the new daemon's, up to then)",
    ops=1,
    unit="start",
)
def daemon_startup(target: Target) -> Iterator[Measure]:
    # The harness's daemon only names the side; each round starts one of its own.
    with daemons.temp_base("bst-") as base:
        rounds = iter(range(1_000_000))
        running: list[subprocess.Popen[bytes]] = []
        cpu_at_ready: list[float] = []
        where: list[Path] = []

        def stop_last() -> None:
            while running:
                daemons.stop(running.pop())
            for old in where:
                subprocess.run(["umount", "-R", "-l", str(old)], capture_output=True, check=False)
                shutil.rmtree(old, ignore_errors=True)
            where.clear()

        def reset() -> None:
            stop_last()
            round_dir = base / f"r{next(rounds)}"
            round_dir.mkdir()
            where.append(round_dir)
            os.sync()  # the last round's writes are not this round's to wait for

        def run() -> None:
            round_dir = where[-1]
            if target.label == OURS:
                address = str(round_dir / "p.sock")
                argv = daemons.pycontainerd_args(round_dir, address, log_level="info")
            else:
                address = str(round_dir / "c.sock")
                argv = daemons.containerd_args(round_dir, address)
            log = round_dir / "daemon.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=python_env()
                )
            running.append(process)
            _wait_answering(address, process, log)
            cpu_at_ready.append(process_cpu(process.pid))

        yield Measure(run, reset=reset, cpu=lambda: cpu_at_ready[-1])
        stop_last()


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


# --------------------------------------------------------------------------
# import-unpack

IMPORT_CACHE = Path("/var/tmp/pycontainerd-bench/import-unpack")
IMPORT_IMAGE = "docker.io/library/bench-import-unpack:latest"
# Bump when the generated tree changes, so a stale cache is rebuilt.
IMPORT_TREE_VERSION = 1
# (count, smallest, largest) per size class: ~60,000 files, ~1 GiB in all.
IMPORT_FILES = ((52_000, 512, 8 << 10), (7_600, 16 << 10, 96 << 10), (400, 512 << 10, 1536 << 10))
IMPORT_DIRS = 600
IMPORT_SYMLINKS = 500


def _text_pool(rng: random.Random, size: int) -> bytes:
    """Bytes that compress about 2:1 with gzip, like source trees and binaries mixed:
    random draws from a 24-letter alphabet with newlines, not runs or repeats."""
    alphabet = b"abcdefghijklmnopqrstuvw\n"
    return bytes(alphabet[b % 24] for b in rng.randbytes(size))


def _layer_members(rng: random.Random) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """The tree, as tar members in a stable order: dirs, files, symlinks."""
    pool = _text_pool(rng, 16 << 20)
    dirs = [f"d{i // 30:02d}/s{i % 30:02d}" for i in range(IMPORT_DIRS)]
    for top in sorted({d.split("/")[0] for d in dirs}):
        yield _tar_dir(top), None
    for d in dirs:
        yield _tar_dir(d), None
    n = 0
    for count, low, high in IMPORT_FILES:
        for _ in range(count):
            size = rng.randint(low, high)
            start = rng.randrange(0, len(pool) - size)
            info = tarfile.TarInfo(f"{dirs[n % len(dirs)]}/f{n:05d}")
            info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
            yield info, pool[start : start + size]
            n += 1
    for i in range(IMPORT_SYMLINKS):
        info = tarfile.TarInfo(f"{dirs[i % len(dirs)]}/link{i:03d}")
        info.type, info.linkname, info.mtime = tarfile.SYMTYPE, f"f{i:05d}", 1_700_000_000
        yield info, None


def _tar_dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
    return info


class _LayerWriter:
    """Gzip a tar stream into ``out`` (isal, level 2), hashing the
    uncompressed bytes on the way: the diff ID."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self._gz: Any = isal_zlib.compressobj(2, isal_zlib.DEFLATED, 31)

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.out.write(self._gz.compress(data))
        return len(data)

    def close(self) -> None:
        self.out.write(self._gz.flush())


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


@functools.cache
def _import_archive() -> Path:
    """The OCI archive of the tree: made once, cached across runs (~1 minute)."""
    archive = IMPORT_CACHE / f"image-v{IMPORT_TREE_VERSION}.tar"
    if archive.exists():
        return archive
    IMPORT_CACHE.mkdir(parents=True, exist_ok=True)
    layer = IMPORT_CACHE / "layer.tar.gz.tmp"
    with layer.open("wb") as raw:
        writer = _LayerWriter(raw)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for info, data in _layer_members(random.Random(IMPORT_TREE_VERSION)):
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        writer.close()
    diff_id = f"sha256:{writer.sha.hexdigest()}"
    layer_digest, layer_size = _file_digest(layer), layer.stat().st_size
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
    ).encode()
    manifest_digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {"io.containerd.image.name": IMPORT_IMAGE},
                }
            ],
        }
    ).encode()
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as out:
        _add_bytes(out, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(out, "index.json", index)
        _add_bytes(out, f"blobs/sha256/{config_digest[7:]}", config)
        _add_bytes(out, f"blobs/sha256/{manifest_digest[7:]}", manifest)
        out.add(layer, f"blobs/sha256/{layer_digest[7:]}")
    tmp.rename(archive)
    layer.unlink()
    return archive


@scenario(
    "import-unpack",
    "`ctr images import` (import + unpack into overlayfs) of a one-layer gzip OCI archive: "
    f"~{sum(c for c, _, _ in IMPORT_FILES):,} files, ~1 GiB",
    ops=1,
    unit="import",
    rounds=3,  # tens of seconds a round
)
def import_unpack(target: Target) -> Iterator[Measure]:
    archive = _import_archive()
    with Client(target.address, target.namespace) as client:
        _ensure_namespace(client, target.namespace)
    remove = ctr(target, "images", "rm", "--sync", IMPORT_IMAGE)

    def reset() -> None:
        # Every round imports into an empty store: the last round's image,
        # blobs and snapshots are collected before the next begins.
        remove()
        os.sync()
        _warm(archive)

    yield Measure(ctr(target, "images", "import", str(archive), timeout=1800), reset=reset)
    remove()


# --------------------------------------------------------------------------
# ctr-run-rm, ctr-run-d-50: containers on runc (our shim on ours, Go's on
# containerd: the runtime io.containerd.runc.v2 on each daemon's defaults)

RUN_IMAGE = "docker.io/library/bench-busybox:1"
# Both daemons' shims keep runc state in /run/containerd/runc/bench: the
# container ids carry the daemon's label so that they never meet there.
RUN_RM_RUNS = 5
CONCURRENT = 50


@functools.cache
def _busybox_archive() -> Path:
    """An OCI archive of one busybox layer (made once per run)."""
    from tests.integration.test_images_ctr_acceptance import build_oci_archive
    from tests.support.tasks import busybox_layer

    tmp = Path(tempfile.mkdtemp(prefix="pcd-bench-run-"))
    atexit.register(shutil.rmtree, tmp, True)
    path = tmp / "busybox.tar"
    build_oci_archive(path, RUN_IMAGE, busybox_layer())
    return path


def _shim_pids(target: Target) -> list[int]:
    from tests.support.tasks import shim_pids

    return shim_pids(target.address)


def _kib(path: str, field: str) -> int:
    """A ``field:   N kB`` line of a /proc status or smaps_rollup file."""
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _remove_containers(target: Target, ids: list[str]) -> None:
    """Kill and delete every task and container of ``ids`` (untimed)."""

    def remove_task(id: str) -> None:
        with contextlib.suppress(Exception):
            ctr(target, "tasks", "rm", "-f", id)()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(remove_task, ids))
    if ids:
        with contextlib.suppress(Exception):
            ctr(target, "containers", "rm", *ids)()


@scenario(
    "ctr-run-rm",
    f"{RUN_RM_RUNS} x `ctr run --rm IMG ID /bin/true` (busybox, runc): a container's whole life",
    ops=RUN_RM_RUNS,
    unit="ctr run --rm",
)
def ctr_run_rm(target: Target) -> Iterator[Measure]:
    ctr(target, "images", "import", str(_busybox_archive()))()
    counter = iter(range(1 << 30))

    def run() -> None:
        for _ in range(RUN_RM_RUNS):
            id = f"{target.label}-rm-{next(counter)}"
            ctr(target, "run", "--rm", RUN_IMAGE, id, "/bin/true")()

    try:
        yield Measure(run)
    finally:
        _remove_runc_root(target)


@scenario(
    "ctr-run-d-50",
    f"{CONCURRENT} x `ctr run -d IMG ID sleep` at once (busybox, runc); then memory",
    ops=CONCURRENT,
    unit="container",
    rounds=3,
)
def ctr_run_d_50(target: Target) -> Iterator[Measure]:
    ctr(target, "images", "import", str(_busybox_archive()))()
    generation = iter(range(1 << 30))
    running: list[str] = []

    def reset() -> None:
        _remove_containers(target, running)
        running.clear()

    def run() -> None:
        n = next(generation)
        ids = [f"{target.label}-{n}-{i}" for i in range(CONCURRENT)]
        running.extend(ids)
        procs = [
            subprocess.Popen(
                ctr_argv(target, "run", "-d", RUN_IMAGE, id, "sleep", "100000"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for id in ids
        ]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        failed = [e for p, e in zip(procs, errors, strict=True) if p.returncode != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} ctr run -d failed: {failed[0][-500:]!r}")

    def metrics() -> dict[str, float]:
        shims = _shim_pids(target)
        pss = sum(_kib(f"/proc/{pid}/smaps_rollup", "Pss") for pid in shims)
        rss = sum(_kib(f"/proc/{pid}/status", "VmRSS") for pid in shims)
        return {
            "daemon RSS, MB": _kib(f"/proc/{target.pid}/status", "VmRSS") / 1024,
            "daemon PSS, MB": _kib(f"/proc/{target.pid}/smaps_rollup", "Pss") / 1024,
            "shim processes": len(shims),
            "shim PSS per container, MB": pss / 1024 / CONCURRENT,
            "shim RSS per container, MB": rss / 1024 / CONCURRENT,
        }

    try:
        yield Measure(run, reset=reset, metrics=metrics)
    finally:
        reset()
        _remove_runc_root(target)


def _remove_runc_root(target: Target) -> None:
    # runc's root for the namespace outlives its containers, under either daemon.
    with contextlib.suppress(OSError):
        Path("/run/containerd/runc", target.namespace).rmdir()
from bench import distribution as _distribution  # noqa: E402,F401  (registers its scenarios)
from bench import docker as _docker  # noqa: E402,F401  (registers its scenarios)
