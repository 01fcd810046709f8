"""Pull and push against registries, through our daemon (issue 12).

Debian's docker-registry on 127.0.0.1 holds an image built from
busybox-static: Debian's ``ctr images pull`` pulls and unpacks it into our
daemon and ``ctr run`` runs it; ``pyctr images pull`` does the same
client-side, ``pyctr images tag`` + ``push`` put it back under another name
and ``skopeo inspect`` sees it there.  An in-process fault registry makes a
pull meet a 500, a cut connection (resumed), more bytes than the
descriptor, wrong bytes and a manifest over the cap: each a clear error,
with no blob, no ingest and no image record left behind and the daemon
still serving.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Awaitable, Iterator
from hashlib import sha256
from typing import TypeVar

import pytest

from pycontainerd import errdefs
from pycontainerd.client import AsyncClient
from pycontainerd.distribution.pull import Progress
from pycontainerd.remotes import Resolver
from tests.integration._cli import Cli
from tests.support import daemons
from tests.support.fault_registry import Fault, FaultRegistry, fault_registry
from tests.support.registry import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    BuiltImage,
    RunningRegistry,
    busybox_image,
    push_image,
    push_index,
    registry,
)
from tests.support.tasks import busybox_layer

pytestmark = pytest.mark.integration

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    return busybox_image()


@pytest.fixture(scope="module")
def reg(image: BuiltImage) -> Iterator[RunningRegistry]:
    with registry() as running:

        async def fill() -> None:
            async with Resolver(plain_http=True) as resolver:
                await push_image(resolver, f"{running.host}/library/busybox:latest", image)

        run(fill())
        yield running


@pytest.fixture(scope="module")
def daemon() -> Iterator[daemons.RunningDaemon]:
    with daemons.pycontainerd() as d:
        yield d


def _chain_id(image: BuiltImage) -> str:
    """A one-layer image's chain ID: its layer's diff ID."""
    (diff_id,) = json.loads(image.config.data)["rootfs"]["diff_ids"]
    return str(diff_id)


def test_ctr_pulls_unpacks_and_runs_an_image_from_the_registry(
    daemon: daemons.RunningDaemon, reg: RunningRegistry, image: BuiltImage
) -> None:
    ctr = Cli("ctr", daemon.address, "ctr-pull")
    ref = f"{reg.host}/library/busybox:latest"
    pulled = ctr("images", "pull", "--plain-http", "--print-chainid", ref)
    assert "unpacking linux/amd64" in pulled.stdout
    assert f"image chain ID: {_chain_id(image)}\n" in pulled.stdout
    listed = ctr("images", "ls", "-q").stdout.split()
    assert listed == [ref]
    assert ctr("images", "check").stdout.count("complete") == 1
    hello = ctr("run", "--rm", ref, "from-registry", "echo", "pulled by ctr")
    assert hello.stdout == "pulled by ctr\n"


def test_pyctr_pulls_then_tags_and_pushes_and_skopeo_sees_it(
    daemon: daemons.RunningDaemon, reg: RunningRegistry, image: BuiltImage
) -> None:
    pyctr = Cli("pyctr", daemon.address, "pyctr-pull")
    ref = f"{reg.host}/library/busybox:latest"
    pulled = pyctr("images", "pull", "--plain-http", "--print-chainid", ref)
    assert f"layer-{image.layers[0].digest}: done" in pulled.stdout
    # As ctr prints it (the test above), last.
    assert pulled.stdout.endswith(f"image chain ID: {_chain_id(image)}\n")
    assert "unpacking linux/amd64" in pulled.stdout
    assert pyctr("images", "ls", "-q").stdout.split() == [ref]
    # Unpacked: ctr sees the image as complete and runs it.
    ctr = Cli("ctr", daemon.address, "pyctr-pull")
    hello = ctr("run", "--rm", ref, "from-pyctr-pull", "echo", "pulled by pyctr")
    assert hello.stdout == "pulled by pyctr\n"

    pushed_ref = f"{reg.host}/pushed/busybox:v2"
    pyctr("images", "tag", ref, pushed_ref)
    pushed = pyctr("images", "push", "--plain-http", pushed_ref)
    # The layer came from library/busybox of the same registry: mounted, not sent.
    assert f"layer-{image.layers[0].digest}: mounted" in pushed.stdout
    assert f"manifest-{image.manifest.digest}: done" in pushed.stdout
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (make deps installs it)")
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{pushed_ref}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert inspected.returncode == 0, inspected.stderr
    doc = json.loads(inspected.stdout)
    assert doc["Digest"] == image.manifest.digest
    assert doc["Layers"] == [image.layers[0].digest]


def test_pyctr_fetch_records_the_image_without_unpacking(
    daemon: daemons.RunningDaemon, reg: RunningRegistry, image: BuiltImage
) -> None:
    pyctr = Cli("pyctr", daemon.address, "pyctr-fetch")
    ref = f"{reg.host}/library/busybox:latest"
    fetched = pyctr("content", "fetch", "--plain-http", ref)
    assert f"config-{image.config.digest}: done" in fetched.stdout
    assert pyctr("images", "ls", "-q").stdout.split() == [ref]
    digests = pyctr("content", "ls", "-q").stdout.split()
    assert sorted(digests) == sorted(b.digest for b in (image.manifest, *image.blobs))
    snapshots = pyctr("snapshots", "ls").stdout.strip().splitlines()
    assert snapshots[1:] == []


def test_missing_repository_or_tag_is_a_clear_not_found(
    daemon: daemons.RunningDaemon, reg: RunningRegistry
) -> None:
    pyctr = Cli("pyctr", daemon.address, "pyctr-missing")
    for ref in (f"{reg.host}/no/such-repo:latest", f"{reg.host}/library/busybox:no-such-tag"):
        message = pyctr.error("images", "pull", "--plain-http", ref)
        assert message == f"{ref}: not found"
    assert pyctr("images", "ls", "-q").stdout == ""


def test_client_pull_labels_content_reports_progress_and_drops_its_lease(
    daemon: daemons.RunningDaemon, reg: RunningRegistry, image: BuiltImage
) -> None:
    ref = f"{reg.host}/library/busybox:latest"
    events: list[Progress] = []

    async def main() -> None:
        async with AsyncClient(daemon.address, namespace="client-pull") as client:
            pulled = await client.pull(ref, plain_http=True, progress=events.append)
            assert await pulled.is_unpacked()
            source = "containerd.io/distribution.source.127.0.0.1"
            manifest = await client.content.info(image.manifest.digest)
            assert manifest.labels[source] == "library/busybox"
            assert manifest.labels["containerd.io/gc.ref.content.config"] == image.config.digest
            layer = await client.content.info(image.layers[0].digest)
            assert layer.labels["containerd.io/uncompressed"].startswith("sha256:")
            config = await client.content.info(image.config.digest)
            assert "containerd.io/gc.ref.snapshot.overlayfs" in config.labels
            assert await client.leases.list() == []

    run(main())
    final = {e.ref: e.state for e in events}
    assert final == {
        f"manifest-{image.manifest.digest}": "done",
        f"config-{image.config.digest}": "done",
        f"layer-{image.layers[0].digest}": "done",
    }
    layer_events = [e for e in events if e.ref.startswith("layer-")]
    assert layer_events[-1].offset == layer_events[-1].total == image.layers[0].size


def _unique_image(name: str) -> BuiltImage:
    """busybox-static plus a file naming ``name``: a layer no other test has
    (a layer the daemon holds in another namespace is shared, not fetched)."""
    base = busybox_layer()
    data = name.encode()
    info = tarfile.TarInfo("etc/fault")
    info.size, info.mode = len(data), 0o644
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(base)) as src, tarfile.open(fileobj=buf, mode="w") as tar:
        for member in src.getmembers():
            tar.addfile(member, src.extractfile(member) if member.isreg() else None)
        tar.addfile(info, io.BytesIO(data))
    return _one_layer_image(buf.getvalue(), "amd64", {"Cmd": ["/bin/sh"]})


def _one_layer_image(
    tar_bytes: bytes, architecture: str, config: dict[str, object] | None = None
) -> BuiltImage:
    """An OCI image of one gzip layer (``tar_bytes``) for linux/``architecture``."""
    layer = Blob(OCI_LAYER_GZIP, gzip.compress(tar_bytes, mtime=0))
    image_config: dict[str, object] = {
        "architecture": architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256(tar_bytes).hexdigest()]},
    }
    if config is not None:
        image_config["config"] = config
    config_blob = Blob(OCI_CONFIG, json.dumps(image_config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_blob.digest, "size": config_blob.size},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
    }
    return BuiltImage(Blob(OCI_MANIFEST, json.dumps(manifest).encode()), config_blob, (layer,))


def _fault_registry(image: BuiltImage, fault: Fault) -> FaultRegistry:
    manifest = (image.manifest.media_type, image.manifest.data)
    return FaultRegistry(
        "library/busybox",
        {"latest": manifest, image.manifest.digest: manifest},
        {b.digest: b.data for b in image.blobs},
        fault,
        image.layers[0].digest,
    )


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        (Fault.STATUS_500, errdefs.Unavailable, "500"),
        (Fault.EXTRA, errdefs.FailedPrecondition, "more than the expected"),
        (Fault.BAD_DIGEST, errdefs.FailedPrecondition, "unexpected commit digest"),
        (Fault.CUT_NO_RANGE, errdefs.Unavailable, "connection lost"),
    ],
)
def test_registry_faults_fail_the_pull_commit_nothing_and_leave_the_daemon_serving(
    daemon: daemons.RunningDaemon,
    fault: Fault,
    error: type[errdefs.ContainerdError],
    message: str,
) -> None:
    namespace = f"fault-{fault.value.replace('_', '-')}"
    image = _unique_image(namespace)

    async def main() -> None:
        async with AsyncClient(daemon.address, namespace=namespace) as client:
            async with fault_registry(_fault_registry(image, fault)) as faulty:
                ref = f"{faulty.host}/library/busybox:latest"
                with pytest.raises(error, match=message):
                    await client.pull(ref, plain_http=True)
            with pytest.raises(errdefs.NotFound):
                await client.content.info(image.layers[0].digest)
            assert await client.content.list_statuses() == []
            assert await client.images.list() == []
            assert await client.leases.list() == []
            assert await client.is_serving()

    run(main())


def test_a_cut_connection_resumes_and_the_pull_succeeds(daemon: daemons.RunningDaemon) -> None:
    image = _unique_image("cut")

    async def main() -> None:
        async with AsyncClient(daemon.address, namespace="fault-cut") as client:
            async with fault_registry(_fault_registry(image, Fault.CUT)) as faulty:
                ref = f"{faulty.host}/library/busybox:latest"
                pulled = await client.pull(ref, plain_http=True)
                ranges = [r for _, p, r in faulty.requests if p.endswith(image.layers[0].digest)]
                assert ranges == ["", f"bytes={image.layers[0].size // 2}-"]
            assert await pulled.is_unpacked()
            assert (await client.content.info(image.layers[0].digest)).size == image.layers[0].size

    run(main())


def test_a_manifest_over_the_cap_is_refused(
    daemon: daemons.RunningDaemon, image: BuiltImage
) -> None:
    huge = {
        "mediaType": image.manifest.media_type,
        "digest": image.manifest.digest,
        "size": 5 << 20,
    }
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [huge],
        }
    ).encode()
    registry_ = _fault_registry(image, Fault.NONE)
    entry = ("application/vnd.oci.image.index.v1+json", index)
    registry_.manifests["latest"] = registry_.manifests["sha256:" + sha256(index).hexdigest()] = (
        entry
    )

    async def main() -> None:
        async with AsyncClient(daemon.address, namespace="fault-cap") as client:
            async with fault_registry(registry_) as faulty:
                with pytest.raises(errdefs.ResourceExhausted, match="over the 4194304-byte limit"):
                    await client.pull(f"{faulty.host}/library/busybox:latest", plain_http=True)
            assert await client.images.list() == []
            assert await client.content.list_statuses() == []
            assert await client.is_serving()

    run(main())


def test_pull_by_digest_names_the_image_by_its_digest(
    daemon: daemons.RunningDaemon, reg: RunningRegistry, image: BuiltImage
) -> None:
    pyctr = Cli("pyctr", daemon.address, "pyctr-digest")
    ref = f"{reg.host}/library/busybox@{image.manifest.digest}"
    pyctr("images", "pull", "--plain-http", ref)
    assert pyctr("images", "ls", "-q").stdout.split() == [ref]


def _arm64_image() -> BuiltImage:
    """A one-file arm64 image: a layer and config the amd64 image does not share."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc/arch")
        info.size, info.mode = 6, 0o644
        tar.addfile(info, io.BytesIO(b"arm64\n"))
    return _one_layer_image(buf.getvalue(), "arm64")


