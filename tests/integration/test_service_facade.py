"""The service facade (``pycontainerd.service``) on our daemon with real runc.

One daemon and one registry serve the module: the busybox image is pushed
to a Debian ``docker-registry`` on 127.0.0.1 and pulled through the facade,
then every method is run against real tasks.  Each test uses containers of
its own and removes them (tasks, containers, snapshots) even when it fails;
the daemon's fixture reaps whatever shim or runc state is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.client import AsyncClient, Client
from pycontainerd.oci.spec import with_process_args
from pycontainerd.remotes import Resolver
from pycontainerd.service import (
    AsyncDefaultService,
    CreateContainerRequest,
    DefaultService,
    ExecTaskRequest,
    ProcessStatus,
    TaskInfo,
    TaskStopTimeout,
    mount_container_snapshot,
    mount_container_snapshot_async,
    mount_snapshot,
)
from pycontainerd.snapshots import Kind
from tests.support import tasks
from tests.support.registry import BuiltImage, busybox_image, push_image, registry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTTER = "overlayfs"


@dataclass
class Env:
    daemon: tasks.Daemon
    namespace: str
    ref: str
    other_ref: str
    image: BuiltImage
    service: DefaultService
    #: The namespaces whose runc state the daemon's fixture reaps at the end.
    namespaces: list[str]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    image = busybox_image(b"service-facade")
    ns = tasks.namespace()
    namespaces = [ns]
    with registry() as reg, tasks.daemon("", namespaces) as daemon:
        ref = f"{reg.host}/library/busybox:latest"
        other_ref = f"{reg.host}/library/busybox:other"

        async def fill() -> None:
            async with Resolver(plain_http=True) as resolver:
                await push_image(resolver, ref, image)
                await push_image(resolver, other_ref, image)

        asyncio.run(fill())
        client = Client(daemon.address, ns)
        service = DefaultService(client)
        try:
            service.pull_image(ref, plain_http=True)
            yield Env(daemon, ns, ref, other_ref, image, service, namespaces)
        finally:
            service.close()
            client.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def removed_after(service: DefaultService, *ids: str) -> Iterator[None]:
    """Delete the containers ``ids`` (their tasks killed first) and their
    snapshots when the block ends, however it ends."""
    try:
        yield
    finally:
        for id in ids:
            with contextlib.suppress(errdefs.NotFound):
                service.delete_task(id, force=True)
            with contextlib.suppress(errdefs.NotFound):
                service.delete_container(id, cleanup_snapshot=True)


def create(env: Env, id: str, *args: str, **labels: str) -> None:
    request = CreateContainerRequest(
        id, env.ref, labels=labels, spec_opts=[with_process_args(*args)] if args else ()
    )
    env.service.create_container(request)


def wait_stopped(service: DefaultService, id: str, timeout: float = 20) -> TaskInfo:
    deadline = time.monotonic() + timeout
    while (info := service.get_task(id)).status != ProcessStatus.STOPPED:
        assert time.monotonic() < deadline, f"task {id} still {info.status}"
        time.sleep(0.02)
    return info


def wait_handling(pid: int, field: str, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Wait until ``pid`` has set its disposition of ``sig`` (``field``:
    ``SigCgt`` for a handler, ``SigIgn`` for ignored).  Until then its shell
    may not have run its ``trap`` yet -- or may even be runc's init, which
    dies of SIGTERM with Go's exit status 2."""
    deadline = time.monotonic() + timeout
    while True:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        mask = next(int(line.split()[1], 16) for line in lines if line.startswith(field + ":"))
        if mask & (1 << (sig - 1)):
            return
        assert time.monotonic() < deadline, f"{pid} never set {field} for signal {sig}"
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- images ------------------------------------------------------------------------------


def test_pull_get_list_and_delete_images(env: Env) -> None:
    service = env.service
    pulled = service.get_image(env.ref)
    assert pulled.name == env.ref
    assert pulled.target.digest == env.image.manifest.digest
    assert env.ref in [i.name for i in service.list_images()]
    assert [i.name for i in service.list_images(f"name=={env.ref}")] == [env.ref]
    # The pull unpacked it: its layer is a committed snapshot.
    committed = [s for s in service.list_snapshots(SNAPSHOTTER) if s.kind == Kind.COMMITTED]
    assert committed

    other = service.pull_image(env.other_ref, unpack=False, plain_http=True)
    assert (other.name, other.target.digest) == (env.other_ref, env.image.manifest.digest)
    service.delete_image(env.other_ref, synchronous=True)
    with pytest.raises(errdefs.NotFound):
        service.get_image(env.other_ref)
    assert env.other_ref not in [i.name for i in service.list_images()]
    # The content the first image still holds survives the collection.
    assert service.get_image(env.ref).target.digest == env.image.manifest.digest


