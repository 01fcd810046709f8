"""Garbage collection seen from Debian's ``ctr``: ours beside containerd 1.6's.

Each scenario runs against our daemon and against Debian's containerd (the
reference) and checks what a user sees: ``ctr content ls`` and the blob
files under ``<root>/io.containerd.content.v1.content/blobs``.  Content
that nothing holds is removed once it is deleted and a collection runs;
content a lease, an image or a ``containerd.io/gc.ref.content`` label holds
survives collections until that holder goes; an expired lease goes itself.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycontainerd import leases
from pycontainerd.client import Client
from pycontainerd.images import Descriptor
from tests.support import daemons
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF = "containerd.io/gc.ref.content"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def reference() -> Iterator[RunningDaemon]:
    """A containerd of this module's own: its collections touch no one else's tests."""
    with daemons.containerd() as d:
        yield d


@dataclass
class Target:
    name: str
    daemon: RunningDaemon
    namespace: str

    def ctr(self, *args: str, stdin: bytes = b"", ok: bool = True) -> str:
        binary = shutil.which("ctr")
        if binary is None:
            pytest.fail("Debian's ctr is not installed (make deps installs containerd)")
        argv = [binary, "-a", self.daemon.address, "-n", self.namespace, *args]
        result = subprocess.run(argv, input=stdin, capture_output=True, timeout=60, check=False)
        if ok and result.returncode != 0:
            pytest.fail(f"ctr {' '.join(args)} exited {result.returncode}: {result.stderr!r}")
        return result.stdout.decode()

    def client(self) -> Client:
        return Client(self.daemon.address, self.namespace)

    def blob(self, dgst: str) -> Path:
        algorithm, _, hex_ = dgst.partition(":")
        return self.daemon.root / "io.containerd.content.v1.content" / "blobs" / algorithm / hex_

    def listed(self) -> set[str]:
        return set(self.ctr("content", "ls", "-q").split())

    def ingest(self, data: bytes) -> str:
        """``ctr content ingest``: no lease, so nothing holds the blob."""
        self.ctr("content", "ingest", "--expected-digest", sha(data), f"r-{sha(data)}", stdin=data)
        return sha(data)

    def write_leased(self, lease_id: str, *blobs: bytes) -> list[str]:
        with self.client() as client, leases.lease(lease_id):
            return [client.content.write_blob(f"w-{sha(b)}", b, expected=sha(b)) for b in blobs]

    def collect(self) -> None:
        """Run a collection and wait for it, the way ctr can: ``leases rm --sync``."""
        lease_id = f"gc-{uuid.uuid4().hex[:8]}"
        self.ctr("leases", "create", "--id", lease_id)
        self.ctr("leases", "rm", "--sync", lease_id)


@pytest.fixture(
    params=["pycontainerd", pytest.param("containerd", marks=pytest.mark.interop)],
)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    ns = f"gc-{uuid.uuid4().hex[:10]}"
    if request.param == "containerd":
        t = Target("containerd", request.getfixturevalue("reference"), ns)
        # Let a collection the previous test set off finish before this one starts.
        t.collect()
        yield t
        return
    with daemons.pycontainerd() as d:
        daemons.wait_startup_gc(d)
        yield Target("pycontainerd", d, ns)


def wait_gone(path: Path, timeout: float = 10) -> float:
    start = time.monotonic()
    while path.exists():
        assert time.monotonic() - start < timeout, f"{path} still there after {timeout}s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_deleted_content_nothing_holds_is_gone_from_the_blobs_dir(target: Target) -> None:
    dgst = target.ingest(b"nothing holds me")
    assert target.blob(dgst).is_file()
    assert target.ctr("content", "rm", dgst).split() == [dgst]
    # No sync delete for content: the scheduler collects after the deletion.
    wait_gone(target.blob(dgst))
    assert target.listed() == set()
    if target.name == "pycontainerd":
        assert 'msg="garbage collected" d=' in target.daemon.logs()


def test_content_a_lease_holds_survives_collection_until_the_lease_is_deleted(
    target: Target,
) -> None:
    target.ctr("leases", "create", "--id", "keep")
    (held,) = target.write_leased("keep", b"held by a lease")
    loose = target.ingest(b"held by nothing")
    target.collect()
    assert target.listed() == {held}
    assert target.blob(held).is_file() and not target.blob(loose).exists()
    with target.client() as client:
        assert [(r.type, r.id) for r in client.leases.list_resources("keep")] == [("content", held)]

    target.ctr("leases", "rm", "--sync", "keep")
    assert not target.blob(held).exists()
    assert target.listed() == set()


def test_a_lease_resource_added_later_holds_ingested_content(target: Target) -> None:
    target.ctr("leases", "create", "--id", "late")
    dgst = target.ingest(b"leased after the fact")
    with target.client() as client:
        client.leases.add_resource("late", leases.Resource(dgst, "content"))
    target.collect()
    assert target.blob(dgst).is_file()
    with target.client() as client:
        client.leases.delete_resource("late", leases.Resource(dgst, "content"))
    target.collect()
    assert not target.blob(dgst).exists()


def test_an_image_keeps_its_blob_until_images_rm_sync(target: Target) -> None:
    target.ctr("leases", "create", "--id", "pull")
    (manifest,) = target.write_leased("pull", b'{"schemaVersion": 2}')
    with target.client() as client:
        client.images.create("example.com/gc:1", Descriptor(MANIFEST, manifest, 20))
    target.ctr("leases", "rm", "--sync", "pull")
    assert target.listed() == {manifest} and target.blob(manifest).is_file()

    target.ctr("images", "rm", "--sync", "example.com/gc:1")
    assert not target.blob(manifest).exists()
    assert target.listed() == set()


def test_reference_labels_keep_children_alive(target: Target) -> None:
    target.ctr("leases", "create", "--id", "pull")
    config, layer, nested, index = target.write_leased(
        "pull", b"config", b"layer", b"nested", b"index"
    )
    target.ctr("content", "label", layer, f"{REF}.n={nested}")
    target.ctr("content", "label", index, f"{REF}.config={config}", f"{REF}.l.0={layer}")
    with target.client() as client:
        client.images.create("example.com/gc:2", Descriptor(MANIFEST, index, 5))
    target.ctr("leases", "rm", "--sync", "pull")
    assert target.listed() == {config, layer, nested, index}

    # Dropping one reference (an empty value removes a label) lets that subtree go.
    target.ctr("content", "label", index, f"{REF}.l.0=")
    target.collect()
    assert target.listed() == {config, index}
    assert not target.blob(layer).exists() and not target.blob(nested).exists()

    target.ctr("images", "rm", "--sync", "example.com/gc:2")
    assert target.listed() == set()
    assert not target.blob(config).exists() and not target.blob(index).exists()


def test_an_expired_lease_is_collected_with_what_it_held(target: Target) -> None:
    # --expires 0 writes no expiry of its own; the label says it ended long ago.
    expired = f"{leases.EXPIRE_LABEL}=2001-01-01T00:00:00Z"
    target.ctr("leases", "create", "--id", "old", "--expires", "0", expired)
    target.ctr("leases", "create", "--id", "current", "--expires", "1h")
    (old,) = target.write_leased("old", b"expired holder")
    (current,) = target.write_leased("current", b"live holder")
    target.collect()
    assert target.ctr("leases", "ls", "-q").split() == ["current"]
    assert target.listed() == {current}
    assert not target.blob(old).exists()


def test_the_scheduler_plugin_is_listed_with_containerds_exports(target: Target) -> None:
    out = target.ctr("plugins", "ls", "-d", "type==io.containerd.gc.v1")
    assert "ID:           scheduler" in out
    exports = dict(
        line.split() for line in out.split("Exports:", 1)[1].strip().splitlines() if line.strip()
    )
    assert exports == {
        "PauseThreshold": "0.02",
        "DeletionThreshold": "0",
        "MutationThreshold": "100",
        "ScheduleDelay": "0s",
    }


def test_the_scheduler_reads_its_config_section() -> None:
    config = """version = 2