def test_all_metadata_and_metadata_only_fetch_what_ctr_fetches(
    daemon: daemons.RunningDaemon, reg: RunningRegistry, image: BuiltImage
) -> None:
    """--all-metadata: every manifest and config of the index, layers only for
    the host's platform; --metadata-only: no layers at all.  What Debian's
    ctr fetches into our daemon (client-side) is the reference."""
    arm64 = _arm64_image()
    ref = f"{reg.host}/multi/busybox:v1"

    async def fill() -> str:
        async with Resolver(plain_http=True) as resolver:
            return (await push_index(resolver, ref, {"amd64": image, "arm64": arm64})).digest

    index = run(fill())
    metadata = {index, image.manifest.digest, image.config.digest}
    metadata |= {arm64.manifest.digest, arm64.config.digest}
    amd64_layers = {layer.digest for layer in image.layers}

    def content(cli: Cli) -> set[str]:
        return set(cli("content", "ls", "-q").stdout.split())

    ctr = Cli("ctr", daemon.address, "meta-ctr")
    ctr("images", "pull", "--plain-http", "--all-metadata", ref)
    assert content(ctr) == metadata | amd64_layers
    for namespace, extra in (("meta-transfer", ()), ("meta-local", ("--local",))):
        pyctr = Cli("pyctr", daemon.address, namespace)
        pulled = pyctr("images", "pull", "--plain-http", "--all-metadata", *extra, ref)
        assert "unpacking linux/amd64" in pulled.stdout
        assert content(pyctr) == content(ctr), namespace
        # Unpacked for this host: ctr runs it.
        hello = ctr.in_namespace(namespace)("run", "--rm", ref, namespace, "echo", "ran")
        assert hello.stdout == "ran\n"
    # Without the flag, the other platform's manifest is not fetched.
    plain = Cli("pyctr", daemon.address, "meta-none")
    plain("images", "pull", "--plain-http", ref)
    assert content(plain) == {index, image.manifest.digest, image.config.digest} | amd64_layers

    ctr_only = ctr.in_namespace("meta-only-ctr")
    ctr_only("content", "fetch", "--plain-http", "--metadata-only", ref)
    pyctr_only = Cli("pyctr", daemon.address, "meta-only-pyctr")
    pyctr_only("content", "fetch", "--plain-http", "--metadata-only", ref)
    assert content(pyctr_only) == content(ctr_only) == metadata
    assert pyctr_only("images", "ls", "-q").stdout.split() == [ref]