def test_pull_of_a_missing_tag_is_not_found(env: Env) -> None:
    missing = env.ref.replace(":latest", ":absent")
    with pytest.raises(errdefs.NotFound):
        env.service.pull_image(missing, plain_http=True)


# --- containers --------------------------------------------------------------------------


def test_create_get_list_by_label_and_delete_containers(env: Env) -> None:
    service = env.service
    web, db = unique("web"), unique("db")
    with removed_after(service, web, db):
        create(env, web, **{"com.example.app": "web"})
        create(env, db, **{"com.example.app": "db"})
        record = service.get_container(web)
        assert (record.id, record.image) == (web, env.ref)
        assert (record.snapshotter, record.snapshot_key) == (SNAPSHOTTER, web)
        assert record.labels["com.example.app"] == "web"
        assert {web, db} <= {c.id for c in service.list_containers()}
        assert [c.id for c in service.list_containers(f"id=={db}")] == [db]
        assert [c.id for c in service.list_containers_by_label("com.example.app", "web")] == [web]
        assert service.list_containers_by_label("com.example.app", "none") == []
        assert web in [s.name for s in service.list_snapshots(SNAPSHOTTER)]

        service.delete_container(web, cleanup_snapshot=True)
        with pytest.raises(errdefs.NotFound):
            service.get_container(web)
        assert web not in [s.name for s in service.list_snapshots(SNAPSHOTTER)]
        # Without cleanup_snapshot the snapshot is left to garbage collection.
        service.delete_container(db)
        with pytest.raises(errdefs.NotFound):
            service.get_container(db)
        with contextlib.suppress(errdefs.NotFound):
            service.remove_snapshot(SNAPSHOTTER, db)


def test_create_container_checks_its_request(env: Env) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        env.service.create_container(CreateContainerRequest(unique("noimage")))
    with pytest.raises(errdefs.NotFound):
        env.service.create_container(CreateContainerRequest(unique("x"), "example.com/absent:1"))
    with pytest.raises(errdefs.InvalidArgument):
        CreateContainerRequest("bad/id", env.ref)


# --- tasks -------------------------------------------------------------------------------


def test_start_get_list_stop_and_delete_a_task(env: Env) -> None:
    service = env.service
    id = unique("graceful")
    with removed_after(service, id):
        create(env, id, "sh", "-c", 'trap "exit 7" TERM; sleep 100 & wait')
        started = service.start_task(id)
        assert started.status == ProcessStatus.RUNNING and started.pid > 0
        wait_handling(started.pid, "SigCgt")
        got = service.get_task(id)
        assert (got.container_id, got.pid, got.status) == (id, started.pid, ProcessStatus.RUNNING)
        assert id in [t.container_id for t in service.list_tasks()]
        assert id in [t.container_id for t in service.list_tasks("status==running")]
        assert id not in [t.container_id for t in service.list_tasks("status==stopped")]
        assert [t.container_id for t in service.list_tasks(f"pid=={started.pid}")] == [id]

        assert service.stop_task(id, timeout=10) == 7
        stopped = service.get_task(id)
        assert (stopped.status, stopped.exit_status) == (ProcessStatus.STOPPED, 7)
        assert service.stop_task(id) == 7  # a stopped task: nothing to do
        with pytest.raises(errdefs.FailedPrecondition):
            service.delete_container(id)  # its task is still there
        assert service.delete_task(id) == 7
        with pytest.raises(errdefs.NotFound):
            service.get_task(id)
        assert not alive(started.pid)


def test_stop_of_a_task_ignoring_sigterm_times_out_then_force_kills_it(env: Env) -> None:
    service = env.service
    id = unique("stubborn")
    with removed_after(service, id):
        create(env, id, "sh", "-c", 'trap "" TERM; sleep 100')
        pid = service.start_task(id).pid
        wait_handling(pid, "SigIgn")
        began = time.monotonic()
        with pytest.raises(TaskStopTimeout) as raised:
            service.stop_task(id, timeout=0.5)
        assert 0.5 <= time.monotonic() - began < 5
        assert isinstance(raised.value, errdefs.DeadlineExceeded)
        assert id in str(raised.value)
        assert service.get_task(id).status == ProcessStatus.RUNNING
        assert alive(pid)

        assert service.stop_task(id, timeout=0.5, force=True) == 137  # 128 + SIGKILL
        assert service.get_task(id).status == ProcessStatus.STOPPED
        assert service.delete_task(id) == 137
        assert not alive(pid)


