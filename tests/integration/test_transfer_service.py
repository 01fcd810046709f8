"""containerd 1.7's Transfer service on our daemon, against Debian's
docker-registry on 127.0.0.1: the daemon pulls, unpacks and records an
image itself while the client watches progress on a Streaming stream, asks
the client for credentials on another, and pushes an image back."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd import typeurl
from pycontainerd.api.services.streaming.v1 import streaming_pb2 as spb
from pycontainerd.api.services.streaming.v1 import streaming_pb2_grpc as spb_grpc
from pycontainerd.api.services.transfer.v1 import transfer_pb2 as tpb
from pycontainerd.api.services.transfer.v1 import transfer_pb2_grpc as tpb_grpc
from pycontainerd.api.types import platform_pb2
from pycontainerd.api.types.transfer import imagestore_pb2, progress_pb2, registry_pb2
from pycontainerd.remotes import Resolver
from tests.integration.test_distribution import _fault_registry, _unique_image
from tests.support import daemons, tasks
from tests.support.fault_registry import Fault, fault_registry
from tests.support.registry import (
    RunningRegistry,
    busybox_image,
    push_image,
    registry,
    token_server,
)

pytestmark = pytest.mark.integration


@dataclass
class Stream:
    """A client's named stream: what it received, and a queue to send on."""

    sends: queue.Queue[any_pb2.Any | None] = field(default_factory=queue.Queue)
    received: list[any_pb2.Any] = field(default_factory=list)
    thread: threading.Thread | None = None

    def close(self) -> None:
        self.sends.put(None)
        if self.thread is not None:
            self.thread.join(10)


def open_stream(
    channel: grpc.Channel, name: str, ns: str, answer: any_pb2.Any | None = None
) -> Stream:
    """Open ``name``; with ``answer``, send it after every message received
    (an auth stream's reply)."""
    stream = Stream()

    def requests() -> Iterator[any_pb2.Any]:
        yield typeurl.marshal_any(spb.StreamInit(id=name))
        while (message := stream.sends.get()) is not None:
            yield message

    responses = spb_grpc.StreamingStub(channel).Stream(
        requests(), metadata=[("containerd-namespace", ns)]
    )
    next(responses)  # the daemon's acknowledgement

    def receive() -> None:
        try:
            for message in responses:
                stream.received.append(message)
                if answer is not None:
                    stream.sends.put(answer)
        except grpc.RpcError:
            pass

    stream.thread = threading.Thread(target=receive, daemon=True)
    stream.thread.start()
    return stream


def transfer(
    channel: grpc.Channel, ns: str, source: object, destination: object, progress: str = ""
) -> None:
    tpb_grpc.TransferStub(channel).Transfer(
        tpb.TransferRequest(
            source=typeurl.marshal_any(source),  # type: ignore[arg-type]
            destination=typeurl.marshal_any(destination),  # type: ignore[arg-type]
            options=tpb.TransferOptions(progress_stream=progress),
        ),
        metadata=[("containerd-namespace", ns)],
        timeout=120,
    )


def oci_registry(ref: str, auth_stream: str = "") -> registry_pb2.OCIRegistry:
    return registry_pb2.OCIRegistry(
        reference=ref,
        resolver=registry_pb2.RegistryResolver(default_scheme="http", auth_stream=auth_stream),
    )


def image_store(name: str, unpack: bool = True) -> imagestore_pb2.ImageStore:
    unpacks = [
        imagestore_pb2.UnpackConfiguration(
            platform=platform_pb2.Platform(os="linux", architecture="amd64"),
            snapshotter="overlayfs",
        )
    ]
    return imagestore_pb2.ImageStore(name=name, unpacks=unpacks if unpack else [])


def push_busybox(reg: RunningRegistry, ref: str) -> None:
    async def push() -> None:
        async with Resolver(plain_http=True, credentials=lambda host: ("alice", "s3cret")) as r:
            await push_image(r, ref, busybox_image())

    asyncio.run(push())


@pytest.fixture(scope="module")
def reg() -> Iterator[RunningRegistry]:
    with registry() as running:
        push_busybox(running, f"{running.host}/library/busybox:latest")
        yield running


@pytest.fixture
def daemon() -> Iterator[tuple[daemons.RunningDaemon, grpc.Channel, str]]:
    ns = tasks.namespace()
    with (
        daemons.pycontainerd() as d,
        grpc.insecure_channel(f"unix://{d.address}") as channel,
    ):
        try:
            yield d, channel, ns
        finally:
            tasks.reap(d.address, [ns], d.root.parent)


def ctr(d: daemons.RunningDaemon, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "-a", d.address, "-n", ns, *args], capture_output=True, text=True, timeout=60
    )


