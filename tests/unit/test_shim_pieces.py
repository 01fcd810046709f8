"""The shim's pieces that need no root and no runc: the entry point's flags,
addresses and hand-rolled protobuf, the IO pump, the event publisher."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from pycontainerd import ttrpc
from pycontainerd.api.events import task_pb2 as events
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
from pycontainerd.shim import _io, _publisher, _runc, address, main
from pycontainerd.shim._reaper import exit_status

pytestmark = pytest.mark.unit


def test_flags_parse_as_gos_flag_package_and_the_action_follows() -> None:
    flags, action = main.parse_args(
        [
            "-namespace",
            "ns",
            "--address=/run/c.sock",
            "-publish-binary",
            "/bin/c",
            "-id",
            "x",
            "-debug",
            "start",
        ]
    )
    assert flags == {
        "namespace": "ns",
        "address": "/run/c.sock",
        "publish-binary": "/bin/c",
        "id": "x",
        "debug": "true",
    }
    assert action == "start"
    assert main.parse_args(["-namespace", "ns"]) == ({"namespace": "ns"}, "")
    with pytest.raises(main.UsageError, match="not defined: -bogus"):
        main.parse_args(["-bogus", "start"])
    with pytest.raises(main.UsageError, match="needs an argument"):
        main.parse_args(["-id"])


def test_a_group_has_one_socket_and_groups_do_not_share() -> None:
    path = main.socket_path("/run/containerd/containerd.sock", "default", "")
    assert path == main.socket_path("/run/containerd/containerd.sock", "default", "")
    assert path.startswith(main.SOCKET_DIR + "/") and len(path) < 108
    others = {
        main.socket_path("/run/containerd/containerd.sock", "other", ""),
        main.socket_path("/run/containerd/containerd.sock", "default", "pod-1"),
        main.socket_path("/run/pycontainerd/pycontainerd.sock", "default", ""),
    }
    assert path not in others and len(others) == 3


def test_pods_group_by_their_sandbox_annotation(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": "sandbox-7"}})
    )
    assert main.group_of(str(tmp_path), "c1") == "sandbox-7"
    (tmp_path / "config.json").write_text(json.dumps({"annotations": {"other": "x"}}))
    assert main.group_of(str(tmp_path), "c1") == ""
    assert main.group_of(str(tmp_path / "missing"), "c1") == ""


def test_the_shim_cgroup_is_read_from_the_runtime_options_containerd_pipes_in() -> None:
    options = oci_pb2.Options(shim_cgroup="/pods/shims", binary_name="crun")
    packed = any_pb2.Any(type_url="containerd.runc.v1.Options", value=options.SerializeToString())
    assert main.shim_cgroup_of(packed.SerializeToString()) == "/pods/shims"
    assert main.shim_cgroup_of(b"") == ""
    other = any_pb2.Any(type_url="something.Else", value=options.SerializeToString())
    assert main.shim_cgroup_of(other.SerializeToString()) == ""


def test_delete_prints_a_delete_response_protobuf_decodes() -> None:
    data = main.delete_response(4242, 137, 1_700_000_000_123_456_789)
    response = shim_pb2.DeleteResponse.FromString(data)
    assert (response.pid, response.exit_status) == (4242, 137)
    assert (response.exited_at.seconds, response.exited_at.nanos) == (1_700_000_000, 123_456_789)


def test_delete_after_a_dead_server_removes_its_socket_log_and_lock(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed server leaves its files; the first ``delete`` of one of its
    containers finds nobody listening and removes them, so they do not
    gather in the socket directory."""
    import socket
    import tempfile

    # A socket's path has room for ~107 bytes, and the name is 64 of them.
    tmp_path = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp_path))
    monkeypatch.setattr(main, "SOCKET_DIR", str(tmp_path))
    monkeypatch.setattr(address, "SOCKET_DIR", str(tmp_path))
    path = main.socket_path("/run/d.sock", "ns", "")
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)  # bound, never listening: as after SIGKILL
    Path(path + ".log").write_text("the server's last words\n")
    os.close(main.lock_group(path))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "address").write_text("unix://" + path)
    assert main._ask_server(str(bundle / "address"), "c1", "ns") is None
    assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_a_lock_taken_on_a_removed_lock_file_is_taken_again(tmp_path: Path) -> None:
    """A server leaving removes the group's lock file while holding it; a
    ``start`` that opened the old file must not think it holds the lock."""
    import fcntl
    import threading

    path = str(tmp_path / "group")
    held = main.lock_group(path)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(main.lock_group(path)))
    waiter.start()
    waiter.join(0.2)
    assert got == []  # blocked on the old file
    main.remove_group(path)
    os.close(held)
    waiter.join(5)
    (fd,) = got
    try:
        assert os.fstat(fd).st_ino == os.stat(path + ".lock").st_ino
        other = os.open(path + ".lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
    finally:
        os.close(fd)


def test_start_imports_nothing_heavy() -> None:
    """``start`` runs on every ``ctr run``: no asyncio, protobuf or grpc,
    not even ``typing`` (which the package's ``__init__`` used to cost)."""
    heavy = ("asyncio", "google.protobuf", "grpc", "json", "subprocess", "typing")
    code = (
        "import sys; import pycontainerd.shim.main; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_exit_statuses_are_codes_or_128_plus_the_signal() -> None:
    assert exit_status(3 << 8) == 3
    assert exit_status(9) == 137


def test_a_pump_copies_until_eof_then_closes_its_sink() -> None:
    async def scenario() -> bytes:
        src_r, src_w = os.pipe()
        dst_r, dst_w = os.pipe()
        pump = _io.Pump(src_r, dst_w)
        payload = os.urandom(_io.PUMP_LIMIT * 3)
        loop = asyncio.get_running_loop()
        writer = loop.run_in_executor(None, _write_all, src_w, payload)
        reader = loop.run_in_executor(None, _read_all, dst_r)
        await writer
        await pump.done
        data = await reader
        assert data == payload
        return data

    assert asyncio.run(scenario())


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


def test_a_pump_whose_reader_left_keeps_draining_its_source() -> None:
    async def scenario() -> None:
        src_r, src_w = os.pipe()
        dst_r, dst_w = os.pipe()
        os.close(dst_r)  # the reader is gone: writes fail with EPIPE
        pump = _io.Pump(src_r, dst_w)
        os.write(src_w, b"x" * 60_000)  # under a pipe's 64 KiB: no block
        os.close(src_w)
        await asyncio.wait_for(pump.done, 5)

    asyncio.run(scenario())


def test_the_publisher_queues_while_the_daemon_is_down_and_delivers_in_order(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "daemon.ttrpc")

    async def scenario() -> list[tuple[str, str, str]]:
        publisher = _publisher.Publisher(path)
        publisher.publish("ns1", events.TaskStart(container_id="a", pid=1))
        publisher.publish("ns2", events.TaskExit(container_id="b", exit_status=3))
        await asyncio.sleep(0.3)  # nobody listens yet
        received: list[tuple[str, str, str]] = []

        async def forward(payload: bytes, context: ttrpc.ServerContext) -> bytes:
            envelope = events_pb2.ForwardRequest.FromString(payload).envelope
            received.append(
                (
                    context.get("containerd-namespace-ttrpc") or "",
                    envelope.topic,
                    envelope.event.type_url,
                )
            )
            return b""

        server = ttrpc.Server()
        server.register(_publisher.EVENTS_SERVICE, "Forward", forward)
        await server.start(path)
        try:
            await publisher.drain(10)
        finally:
            await server.shutdown()
        return received

    assert asyncio.run(scenario()) == [
        ("ns1", "/tasks/start", "containerd.events.TaskStart"),
        ("ns2", "/tasks/exit", "containerd.events.TaskExit"),
    ]


def test_the_publishers_queue_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_publisher, "MAX_QUEUED", 3)

    async def scenario() -> int:
        publisher = _publisher.Publisher(str(tmp_path / "nobody.ttrpc"))
        for n in range(5):
            publisher.publish("ns", events.TaskOOM(container_id=f"c{n}"))
        return publisher.dropped

    assert asyncio.run(scenario()) == 2


def test_file_log_uris_give_the_process_the_file_itself(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "out.log"

    async def scenario() -> None:
        process_io = _io.ProcessIO("", f"file://{log}", f"file://{log}", terminal=False)
        stdin, stdout, stderr = await process_io.open(None, "c", "ns")  # type: ignore[arg-type]
        assert stdout == stderr
        os.write(stdout, b"line\n")
        os.close(os.dup(stdin))
        process_io.close()

    asyncio.run(scenario())
    assert log.read_text() == "line\n"


def test_only_an_init_without_a_pid_namespace_of_its_own_has_its_leftovers_killed(
    tmp_path: Path,
) -> None:
    """As containerd's ``ShouldKillAllOnExit``: with a pid namespace of its
    own the kernel ends the rest when the init exits, and a ``runc kill
    --all`` (which freezes the cgroup) would only race the Delete."""
    from pycontainerd.shim._service import _spec_facts

    def spec(*namespaces: dict[str, str]) -> str:
        (tmp_path / "config.json").write_text(json.dumps({"linux": {"namespaces": namespaces}}))
        return str(tmp_path)

    assert not _spec_facts(spec({"type": "mount"}, {"type": "pid"}))[0]
    assert _spec_facts(spec({"type": "mount"}))[0]
    assert _spec_facts(spec({"type": "pid", "path": "/proc/1/ns/pid"}))[0]
    assert _spec_facts(str(tmp_path / "no-such-bundle"))[0]


def test_only_a_spec_without_poststop_hooks_lets_runc_delete_run_after_the_answer(
    tmp_path: Path,
) -> None:
    """runc runs poststop hooks in ``delete``: a Delete must wait for them, so
    only a spec without any has its ``runc delete`` run in the background."""
    from pycontainerd.shim._service import _spec_facts

    def spec(document: object) -> str:
        (tmp_path / "config.json").write_text(json.dumps(document))
        return str(tmp_path)

    assert not _spec_facts(spec({"hooks": {"prestart": [{"path": "/bin/true"}]}}))[1]
    assert not _spec_facts(spec({}))[1]
    assert _spec_facts(spec({"hooks": {"poststop": [{"path": "/bin/true"}]}}))[1]
    assert _spec_facts(spec({"hooks": ["not", "a", "map"]}))[1]
    assert _spec_facts(str(tmp_path / "no-such-bundle"))[1]


# --- the exec fifo, as Start releases a runc container -------------------------------------


def _fifo(tmp_path: Path) -> tuple[str, int]:
    path = str(tmp_path / "exec.fifo")
    os.mkfifo(path, 0o600)
    return path, os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def test_the_exec_fifo_gives_the_inits_byte_once_it_execs(tmp_path: Path) -> None:
    asyncio.run(_byte_once_it_execs(tmp_path))


async def _byte_once_it_execs(tmp_path: Path) -> None:
    path, fd = _fifo(tmp_path)
    exited = asyncio.Event()
    try:
        reading = asyncio.ensure_future(_runc._read_exec_fifo(fd, exited))
        await asyncio.sleep(0.05)
        assert not reading.done(), "no writer yet: it must wait, not see an end"
        writer = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        os.write(writer, b"0")
        await asyncio.sleep(0.02)
        assert not reading.done(), "the init has not exec'd (closed it) yet"
        os.close(writer)
        assert await asyncio.wait_for(reading, 5) == b"0"
    finally:
        os.close(fd)


def test_an_init_that_exits_without_writing_gives_nothing_and_no_hang(
    tmp_path: Path,
) -> None:
    asyncio.run(_nothing_and_no_hang(tmp_path))


async def _nothing_and_no_hang(tmp_path: Path) -> None:
    _path, fd = _fifo(tmp_path)
    exited = asyncio.Event()
    try:
        reading = asyncio.ensure_future(_runc._read_exec_fifo(fd, exited))
        await asyncio.sleep(0.02)
        exited.set()
        assert await asyncio.wait_for(reading, 5) == b""
    finally:
        os.close(fd)