def test_stop_task_checks_its_timeout_and_signal(env: Env) -> None:
    service = env.service
    id = unique("checks")
    with removed_after(service, id):
        create(env, id, "sleep", "100")
        service.start_task(id)
        for timeout in (0, -1, float("nan"), float("inf")):
            with pytest.raises(errdefs.InvalidArgument):
                service.stop_task(id, timeout=timeout)
        with pytest.raises(errdefs.InvalidArgument):
            service.stop_task(id, signal="SIGNOPE")
        assert service.get_task(id).status == ProcessStatus.RUNNING
        # sleep is pid 1 of its namespace: SIGTERM is ignored, SIGKILL is not.
        assert service.stop_task(id, signal="SIGKILL", timeout=5) == 137


def test_delete_task_with_force_kills_a_running_task(env: Env) -> None:
    service = env.service
    id = unique("forced")
    with removed_after(service, id):
        create(env, id, "sleep", "100")
        pid = service.start_task(id).pid
        with pytest.raises(errdefs.FailedPrecondition):
            service.delete_task(id)
        assert service.delete_task(id, force=True) == 137
        assert not alive(pid)
        service.delete_container(id, cleanup_snapshot=True)
        with pytest.raises(errdefs.NotFound):
            service.get_container(id)


def test_exec_task_returns_exit_codes_and_captures_output(env: Env) -> None:
    service = env.service
    id = unique("exec")
    with removed_after(service, id):
        create(env, id, "sleep", "100")
        service.start_task(id)
        out, err = io.BytesIO(), io.BytesIO()
        script = "echo out; echo err >&2; exit 3"
        request = ExecTaskRequest(["sh", "-c", script], stdout=out, stderr=err)
        assert service.exec_task(id, request) == 3
        assert (out.getvalue(), err.getvalue()) == (b"out\n", b"err\n")

        out = io.BytesIO()
        request = ExecTaskRequest(
            ["sh", "-c", 'echo "$GREETING"; pwd'], env=["GREETING=hi"], workdir="/tmp", stdout=out
        )
        assert service.exec_task(id, request) == 0
        assert out.getvalue() == b"hi\n/tmp\n"

        out = io.BytesIO()
        assert service.exec_task(id, ExecTaskRequest(["cat"], stdin=b"fed\n", stdout=out)) == 0
        assert out.getvalue() == b"fed\n"

        assert service.exec_task(id, ExecTaskRequest(["true"])) == 0  # no streams at all
        with pytest.raises(errdefs.ContainerdError):
            service.exec_task(id, ExecTaskRequest(["/no/such/program"]))
        # Nothing is left of the execs: the task's only process is its init.
        assert service.get_task(id).status == ProcessStatus.RUNNING


def test_exec_task_streaming_sends_stdin_and_reads_stdout(env: Env) -> None:
    service = env.service
    id = unique("stream")
    with removed_after(service, id):
        create(env, id, "sleep", "100")
        service.start_task(id)
        with service.exec_task_streaming(
            id, ExecTaskRequest(["sh", "-c", "cat; echo bye >&2"])
        ) as s:
            assert s.pid > 0
            s.stdin.write(b"ping\n")
            got = b""
            while len(got) < 5:  # an answer before stdin ends: it streams
                got += s.stdout.read(5 - len(got))
            assert got == b"ping\n"
            s.write(b"pong\n")
            s.close_stdin()
            assert s.read_stdout() == b"pong\n"  # to EOF: the process is done
            assert s.read_stderr() == b"bye\n"
            assert s.wait() == 0

        # More than a pipe holds: the process waits for the reader, nothing is lost.
        line = "0123456789" * 10
        script = f"i=0; while [ $i -lt 3000 ]; do echo {line}; i=$((i+1)); done"
        with service.exec_task_streaming(id, ExecTaskRequest(["sh", "-c", script])) as s:
            s.close_stdin()
            assert s.read_stdout() == f"{line}\n".encode() * 3000
            assert s.wait() == 0

        # close() kills a process still running and leaves nothing behind.
        session = service.exec_task_streaming(id, ExecTaskRequest(["sleep", "100"]))
        pid = session.pid
        assert alive(pid)
        session.close()
        session.close()  # again: nothing
        assert not alive(pid)

        with pytest.raises(errdefs.InvalidArgument):
            service.exec_task_streaming(id, ExecTaskRequest(["cat"], stdout=io.BytesIO()))