def test_a_server_side_pull_unpacks_records_reports_and_runs(
    reg: RunningRegistry, daemon: tuple[daemons.RunningDaemon, grpc.Channel, str]
) -> None:
    d, channel, ns = daemon
    ref = f"{reg.host}/library/busybox:latest"
    progress = open_stream(channel, "progress-1", ns)
    transfer(channel, ns, oci_registry(ref), image_store(ref), "progress-1")
    progress.close()
    events = [progress_pb2.Progress.FromString(m.value) for m in progress.received]
    assert events[0].event == f"Resolving from {ref}"
    assert ("saved", ref) in [(e.event, e.name) for e in events]
    assert events[-1].event == f"Completed pull from {ref}"
    layers = [e for e in events if e.name.startswith("layer-sha256:")]
    assert layers[0].event == "waiting"
    assert layers[-1].event == "complete" and layers[-1].progress == layers[-1].total > 0
    assert ref in ctr(d, ns, "images", "ls", "-q").stdout.split()
    assert ctr(d, ns, "snapshots", "ls").stdout.count("Committed") == 1
    run = ctr(d, ns, "run", "--rm", ref, "t1", "echo", "pulled by the daemon")
    assert run.stdout == "pulled by the daemon\n", run.stderr
    # Nothing of the pull's own lease is left.
    assert ctr(d, ns, "leases", "ls", "-q").stdout.split() == []
    # The bottom layer was applied as it downloaded, not read back from the store.
    assert 'msg="layer applied while downloading"' in d.logs()


def test_a_missing_tag_is_not_found_and_records_nothing(
    reg: RunningRegistry, daemon: tuple[daemons.RunningDaemon, grpc.Channel, str]
) -> None:
    d, channel, ns = daemon
    ref = f"{reg.host}/library/busybox:nope"
    with pytest.raises(grpc.RpcError) as missing:
        transfer(channel, ns, oci_registry(ref), image_store(ref))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "busybox:nope" in (missing.value.details() or "")
    assert ctr(d, ns, "images", "ls", "-q").stdout.split() == []
    assert ctr(d, ns, "content", "ls", "-q").stdout.split() == []


def test_credentials_are_asked_for_on_the_auth_stream(
    daemon: tuple[daemons.RunningDaemon, grpc.Channel, str],
) -> None:
    d, channel, ns = daemon
    with registry(users={"alice": "s3cret"}) as private:
        ref = f"{private.host}/team/busybox:1"
        push_busybox(private, ref)
        with pytest.raises(grpc.RpcError) as refused:
            transfer(channel, ns, oci_registry(ref), image_store(ref, unpack=False))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()
        assert "requires a username and password" in (refused.value.details() or "")
        answer = typeurl.marshal_any(
            registry_pb2.AuthResponse(
                authType=registry_pb2.CREDENTIALS, username="alice", secret="s3cret"
            )
        )
        auth = open_stream(channel, "auth-1", ns, answer=answer)
        transfer(channel, ns, oci_registry(ref, "auth-1"), image_store(ref, unpack=False))
        auth.close()
        asked = registry_pb2.AuthRequest.FromString(auth.received[0].value)
        assert (asked.host, asked.reference) == (private.host, ref)
        assert ref in ctr(d, ns, "images", "ls", "-q").stdout.split()


def test_a_server_side_push_puts_the_image_in_the_registry(
    reg: RunningRegistry, daemon: tuple[daemons.RunningDaemon, grpc.Channel, str]
) -> None:
    d, channel, ns = daemon
    ref = f"{reg.host}/library/busybox:latest"
    transfer(channel, ns, oci_registry(ref), image_store(ref, unpack=False))
    copy = f"{reg.host}/copies/busybox:2"
    transfer(channel, ns, image_store(ref), oci_registry(copy))

    async def resolve() -> str:
        async with Resolver(plain_http=True) as resolver:
            return (await resolver.resolve(copy))[1].digest

    original = ctr(d, ns, "images", "ls").stdout
    assert asyncio.run(resolve()) in original