def test_pyctr_user_flag_authenticates_and_is_needed(
    daemon: daemons.RunningDaemon, image: BuiltImage
) -> None:
    with registry(users={"alice": "s3cret"}) as private:
        ref = f"{private.host}/team/busybox:latest"

        async def fill() -> None:
            from pycontainerd.remotes import static_credentials

            credentials = static_credentials("alice", "s3cret")
            async with Resolver(plain_http=True, credentials=credentials) as resolver:
                await push_image(resolver, ref, image)

        run(fill())
        pyctr = Cli("pyctr", daemon.address, "pyctr-auth")
        message = pyctr.error("images", "pull", "--plain-http", ref)
        assert "requires a username and password" in message, message
        refused = pyctr.error("images", "pull", "--plain-http", "--user", "alice:wrong", ref)
        assert "access denied" in refused
        pyctr("images", "pull", "--plain-http", "--user", "alice:s3cret", ref)
        assert pyctr("images", "ls", "-q").stdout.split() == [ref]

        # ctr's --http-dump and --http-trace: the heads and the connections
        # on stderr, the credentials not.
        dumped = pyctr.in_namespace("pyctr-dump")(
            "images",
            "pull",
            "--plain-http",
            "--user",
            "alice:s3cret",
            "--http-dump",
            "--http-trace",
            ref,
        ).stderr
        assert (
            f"INFO: HEAD /v2/team/busybox/manifests/latest HTTP/1.1\nHost: {private.host}\n"
            in dumped
        )
        assert "INFO: HTTP/1.1 401 Unauthorized\n" in dumped
        assert "\nAuthorization: Basic <redacted>\n" in dumped
        assert "s3cret" not in dumped and base64.b64encode(b"alice:s3cret").decode() not in dumped
        assert f"DEBUG: connecting to {private.host}\n" in dumped
        assert "first response byte after" in dumped