def test_start_task_with_stdio_copies_the_output_through_fifos(env: Env, tmp_path: Path) -> None:
    # This program's own stdio: run in a child whose stdout the test reads.
    id = unique("stdio")
    fifo_dir = tmp_path / "fifo"
    script = f"""
import time
from pycontainerd.client import Client
from pycontainerd.oci.spec import with_process_args
from pycontainerd.service import CreateContainerRequest, DefaultService, ProcessStatus

with DefaultService(Client({env.daemon.address!r}, {env.namespace!r})) as service:
    service.create_container(CreateContainerRequest(
        {id!r}, {env.ref!r}, spec_opts=[with_process_args("echo", "hello from the task")]
    ))
    service.start_task({id!r}, use_stdio=True, fifo_dir={str(fifo_dir)!r})
    while service.get_task({id!r}).status != ProcessStatus.STOPPED:
        time.sleep(0.02)
    print("exit", service.delete_task({id!r}), flush=True)
    service.delete_container({id!r}, cleanup_snapshot=True)
"""
    with removed_after(env.service, id):
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode() == "hello from the task\nexit 0\n"
        assert list(fifo_dir.iterdir()) == []  # the FIFOs went with the task


def test_start_task_checks_its_arguments(env: Env) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        env.service.start_task("bad/id")
    with pytest.raises(errdefs.InvalidArgument):
        env.service.start_task(unique("x"), terminal=True)
    with pytest.raises(errdefs.NotFound):
        env.service.start_task(unique("absent"))


# --- snapshots ---------------------------------------------------------------------------


def test_snapshots_commit_prepare_mount_and_a_container_from_a_snapshot(env: Env) -> None:
    service = env.service
    first, second = unique("first"), unique("second")
    committed, prepared = unique("committed"), unique("prepared")
    try:
        with removed_after(service, first, second):
            create(env, first)
            mounted = mount_container_snapshot(service, first)
            assert mounted.info.id == first and mounted.info.snapshot_key == first
            assert (mounted.dir / "bin" / "busybox").is_file()
            (mounted.dir / "marker").write_text("written through the mount\n")
            mounted.unmount()
            mounted.unmount()  # again: nothing
            assert not mounted.dir.exists()

            service.commit_snapshot(SNAPSHOTTER, committed, first, labels={"made-by": "test"})
            infos = {s.name: s for s in service.list_snapshots(SNAPSHOTTER)}
            assert infos[committed].kind == Kind.COMMITTED
            assert infos[committed].labels["made-by"] == "test"
            assert "containerd.io/gc.root" in infos[committed].labels  # kept by the collector
            assert first not in infos  # a commit consumes its active snapshot
            assert [
                s.name for s in service.list_snapshots(SNAPSHOTTER, 'labels."made-by"==test')
            ] == [committed]

            mounts = service.prepare_snapshot(SNAPSHOTTER, prepared, committed)
            assert mounts and mounts == service.snapshot_mounts(SNAPSHOTTER, prepared)
            directory, unmount = mount_snapshot(service, SNAPSHOTTER, prepared)
            try:
                assert (directory / "marker").read_text() == "written through the mount\n"
            finally:
                unmount()
            assert not directory.exists()

            service.create_container_from_snapshot(
                CreateContainerRequest(
                    second,
                    env.ref,
                    snapshot_id=prepared,
                    snapshotter=SNAPSHOTTER,
                    spec_opts=[
                        with_process_args(
                            "sh", "-c", 'test "$(cat /marker)" = "written through the mount"'
                        )
                    ],
                )
            )
            record = service.get_container(second)
            assert (record.snapshot_key, record.image) == (prepared, env.ref)
            service.start_task(second)
            assert wait_stopped(service, second).exit_status == 0
            service.delete_task(second)
            service.delete_container(second, cleanup_snapshot=True)
            assert prepared not in [s.name for s in service.list_snapshots(SNAPSHOTTER)]
    finally:
        with contextlib.suppress(errdefs.NotFound):
            service.remove_snapshot(SNAPSHOTTER, prepared)
        with contextlib.suppress(errdefs.NotFound):
            service.remove_snapshot(SNAPSHOTTER, committed)
    assert committed not in [s.name for s in service.list_snapshots(SNAPSHOTTER)]


