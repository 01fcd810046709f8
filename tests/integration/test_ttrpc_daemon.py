"""The daemon's ttrpc socket: where it is, who may use it, and the events
service shims forward to."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from pycontainerd import ttrpc
from pycontainerd.api.events import task_pb2
from pycontainerd.client import Client
from pycontainerd.typeurl import unmarshal_any
from tests.support import daemons
from tests.support.daemons import RunningDaemon
from tests.support.ttrpc_events import EVENTS, forward_request, forward_until_seen, ttrpc_forward

pytestmark = pytest.mark.integration


def run_daemon(base: Path, config: str | None = None) -> subprocess.Popen[bytes]:
    address = str(base / "p.sock")
    log = base / "daemon.log"
    args = daemons.pycontainerd_args(base, address, config=config)
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        daemons.wait_serving(address, proc, log)
    except BaseException:
        daemons.stop(proc)
        raise
    return proc


def test_the_ttrpc_socket_sits_beside_the_grpc_one_0660_and_goes_at_stop() -> None:
    with daemons.temp_base("pcd-ttrpc-") as base:
        proc = run_daemon(base)
        try:
            grpc_st = os.stat(base / "p.sock")
            st = os.stat(base / "p.sock.ttrpc")
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(grpc_st.st_mode) == 0o660
            assert (st.st_uid, st.st_gid) == (0, 0)
        finally:
            assert daemons.stop(proc) == 0
        assert not (base / "p.sock.ttrpc").exists()
        assert not (base / "p.sock").exists()


def test_the_ttrpc_address_and_owner_come_from_the_config() -> None:
    with daemons.temp_base("pcd-ttrpc-") as base:
        address = base / "elsewhere.ttrpc"
        config = f'version = 2\n[ttrpc]\n  address = "{address}"\n  uid = 1234\n  gid = 5678\n'
        proc = run_daemon(base, config)
        try:
            st = os.stat(address)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
            assert (st.st_uid, st.st_gid) == (1234, 5678)
            assert not (base / "p.sock.ttrpc").exists()

            async def call() -> bytes:
                data = forward_request(
                    "default", "/test/config", task_pb2.TaskOOM(container_id="c")
                )
                return await ttrpc_forward(str(address), data)

            assert asyncio.run(call()) == b""  # google.protobuf.Empty
        finally:
            assert daemons.stop(proc) == 0
        assert not address.exists()


def test_a_stale_ttrpc_socket_is_replaced_and_a_live_one_refused() -> None:
    with daemons.temp_base("pcd-ttrpc-") as base:
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(base / "p.sock.ttrpc"))
        stale.close()  # a socket file nobody listens on, as a killed daemon leaves
        proc = run_daemon(base)
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(base / "p.sock.ttrpc"))
        finally:
            assert daemons.stop(proc) == 0


def test_an_event_forwarded_over_ttrpc_reaches_grpc_subscribers(
    shared_daemon: RunningDaemon,
) -> None:
    ttrpc_address = shared_daemon.address + ".ttrpc"
    event = task_pb2.TaskExit(container_id="web", id="web", pid=42, exit_status=7)

    async def scenario() -> None:
        async def publish() -> None:
            reply = await ttrpc_forward(
                ttrpc_address, forward_request("ttrpc-ns", "/tasks/exit", event)
            )
            assert reply == b""

        env = await forward_until_seen(
            shared_daemon.address, publish, 'topic=="/tasks/exit",namespace=="ttrpc-ns"'
        )
        assert (env.namespace, env.topic) == ("ttrpc-ns", "/tasks/exit")
        assert unmarshal_any(env.event) == event

    asyncio.run(scenario())


def test_the_ttrpc_socket_answers_errors_as_containerd_does(shared_daemon: RunningDaemon) -> None:
    ttrpc_address = shared_daemon.address + ".ttrpc"

    async def scenario() -> None:
        async with await ttrpc.Client.connect(ttrpc_address) as client:
            for service, method, expected in (
                ("containerd.task.v2.Task", "Create", (12, "service containerd.task.v2.Task")),
                (EVENTS, "Publish", (12, "method Publish")),
            ):
                with pytest.raises(ttrpc.StatusError) as info:
                    await client.call(service, method, b"")
                assert (info.value.code, info.value.message) == expected
            bad_namespace = forward_request("no/such", "/tasks/exit", task_pb2.TaskExit())
            with pytest.raises(ttrpc.StatusError) as info:
                await client.call(EVENTS, "Forward", bad_namespace)
            assert info.value.code == ttrpc.Code.INVALID_ARGUMENT
            with pytest.raises(ttrpc.StatusError) as info:
                await client.call(EVENTS, "Forward", b"")  # no envelope at all
            assert info.value.code == ttrpc.Code.INVALID_ARGUMENT
            # Still serving on the same connection.
            good = forward_request("default", "/tasks/exit", task_pb2.TaskExit())
            assert await client.call(EVENTS, "Forward", good) == b""

    asyncio.run(scenario())


def test_the_ttrpc_events_plugin_is_listed(shared_daemon: RunningDaemon) -> None:
    with Client(shared_daemon.address) as client:
        plugins = {(p.type, p.id): p for p in client.plugins()}
    assert ("io.containerd.ttrpc.v1", "events") in plugins