[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.1
  deletion_threshold = 1
  schedule_delay = "5ms"
  startup_delay = "0s"
"""
    with daemons.pycontainerd(config=config) as d:
        t = Target("pycontainerd", d, "gc")
        out = t.ctr("plugins", "ls", "-d", "type==io.containerd.gc.v1")
        assert "PauseThreshold         0.1" in out and "ScheduleDelay          5ms" in out
        # No startup collection; the first deletion is collected at once.
        dgst = t.ingest(b"collected on the first deletion")
        time.sleep(0.3)
        assert 'msg="garbage collected"' not in d.logs()
        t.ctr("content", "rm", dgst)
        wait_gone(t.blob(dgst), timeout=5)


def test_a_bad_scheduler_config_fails_the_plugin_not_the_daemon() -> None:
    config = 'version = 2\n[plugins."io.containerd.gc.v1.scheduler"]\n  startup_delay = "soon"\n'
    with daemons.pycontainerd(config=config) as d:
        t = Target("pycontainerd", d, "gc")
        rows = [line.split() for line in t.ctr("plugins", "ls").splitlines()]
        assert ["io.containerd.gc.v1", "scheduler", "-", "error"] in rows
        # Without a collector a sync delete still answers; the blob stays.
        with t.client() as client:
            client.images.create("example.com/gc:3", Descriptor(MANIFEST, sha(b"x"), 1))
        t.ctr("images", "rm", "--sync", "example.com/gc:3")
        assert t.ctr("images", "ls", "-q") == ""