def test_a_container_from_a_snapshot_without_an_image(env: Env) -> None:
    service = env.service
    id, key = unique("bare"), unique("bare-root")
    parent = next(s.name for s in service.list_snapshots(SNAPSHOTTER) if s.kind == Kind.COMMITTED)
    try:
        service.prepare_snapshot(SNAPSHOTTER, key, parent)
        with removed_after(service, id):
            service.create_container_from_snapshot(
                CreateContainerRequest(
                    id,
                    snapshot_id=key,
                    snapshotter=SNAPSHOTTER,
                    spec_opts=[with_process_args("/bin/true")],
                )
            )
            assert service.get_container(id).image == ""
            service.start_task(id)
            assert wait_stopped(service, id).exit_status == 0
        with pytest.raises(errdefs.InvalidArgument):
            service.create_container_from_snapshot(CreateContainerRequest(unique("nosnap")))
        with pytest.raises(errdefs.NotFound):
            service.create_container_from_snapshot(
                CreateContainerRequest(unique("x"), snapshot_id=unique("absent"))
            )
    finally:
        with contextlib.suppress(errdefs.NotFound):
            service.remove_snapshot(SNAPSHOTTER, key)


# --- async -------------------------------------------------------------------------------


def test_the_async_facade_runs_a_container_end_to_end(env: Env) -> None:
    id = unique("async")

    async def main() -> None:
        async with AsyncDefaultService(AsyncClient(env.daemon.address, env.namespace)) as service:
            try:
                assert (await service.get_image(env.ref)).name == env.ref
                pulled = await service.pull_image(env.other_ref, unpack=False, plain_http=True)
                assert pulled.target.digest == env.image.manifest.digest
                assert env.other_ref in [i.name for i in await service.list_images()]
                await service.delete_image(env.other_ref, synchronous=True)
                with pytest.raises(errdefs.NotFound):
                    await service.get_image(env.other_ref)
                await service.create_container(
                    CreateContainerRequest(
                        id, env.ref, spec_opts=[with_process_args("sleep", "100")]
                    )
                )
                assert [c.id for c in await service.list_containers(f"id=={id}")] == [id]
                started = await service.start_task(id)
                assert (await service.get_task(id)).pid == started.pid

                out = io.BytesIO()
                request = ExecTaskRequest(["sh", "-c", "echo async; exit 5"], stdout=out)
                assert await service.exec_task(id, request) == 5
                assert out.getvalue() == b"async\n"

                async with await service.exec_task_streaming(id, ExecTaskRequest(["cat"])) as s:
                    await s.write(b"through a pipe")
                    await s.close_stdin()
                    assert await s.read_stdout() == b"through a pipe"
                    assert await s.wait() == 0

                mounted = await mount_container_snapshot_async(service, id)
                async with mounted:
                    assert (mounted.dir / "bin" / "busybox").is_file()
                assert not mounted.dir.exists()

                with pytest.raises(TaskStopTimeout):
                    await service.stop_task(id, timeout=0.3)
                assert await service.stop_task(id, timeout=1, force=True) == 137
                assert await service.delete_task(id) == 137
                await service.delete_container(id, cleanup_snapshot=True)
                assert await service.list_containers(f"id=={id}") == []
            finally:
                with contextlib.suppress(errdefs.NotFound):
                    await service.delete_task(id, force=True)
                with contextlib.suppress(errdefs.NotFound):
                    await service.delete_container(id, cleanup_snapshot=True)

    asyncio.run(main())


# --- networking --------------------------------------------------------------------------


def _cni() -> Any:
    try:
        from pycontainerd import cni
    except ImportError:
        pytest.skip("pycontainerd.cni has not landed")
    if not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("CNI plugins are not installed (make deps installs them)")
    return cni