def test_pyctr_tls_flags_reach_a_registry_that_wants_a_client_certificate(
    daemon: daemons.RunningDaemon, image: BuiltImage
) -> None:
    with registry(client_auth=True) as private:
        assert private.ca_file is not None and private.client_cert is not None
        ca, (cert, key) = str(private.ca_file), map(str, private.client_cert)
        ref = f"{private.host}/team/busybox:latest"

        async def fill() -> None:
            async with Resolver(ca_files=[ca], client_certs=[(cert, key)]) as resolver:
                await push_image(resolver, ref, image)

        run(fill())
        pyctr = Cli("pyctr", daemon.address, "pyctr-tls")
        untrusted = pyctr.error("images", "pull", ref)
        assert "certificate verify failed" in untrusted, untrusted
        anonymous = pyctr.error("images", "pull", "--tlscacert", ca, ref)
        assert "bad certificate" in anonymous, anonymous
        half = pyctr.error("images", "pull", "--tlscacert", ca, "--tlscert", cert, ref)
        assert "--tlscert and --tlskey go together" in half, half
        assert pyctr("images", "ls", "-q").stdout.split() == []
        tls = ("--tlscacert", ca, "--tlscert", cert, "--tlskey", key)
        pulled = pyctr("images", "pull", *tls, ref)
        assert "unpacking linux/amd64" in pulled.stdout
        assert pyctr("images", "ls", "-q").stdout.split() == [ref]