def test_an_unsupported_pair_is_not_implemented(
    daemon: tuple[daemons.RunningDaemon, grpc.Channel, str],
) -> None:
    _d, channel, ns = daemon
    with pytest.raises(grpc.RpcError) as refused:
        transfer(channel, ns, image_store("a"), image_store("b"))
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _pyctr(d: daemons.RunningDaemon, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(daemons.VENV_BIN / "pyctr"), "-a", d.address, "-n", ns, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pyctr_pulls_through_the_transfer_service_unless_local(
    reg: RunningRegistry, daemon: tuple[daemons.RunningDaemon, grpc.Channel, str]
) -> None:
    d, _channel, ns = daemon
    ref = f"{reg.host}/library/busybox:latest"
    pulled = _pyctr(d, ns, "images", "pull", "--plain-http", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert f"{ref}: saved" in pulled.stdout  # the daemon's own report
    assert "layer-sha256:" in pulled.stdout and "done" in pulled.stdout
    assert d.logs().count('msg="layer applied while downloading"') == 1
    assert _pyctr(d, ns, "images", "rm", ref).returncode == 0
    local = _pyctr(d, ns, "images", "pull", "--plain-http", "--local", ref)
    assert local.returncode == 0, local.stderr
    assert f"{ref}: saved" not in local.stdout
    assert d.logs().count('msg="layer applied while downloading"') == 1
    run = ctr(d, ns, "run", "--rm", ref, "t2", "echo", "ok")
    assert run.stdout == "ok\n", run.stderr


def test_pyctr_user_reaches_a_private_registry_through_the_auth_stream(
    daemon: tuple[daemons.RunningDaemon, grpc.Channel, str],
) -> None:
    d, _channel, ns = daemon
    with registry(users={"alice": "s3cret"}) as private:
        ref = f"{private.host}/team/busybox:1"
        push_busybox(private, ref)
        refused = _pyctr(d, ns, "images", "pull", "--plain-http", ref)
        assert refused.returncode != 0
        assert "requires a username and password" in refused.stderr
        wrong = _pyctr(d, ns, "images", "pull", "--plain-http", "--user", "alice:nope", ref)
        assert wrong.returncode != 0
        pulled = _pyctr(d, ns, "images", "pull", "--plain-http", "--user", "alice:s3cret", ref)
        assert pulled.returncode == 0, pulled.stderr
        assert f"{ref}: saved" in pulled.stdout


def test_pyctr_refresh_token_gets_a_token_with_or_without_the_transfer_service(
    daemon: tuple[daemons.RunningDaemon, grpc.Channel, str],
) -> None:
    """ctr's --refresh: no user, and the token goes to the token server as an
    OAuth2 refresh-token grant, from the daemon (the auth stream answers
    REFRESH) or from pyctr itself (--local)."""
    d, _channel, ns = daemon
    with (
        token_server({"alice": "s3cret"}, refresh_tokens={"rt-alice": "alice"}) as tokens,
        registry(token=tokens) as private,
    ):
        ref = f"{private.host}/team/busybox:rt"
        push_busybox(private, ref)
        refused = _pyctr(d, ns, "images", "pull", "--plain-http", "--refresh", "rt-nobody", ref)
        assert refused.returncode != 0
        assert "token server refused" in refused.stderr
        for extra in ((), ("--local",)):
            tokens.requests.clear()
            pulled = _pyctr(
                d, ns, "images", "pull", "--plain-http", "--refresh", "rt-alice", *extra, ref
            )
            assert pulled.returncode == 0, pulled.stderr
            assert "POST /token grant_type=['refresh_token']" in tokens.requests, extra
            _pyctr(d, ns, "images", "rm", ref)


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        (Fault.STATUS_500, grpc.StatusCode.UNAVAILABLE, "500"),
        (Fault.EXTRA, grpc.StatusCode.FAILED_PRECONDITION, "more than the expected"),
        (Fault.BAD_DIGEST, grpc.StatusCode.FAILED_PRECONDITION, "unexpected commit digest"),
        (Fault.CUT_NO_RANGE, grpc.StatusCode.UNAVAILABLE, "connection lost"),
    ],
)
def test_registry_faults_fail_a_server_side_pull_and_leave_nothing(
    daemon: tuple[daemons.RunningDaemon, grpc.Channel, str],
    fault: Fault,
    code: grpc.StatusCode,
    message: str,
) -> None:
    """The layer streamed into the applier as it came is refused with the
    blob: no content, ingest, snapshot, image or lease is left."""
    d, channel, ns = daemon
    image = _unique_image(f"transfer-{fault.value}")

    async def main() -> None:
        async with fault_registry(_fault_registry(image, fault)) as faulty:
            ref = f"{faulty.host}/library/busybox:latest"
            with pytest.raises(grpc.RpcError) as failed:
                await asyncio.to_thread(transfer, channel, ns, oci_registry(ref), image_store(ref))
            assert failed.value.code() == code, failed.value.details()
            assert message in (failed.value.details() or "")

    asyncio.run(main())
    for listing in (("images", "ls", "-q"), ("content", "ls", "-q"), ("leases", "ls", "-q")):
        assert ctr(d, ns, *listing).stdout.split() == [], listing
    assert ctr(d, ns, "content", "active").stdout.strip().splitlines()[1:] == []
    assert "Committed" not in ctr(d, ns, "snapshots", "ls").stdout
    assert ctr(d, ns, "snapshots", "ls").stdout.strip().splitlines()[1:] == []
    assert ctr(d, ns, "version").returncode == 0