def bridge_ports(bridge: str) -> list[str]:
    shown = subprocess.run(
        ["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True, check=True
    )
    return shown.stdout.splitlines()


def test_setup_and_remove_network_through_the_facade(env: Env, tmp_path: Path) -> None:
    cni = _cni()
    bridge = f"pysv{uuid.uuid4().hex[:8]}"
    subnet = ipaddress.ip_network(f"10.214.{random.randrange(1, 250)}.0/24")
    conf_dir, data_dir = tmp_path / "net.d", tmp_path / "ipam"
    conf_dir.mkdir()
    (conf_dir / "10-facade.conflist").write_text(
        f"""{{
  "cniVersion": "1.0.0",
  "name": "{bridge}",
  "plugins": [
    {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false,
      "ipam": {{"type": "host-local", "subnet": "{subnet}", "dataDir": "{data_dir}"}}}}
  ]
}}
"""
    )
    netns_dir = tmp_path / "netns"
    network = cni.Network.load(
        conf_dir=conf_dir,
        bin_dirs=cni.DEFAULT_BIN_DIRS,
        netns_dir=netns_dir,
        cache_dir=tmp_path / "cache",
    )
    service = DefaultService(env.service.client, network=network)
    id = unique("net")
    try:
        with removed_after(service, id):
            create(env, id, "sleep", "100")
            task = service.start_task(id)
            result = service.setup_network(task, id)
            (address,) = [ip for ip in result.ips if ip.version == 4]
            assert address.ip in subnet
            out = io.BytesIO()
            assert (
                service.exec_task(id, ExecTaskRequest(["cat", "/proc/net/fib_trie"], stdout=out))
                == 0
            )
            assert str(address.ip) in out.getvalue().decode()
            allocated = [p.name for p in data_dir.rglob("*") if p.is_file()]
            assert str(address.ip) in allocated
            assert len(list(netns_dir.iterdir())) == 1  # kept for the teardown
            assert bridge_ports(bridge)  # the container's veth
            # The host reaches it over the bridge: nothing listens, and the
            # container's own stack says so (no route would time out instead).
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((str(address.ip), 9), timeout=5).close()

            # Torn down after the task has gone: the kept namespace serves DEL.
            service.stop_task(id, timeout=0.2, force=True)
            service.remove_network(task, id)
            service.remove_network(task, id)  # again: fine
            assert not [p for p in data_dir.rglob("*") if p.name == str(address.ip)]
            assert list(netns_dir.iterdir()) == []
            assert bridge_ports(bridge) == []
    finally:
        with contextlib.suppress(errdefs.ContainerdError):
            service.remove_network(None, id)  # a failed test leaves no netns mount
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)


def test_resolve_conf_source_delegates_to_cni(env: Env, tmp_path: Path) -> None:
    cni = _cni()
    expected = cni.resolve_conf_source(tmp_path)
    assert env.service.resolve_conf_source(tmp_path) == expected
    assert expected.is_file()


# --- the README's example ----------------------------------------------------------------

README_EXAMPLE = """\
import io
import os

from pycontainerd.oci.spec import with_process_args
from pycontainerd.service import CreateContainerRequest, DefaultService, ExecTaskRequest

image = os.environ.get("IMAGE", "docker.io/library/busybox:latest")
plain_http = image.startswith(("localhost", "127.0.0.1"))  # a local test registry

# CONTAINERD_ADDRESS / CONTAINERD_NAMESPACE, else our socket and "default".
with DefaultService.from_env() as service:
    service.pull_image(image, plain_http=plain_http)
    service.create_container(
        CreateContainerRequest("hello", image, spec_opts=[with_process_args("sleep", "60")])
    )
    task = service.start_task("hello")
    print("started, pid", task.pid)

    out = io.BytesIO()
    code = service.exec_task("hello", ExecTaskRequest(["echo", "hi from exec"], stdout=out))
    print("exec exited", code, "and said", out.getvalue().decode().strip())

    # sleep is the container's init and ignores SIGTERM: force a SIGKILL after 2s.
    print("stopped with", service.stop_task("hello", timeout=2, force=True))
    service.delete_task("hello")
    service.delete_container("hello", cleanup_snapshot=True)
"""


def _readme_block() -> str | None:
    """The example as README.md shows it, once the section is there."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)
    found = [b for b in blocks if "DefaultService.from_env()" in b]
    return found[0] if found else None


def test_the_readme_example_runs_as_written(env: Env) -> None:
    block = _readme_block()
    if block is not None:
        assert block == README_EXAMPLE
    namespace = unique("readme")
    env.namespaces.append(namespace)
    child_env = {
        **os.environ,
        "CONTAINERD_ADDRESS": env.daemon.address,
        "CONTAINERD_NAMESPACE": namespace,
        "IMAGE": env.ref,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", README_EXAMPLE],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env=child_env,
            timeout=90,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr.decode()
        lines = done.stdout.decode().splitlines()
        assert re.fullmatch(r"started, pid \d+", lines[0])
        assert lines[1:] == ["exec exited 0 and said hi from exec", "stopped with 137"]
        with DefaultService(Client(env.daemon.address, namespace), owns_client=True) as service:
            assert service.list_containers() == []
    finally:
        with (
            DefaultService(Client(env.daemon.address, namespace), owns_client=True) as service,
            removed_after(service, "hello"),
        ):
            pass
