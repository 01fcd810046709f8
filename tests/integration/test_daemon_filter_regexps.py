"""A regexp filter is client input the daemon evaluates: it must cost time
linear in what it reads and never hold up other clients' calls.

Python's ``re`` backtracks on ``^(a+)+$``: about 5 s for a 28-character id,
doubling with each more character.  Containers are listed here with that
filter while another client measures how long Version takes to answer.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration

NS = (("containerd-namespace", "regexp"),)
#: 32 "a"s and a character the pattern cannot take: 2**32 paths to backtrack
#: through, about 80 s for Python's re.
EVIL_ID = "a" * 32 + "-x"
EVIL = "id~=^(a+)+$"
#: However long the evil filters run, a call takes no longer than this.  A
#: Version call takes about a millisecond, but a loaded 2-core CI machine
#: stalls any call for a second now and then; the backtracking this guards
#: against holds calls up for many seconds (80 s on EVIL_ID), so 4 s still
#: tells the two apart.
PROMPT = 4.0


@pytest.fixture
def channel(daemon: RunningDaemon) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix://{daemon.address}") as ch:
        yield ch


def create_container(channel: grpc.Channel, cid: str) -> None:
    spec = any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}"
    )
    container = pb.Container(
        id=cid, runtime=pb.Container.Runtime(name="io.containerd.runc.v2"), spec=spec
    )
    pb_grpc.ContainersStub(channel).Create(
        pb.CreateContainerRequest(container=container), metadata=NS, timeout=10
    )


def listed(channel: grpc.Channel, flt: str) -> tuple[list[str], list[str], float]:
    """Ids by List and by ListStream, and how long the two calls took."""
    stub = pb_grpc.ContainersStub(channel)
    request = pb.ListContainersRequest(filters=[flt])
    start = time.monotonic()
    # Deadlines make the old, backtracking code fail here rather than hang.
    by_list = [c.id for c in stub.List(request, metadata=NS, timeout=10).containers]
    by_stream = [m.container.id for m in stub.ListStream(request, metadata=NS, timeout=10)]
    return by_list, by_stream, time.monotonic() - start


def test_a_backtracking_regexp_filter_answers_at_once_and_stalls_no_one(
    daemon: RunningDaemon, channel: grpc.Channel
) -> None:
    create_container(channel, EVIL_ID)
    create_container(channel, "b")

    def evil_lists() -> list[float]:
        took = []
        until = time.monotonic() + 2
        while not took or time.monotonic() < until:
            by_list, by_stream, seconds = listed(channel, EVIL)
            assert by_list == by_stream == []
            took.append(seconds)
        return took

    version_took = []
    with (
        grpc.insecure_channel(f"unix://{daemon.address}") as other,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        version = version_pb2_grpc.VersionStub(other)
        evil = [pool.submit(evil_lists) for _ in range(2)]
        while not all(f.done() for f in evil):
            start = time.monotonic()
            version.Version(empty_pb2.Empty(), timeout=5)
            version_took.append(time.monotonic() - start)
        list_took = [s for f in evil for s in f.result()]

    assert max(list_took) < PROMPT, list_took
    assert len(version_took) > 10 and max(version_took) < PROMPT, version_took
    # The pattern still means what it says.
    assert listed(channel, "id~=^(a+)+-x$")[:2] == ([EVIL_ID], [EVIL_ID])
