"""``ctr content`` (Debian's containerd 1.6) and ``pyctr content`` against our daemon.

Ingest with expected size and digest, read back, label, list, remove; a bad
digest leaves nothing visible; and a daemon killed in the middle of a large
ingest comes back with the ingest resumable from its offset (or abortable)
and no partial blob anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client
from tests.support import daemons, launch
from tests.support.daemons import RunningDaemon

pytestmark = [pytest.mark.integration, pytest.mark.interop]

Run = Callable[..., subprocess.CompletedProcess[bytes]]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _binary(name: str) -> str:
    if name == "pyctr":
        return str(daemons.VENV_BIN / "pyctr")
    path = shutil.which("ctr")
    if path is None:
        pytest.fail("Debian's ctr is not installed (make deps installs package containerd)")
    return path


def tool_runner(binary: str, address: str, namespace: str) -> Run:
    def run(
        *args: str, stdin: bytes | Path = b"", ok: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [binary, "-a", address, "-n", namespace, *args]
        if isinstance(stdin, Path):  # a file: seekable, as ctr needs to resume
            with stdin.open("rb") as f:
                result = subprocess.run(
                    argv, stdin=f, capture_output=True, timeout=timeout, check=False
                )
        else:
            result = subprocess.run(
                argv, input=stdin, capture_output=True, timeout=timeout, check=False
            )
        if ok and result.returncode != 0:
            pytest.fail(f"{binary} {' '.join(args)} exited {result.returncode}: {result.stderr!r}")
        return result

    return run


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[RunningDaemon]:
    """One daemon for the module, garbage collection off.

    ``ctr content ingest`` takes no lease, so what it writes is garbage the
    moment it lands, as in containerd: a collection set off by one test's
    ``content rm`` would sweep the next test's blobs.  Collection has its
    own tests (``test_gc_ctr.py``); these are about the commands.
    """
    with daemons.pycontainerd(config=daemons.NO_GC_CONFIG) as d:
        yield d


@pytest.fixture
def namespace() -> str:
    return f"content-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["ctr", "pyctr"])
def tool(request: pytest.FixtureRequest, shared_daemon: RunningDaemon, namespace: str) -> Run:
    return tool_runner(_binary(request.param), shared_daemon.address, namespace)


def cells(output: bytes) -> list[list[str]]:
    """A tab-padded table as rows of cells, header first."""
    return [
        [c for c in line.split("\t") if c] for line in output.decode().splitlines() if line.strip()
    ]


def test_ingest_with_expected_size_and_digest_then_get_round_trips(tool: Run) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    dgst = sha(data)
    tool(
        "content",
        "ingest",
        "--expected-size",
        str(len(data)),
        "--expected-digest",
        dgst,
        "roundtrip",
        stdin=data,
    )
    assert tool("content", "get", dgst).stdout == data
    assert tool("content", "ls", "-q").stdout.decode().split() == [dgst]
    rows = cells(tool("content", "ls").stdout)
    assert rows[0] == ["DIGEST", "SIZE", "AGE", "LABELS"]
    assert rows[1][0] == dgst and rows[1][1] == "3.146MB" and rows[1][-1] == "-"
    assert cells(tool("content", "active").stdout) == [["REF", "SIZE", "AGE"]]


def test_label_list_and_remove(tool: Run, shared_daemon: RunningDaemon, namespace: str) -> None:
    data = b"some labelled content"
    dgst = sha(data)
    tool("content", "ingest", "--expected-digest", dgst, "lbl", stdin=data)

    out = tool("content", "label", dgst, "a=b", "c=d").stdout.decode().strip()
    assert sorted(out.split(",")) == ["a=b", "c=d"]
    tool("content", "label", dgst, "a=")
    row = cells(tool("content", "ls").stdout)[1]
    assert row[0] == dgst and row[-1] == "c=d"
    assert tool("content", "ls", "-q", "labels.c==d").stdout.decode().split() == [dgst]
    assert tool("content", "ls", "-q", "labels.a==b").stdout == b""
    with Client(shared_daemon.address, namespace) as client:
        assert dict(client.content.info(dgst).labels) == {"c": "d"}

    assert tool("content", "rm", dgst).stdout.decode().split() == [dgst]
    assert tool("content", "ls", "-q").stdout == b""
    missing = tool("content", "get", dgst, ok=False)
    assert missing.returncode != 0 and b"not found" in missing.stderr
    # Removing what is gone is quietly fine, as in ctr.
    assert tool("content", "rm", dgst).stdout == b""


def test_ingest_with_wrong_digest_fails_and_leaves_nothing_listed(
    tool: Run, shared_daemon: RunningDaemon, namespace: str
) -> None:
    data = b"these bytes do not match"
    wrong = sha(b"something else")
    result = tool(
        "content",
        "ingest",
        "--expected-size",
        str(len(data)),
        "--expected-digest",
        wrong,
        "bad-ref",
        stdin=data,
        ok=False,
    )
    assert result.returncode != 0
    assert b"unexpected commit digest" in result.stderr
    assert tool("content", "ls", "-q").stdout == b""
    assert tool("content", "get", sha(data), ok=False).returncode != 0
    # containerd keeps the failed ingest (resumable); it can be aborted.
    active = cells(tool("content", "active").stdout)
    assert [row[0] for row in active[1:]] == ["bad-ref"]
    with Client(shared_daemon.address, namespace) as client:
        client.content.abort("bad-ref")
    assert cells(tool("content", "active").stdout) == [["REF", "SIZE", "AGE"]]


def test_short_input_fails_and_a_second_ingest_resumes(tool: Run, tmp_path: Path) -> None:
    data = b"0123456789" * 100
    first = tool(
        "content", "ingest", "--expected-size", str(len(data)), "r", stdin=data[:300], ok=False
    )
    assert b"unexpected EOF" in first.stderr
    assert [row[:2] for row in cells(tool("content", "active").stdout)[1:]] == [["r", "300B"]]
    # ctr resumes by seeking its stdin past what the daemon has: give it a file.
    whole = tmp_path / "whole"
    whole.write_bytes(data)
    tool("content", "ingest", "--expected-size", str(len(data)), "r", stdin=whole)
    assert tool("content", "get", sha(data)).stdout == data


def test_pyctr_prints_what_ctr_prints(shared_daemon: RunningDaemon, namespace: str) -> None:
    ctr = tool_runner(_binary("ctr"), shared_daemon.address, namespace)
    pyctr = tool_runner(_binary("pyctr"), shared_daemon.address, namespace)
    for i in range(3):
        data = f"blob {i}".encode() * (i * 400 + 1)
        ctr("content", "ingest", "--expected-digest", sha(data), f"ref{i}", stdin=data)
    ctr("content", "label", sha(b"blob 0"), "k=v")
    pyctr("content", "ingest", "--expected-size", "10", "partial", stdin=b"12345", ok=False)

    def no_age(rows: list[list[str]]) -> list[list[str]]:
        return [[c for j, c in enumerate(row) if j != 2] for row in rows]

    for args in (("content", "ls"), ("content", "active")):
        assert no_age(cells(pyctr(*args).stdout)) == no_age(cells(ctr(*args).stdout))
    assert pyctr("content", "ls", "-q").stdout == ctr("content", "ls", "-q").stdout
    for bad in (("content", "get", "nope"), ("content", "rm", "nope")):
        mine, theirs = pyctr(*bad, ok=False), ctr(*bad, ok=False)
        assert mine.returncode == theirs.returncode == 1
        assert (
            mine.stderr.splitlines()[-1].replace(b"pyctr:", b"ctr:")
            == (theirs.stderr.splitlines()[-1])
        )


# --- a daemon killed mid-ingest -------------------------------------------------------

CHUNK = 1 << 20
BIG = 256 * CHUNK


def big_chunks() -> Iterator[bytes]:
    """256 MiB, generated chunk by chunk (never held in memory whole)."""
    block = hashlib.sha256(b"seed").digest() * (CHUNK // 32)
    for i in range(BIG // CHUNK):
        yield i.to_bytes(8, "big") + block[8:]


def big_digest() -> str:
    h = hashlib.sha256()
    for chunk in big_chunks():
        h.update(chunk)
    return "sha256:" + h.hexdigest()


class Ingest:
    """``ctr content ingest`` (or pyctr's) fed from the generator through a pipe."""

    def __init__(self, address: str, namespace: str, ref: str, dgst: str, tool: str = "ctr"):
        self.proc = _spawn_ingest(address, namespace, ref, dgst, tool)
        self.result: tuple[int, bytes] | None = None
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.feeder.start()

    def _feed(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            for chunk in big_chunks():
                stdin.write(chunk)
            stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def wait(self, timeout: float) -> tuple[int, bytes]:
        """Exit status and stderr, with every pipe closed (once; later calls repeat it)."""
        if self.result is not None:
            return self.result
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.feeder.join(timeout=30)
            assert self.proc.stdin is not None and self.proc.stderr is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            err = self.proc.stderr.read()
            self.proc.stderr.close()
        self.result = (code, err)
        return self.result


def _spawn_ingest(
    address: str, namespace: str, ref: str, dgst: str, tool: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            _binary(tool),
            "-a",
            address,
            "-n",
            namespace,
            "content",
            "ingest",
            "--expected-size",
            str(BIG),
            "--expected-digest",
            dgst,
            ref,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_offset(client: Client, ref: str, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            offset = client.content.status(ref).offset
        except errdefs.NotFound:
            offset = 0
        if offset >= at_least:
            return offset
        time.sleep(0.05)
    raise AssertionError(f"ingest {ref} did not reach {at_least} bytes in {timeout}s")


def blob_files(root: Path) -> list[Path]:
    blobs = root / "io.containerd.content.v1.content" / "blobs"
    return [p for p in blobs.rglob("*") if p.is_file()] if blobs.exists() else []


def test_daemon_killed_mid_ingest_leaves_a_resumable_ingest_and_no_partial_blob() -> None:
    dgst = big_digest()
    ns = "crash"
    with daemons.temp_base("pcd-crash-") as base:
        layout = launch.Layout(base)
        d = launch.start(layout)
        ingests: list[Ingest] = []
        try:
            ingests = [Ingest(d.address, ns, ref, dgst) for ref in ("resume-me", "abort-me")]
            with Client(d.address, ns, timeout=10) as client:
                wait_offset(client, "resume-me", 64 * CHUNK)
                wait_offset(client, "abort-me", 1)
                assert client.content.list() == []
            d.process.kill()
            d.process.wait()
        finally:
            daemons.stop(d.process)
            codes = [ingest.wait(timeout=60)[0] for ingest in ingests]
        assert codes and all(code != 0 for code in codes)

        assert blob_files(layout.root) == []

        with launch.running(layout) as d2, Client(d2.address, ns, timeout=30) as client:
            assert client.content.list() == []
            st = client.content.status("resume-me")
            assert 0 < st.offset <= BIG and st.total == BIG
            assert sorted(s.ref for s in client.content.list_statuses()) == [
                "abort-me",
                "resume-me",
            ]

            client.content.abort("abort-me")
            assert [s.ref for s in client.content.list_statuses()] == ["resume-me"]

            # ctr cannot skip ahead in a pipe (it seeks stdin); pyctr reads past
            # what the daemon already has, so the generator streams in again.
            code, err = Ingest(d2.address, ns, "resume-me", dgst, tool="pyctr").wait(120)
            assert code == 0, err
            info = client.content.info(dgst)
            assert info.size == BIG
            h = hashlib.sha256()
            for chunk in client.content.chunks(dgst):
                h.update(chunk)
            assert "sha256:" + h.hexdigest() == dgst
            assert client.content.list_statuses() == []
        assert len(blob_files(layout.root)) == 1


# --- events, leases and clients that go away -------------------------------------------


def test_ctr_content_rm_publishes_content_delete(
    shared_daemon: RunningDaemon, namespace: str
) -> None:
    from pycontainerd.api.events import content_pb2 as events_pb
    from pycontainerd.typeurl import unmarshal_any

    ctr = tool_runner(_binary("ctr"), shared_daemon.address, namespace)
    data = b"delete me and tell"
    ctr("content", "ingest", "--expected-digest", sha(data), "ev", stdin=data)
    seen: queue.Queue[tuple[str, str, str]] = queue.Queue()

    def listen() -> None:
        with Client(shared_daemon.address, namespace) as client:
            events = client.events.subscribe(f'namespace=="{namespace}",topic=="/content/delete"')
            for env in events:
                event = unmarshal_any(env.event)
                assert isinstance(event, events_pb.ContentDelete)
                seen.put((env.namespace, env.topic, event.digest))
                if event.digest == sha(data):
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    # The subscription starts when the loop asks for its first event and gives
    # no sign when it listens: delete a probe blob until the listener sees one.
    probe = b"probe the subscription"
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, "the listener saw no probe"
        ctr("content", "ingest", "--expected-digest", sha(probe), "probe", stdin=probe)
        ctr("content", "rm", sha(probe))
        with contextlib.suppress(queue.Empty):
            seen.get(timeout=0.3)
            break
    ctr("content", "rm", sha(data))
    listener.join(10)
    assert not listener.is_alive()
    got = [seen.get_nowait() for _ in range(seen.qsize())]
    assert [e for e in got if e[2] != sha(probe)] == [(namespace, "/content/delete", sha(data))]


def test_writes_under_a_client_lease_are_held_by_it(
    shared_daemon: RunningDaemon, namespace: str
) -> None:
    data = b"leased over the wire"
    with Client(shared_daemon.address, namespace) as client:
        with client.lease(expiration=None) as lease:
            w = client.content.writer("leased", total=len(data))
            resources = client.leases.list_resources(lease.id)
            assert [(r.type, r.id) for r in resources] == [("ingests", "leased")]
            w.write(data)
            w.commit(len(data), sha(data))
            resources = client.leases.list_resources(lease.id)
            assert [(r.type, r.id) for r in resources] == [("content", sha(data))]
        assert client.content.info(sha(data)).size == len(data)


def test_a_client_killed_mid_write_releases_its_ref(
    shared_daemon: RunningDaemon, namespace: str
) -> None:
    ingest = Ingest(shared_daemon.address, namespace, "orphan", sha(b"never"))
    try:
        with Client(shared_daemon.address, namespace, timeout=10) as client:
            wait_offset(client, "orphan", 4 * CHUNK)
            ingest.proc.kill()
            ingest.wait(timeout=30)
            deadline = time.monotonic() + 10
            while True:  # the daemon notices the stream is gone and lets the ref go
                try:
                    w = client.content.writer("orphan")
                    break
                except errdefs.Unavailable:
                    assert time.monotonic() < deadline, "ref still locked"
                    time.sleep(0.05)
            assert w.offset >= 4 * CHUNK
            w.abort()
            assert client.content.list_statuses() == []
    finally:
        ingest.wait(timeout=30)
