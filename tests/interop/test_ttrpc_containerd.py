"""ttrpc against Go's: our client against containerd's ttrpc socket, and Go
ttrpc peers against ours.

containerd 1.6's ``containerd publish`` speaks gRPC (it sends the HTTP/2
preface to ``--address`` and calls Events/Publish), so it is no ttrpc
client; it is checked against our gRPC socket here all the same.  The Go
ttrpc client here is the runc shim, ``containerd-shim-runc-v2``:
its event publisher forwards every task event to ``$TTRPC_ADDRESS`` over
ttrpc.  Run against our daemon, it is also a Go ttrpc *server* our client
calls (containerd.task.v2.Task) to make those events happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import namespaces, ttrpc, typeurl
from pycontainerd.api.events import task_pb2
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.client import AsyncClient
from pycontainerd.events.exchange import Envelope
from pycontainerd.ttrpc import _wire as wire
from pycontainerd.typeurl import unmarshal_any
from tests.support.daemons import RunningDaemon
from tests.support.ttrpc_events import (
    EVENTS,
    forward_request,
    forward_until_seen,
    ttrpc_forward,
)

pytestmark = pytest.mark.interop

TASK = "containerd.task.v2.Task"


# --- our client -> containerd ----------------------------------------------------------


@contextlib.contextmanager
def ctr_events(address: str) -> Iterator[queue.Queue[str]]:
    """``ctr events`` against ``address``; its lines as they come."""
    proc = subprocess.Popen(
        ["ctr", "-a", address, "events"], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_our_client_forwards_an_event_that_ctr_events_shows(containerd: RunningDaemon) -> None:
    namespace = f"ttrpc-{uuid.uuid4().hex[:8]}"
    event = task_pb2.TaskExit(container_id="web", id="web", pid=42, exit_status=7)
    data = forward_request(namespace, "/tasks/exit", event)
    with ctr_events(containerd.address) as lines:
        deadline = time.monotonic() + 20
        seen = None
        # ctr subscribes once it is up; forward until it shows one.
        while seen is None and time.monotonic() < deadline:
            assert asyncio.run(ttrpc_forward(containerd.address + ".ttrpc", data)) == b""
            with contextlib.suppress(queue.Empty):
                seen = lines.get(timeout=0.3)
    assert seen is not None, "ctr events showed nothing"
    # "2006-01-02 15:04:05.999999 +0000 UTC <namespace> <topic> <event as JSON>"
    *_, ns, topic, payload = seen.split(" ", 6)
    assert (ns, topic) == (namespace, "/tasks/exit")
    shown = json.loads(payload)
    assert (shown["container_id"], shown["pid"], shown["exit_status"]) == ("web", 42, 7)


def _raw_exchange(path: str, frames: list[bytes], answers: int) -> list[tuple[int, int, str]]:
    """Write ``frames`` to ``path``; the (stream, code, message) of the
    responses that come back, by stream id."""
    out = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.settimeout(10)
        for data in frames:
            sock.sendall(data)
        reader = wire.FrameReader()
        while len(out) < answers:
            chunk = sock.recv(1 << 16)
            assert chunk, f"connection closed after {out}"
            for frame in reader.feed(chunk):
                assert isinstance(frame, wire.Frame) and frame.type == 2
                status = wire.decode_response(frame.data).status or wire.WireStatus()
                out.append((frame.stream_id, status.code, status.message))
    return sorted(out)  # answered as each call ends, not in order


def _request(service: str, method: str, payload: bytes = b"") -> bytes:
    return wire.encode_request(wire.Request(service, method, payload))


def test_crafted_frames_get_the_answers_containerds_ttrpc_gives(
    containerd: RunningDaemon, shared_daemon: RunningDaemon
) -> None:
    big = 4 * 1024 * 1024 + 1
    frames = [
        wire.frame(1, 1, 0, _request("no.such.Service", "Get")),
        wire.frame(3, 1, 0, _request(EVENTS, "Nope")),
        wire.frame(4, 1, 0, _request(EVENTS, "Forward")),  # an even (server) stream id
        wire.frame(5, 9, 0, b"a message type from the future"),  # ignored by both
        wire.HEADER.pack(big, 7, 1, 0) + b"\0" * big,
        wire.frame(9, 1, 0, b"\x0a\x05abc"),  # a Request that does not decode
        wire.frame(11, 1, 0, _request(EVENTS, "Forward", b"\x0a\x05abc")),  # nor its payload
    ]

    def answers(address: str) -> list[tuple[int, int, str]]:
        got = _raw_exchange(address + ".ttrpc", frames, 6)
        # The reasons after these prefixes are each decoder's own words.
        for prefix in ("unmarshal request error: ", "ttrpc: error unmarshalling payload: "):
            got = [(s, c, prefix if m.startswith(prefix) else m) for s, c, m in got]
        return got

    theirs = answers(containerd.address)
    assert theirs[:5] == [
        (1, 12, "service no.such.Service"),
        (3, 12, "method Nope"),
        (4, 3, "StreamID must be odd for client initiated streams"),
        (7, 8, "message length 4194305 exceed maximum message size of 4194304"),
        (9, 3, "unmarshal request error: "),
    ]
    assert theirs[5][:2] == (11, 13)  # INTERNAL, as the edge's decoder answers
    ours = answers(shared_daemon.address)
    assert ours[:5] == theirs[:5]
    assert ours[5][:2] == theirs[5][:2]


# --- containerd publish -> our daemon (gRPC, not ttrpc) -----------------------------------


def test_containerd_publish_reaches_our_daemon_over_grpc(daemon: RunningDaemon) -> None:
    # What 1.6's publish does: Events/Publish over gRPC at --address itself
    # (it never dials <address>.ttrpc).
    data = typeurl.marshal_any(task_pb2.TaskOOM(container_id="oom")).SerializeToString()

    async def publish() -> None:
        proc = await asyncio.create_subprocess_exec(
            "containerd",
            "--address",
            daemon.address,
            "publish",
            "--topic",
            "/x/y",
            "--namespace",
            "default",
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, err = await proc.communicate(data)
        assert proc.returncode == 0, err

    env = asyncio.run(forward_until_seen(daemon.address, publish, 'topic=="/x/y"'))
    assert (env.namespace, env.topic) == ("default", "/x/y")
    assert unmarshal_any(env.event) == task_pb2.TaskOOM(container_id="oom")


# --- Go's shim (ttrpc client and server) <-> our daemon -----------------------------------


def _bundle(base: Path, args: list[str]) -> Path:
    bundle = base / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", bundle / "rootfs" / "bin" / "busybox")
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = args
    spec["process"]["terminal"] = False
    spec["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


@contextlib.contextmanager
def go_shim(daemon: RunningDaemon, namespace: str, task_id: str) -> Iterator[tuple[str, Path]]:
    """containerd-shim-runc-v2 serving on a socket of ours, publishing to our
    daemon's ttrpc socket; yields (shim socket, bundle)."""
    if shutil.which("containerd-shim-runc-v2") is None:
        pytest.skip("containerd-shim-runc-v2 is not installed")
    base = daemon.root.parent
    bundle = _bundle(base, ["/bin/busybox", "sleep", "60"])
    # The shim logs to a fifo named "log" in its working directory and blocks
    # until someone reads it.
    os.mkfifo(bundle / "log")
    log_fd = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)
    sock = str(base / "shim.sock")
    shim = subprocess.Popen(
        [
            "containerd-shim-runc-v2",
            "-namespace",
            namespace,
            "-id",
            task_id,
            "-address",
            daemon.address,
            "-socket",
            sock,
        ],
        cwd=bundle,
        env={**os.environ, "TTRPC_ADDRESS": daemon.address + ".ttrpc"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert shim.poll() is None, shim.communicate()[1]
            assert time.monotonic() < deadline, "the shim never listened"
            time.sleep(0.02)
        yield sock, bundle
        assert shim.wait(10) == 0
    finally:
        if shim.poll() is None:
            shim.kill()
            shim.wait()
        assert shim.stderr is not None
        shim.stderr.close()
        with contextlib.suppress(OSError):
            os.read(log_fd, 1 << 20)
        os.close(log_fd)
        runc_root = Path("/run/containerd/runc") / namespace
        subprocess.run(
            ["runc", "--root", str(runc_root), "delete", "-f", task_id],
            capture_output=True,
            check=False,
        )
        with contextlib.suppress(OSError):
            runc_root.rmdir()  # the shim's runc made it for this test's namespace


def test_containerds_shim_forwards_its_task_events_to_our_daemon(daemon: RunningDaemon) -> None:
    namespace = f"ttrpc-{uuid.uuid4().hex[:8]}"
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    metadata = [(namespaces.TTRPC_HEADER, namespace)]

    async def scenario(sock: str, bundle: Path) -> list[Envelope]:
        seen: asyncio.Queue[Envelope] = asyncio.Queue()

        async def listen() -> None:
            async with AsyncClient(daemon.address, namespace) as client:
                async for env in client.events.subscribe(f'namespace=="{namespace}"'):
                    seen.put_nowait(env)

        listener = asyncio.ensure_future(listen())
        try:
            # The subscription is live once it sees a marker published after it.
            async with AsyncClient(daemon.address, namespace) as client, asyncio.timeout(20):
                while seen.empty():
                    await client.events.publish("/test/ready", task_pb2.TaskOOM())
                    await asyncio.sleep(0.1)
            async with await ttrpc.Client.connect(sock) as shim:

                async def call(method: str, request: object, timeout: float = 20) -> bytes:
                    data = request.SerializeToString()  # type: ignore[attr-defined]
                    return await shim.call(TASK, method, data, metadata=metadata, timeout=timeout)

                created = shim_pb2.CreateTaskResponse.FromString(
                    await call("Create", shim_pb2.CreateTaskRequest(id=task_id, bundle=str(bundle)))
                )
                assert created.pid > 0
                await call("Kill", shim_pb2.KillRequest(id=task_id, signal=9))
                waited = shim_pb2.WaitResponse.FromString(
                    await call("Wait", shim_pb2.WaitRequest(id=task_id))
                )
                assert waited.exit_status == 137
                await call("Delete", shim_pb2.DeleteRequest(id=task_id))
                with contextlib.suppress(ttrpc.ConnectionClosed):
                    await call("Shutdown", shim_pb2.ShutdownRequest(id=task_id))
            envelopes = []
            async with asyncio.timeout(20):
                while len(envelopes) < 3:
                    env = await seen.get()
                    if env.topic != "/test/ready":
                        envelopes.append(env)
            return envelopes
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    with go_shim(daemon, namespace, task_id) as (sock, bundle):
        envelopes = asyncio.run(scenario(sock, bundle))

    assert [(e.namespace, e.topic) for e in envelopes] == [
        (namespace, "/tasks/create"),
        (namespace, "/tasks/exit"),
        (namespace, "/tasks/delete"),
    ]
    create, exit_, delete = (unmarshal_any(e.event) for e in envelopes)
    assert isinstance(create, task_pb2.TaskCreate) and create.container_id == task_id
    assert create.bundle == str(bundle)
    assert isinstance(exit_, task_pb2.TaskExit) and exit_.exit_status == 137
    assert isinstance(delete, task_pb2.TaskDelete) and delete.exit_status == 137
