"""Our sync client and ``pyctr content`` against Debian's containerd."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client
from tests.support import daemons
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.interop


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_sync_client_writes_resumes_and_reads_on_containerd(containerd: RunningDaemon) -> None:
    data = os.urandom(5 << 20)
    with Client(containerd.address, f"interop-{uuid.uuid4().hex[:8]}") as client:
        w = client.content.writer("sync-resume", total=len(data))
        w.write(data[: 1 << 20])
        w.close()
        assert client.content.status("sync-resume").offset == 1 << 20
        dgst = client.content.write_blob(
            "sync-resume",
            iter([data[i : i + 65536] for i in range(0, len(data), 65536)]),
            size=len(data),
            expected=sha(data),
            labels={"k": "v"},
        )
        assert dgst == sha(data)
        assert client.content.read(dgst, offset=100, size=10) == data[100:110]
        assert dict(client.content.info(dgst).labels) == {"k": "v"}
        assert [i.digest for i in client.content.list("labels.k==v")] == [dgst]
        w = client.content.writer("held")
        with pytest.raises(errdefs.Unavailable):
            client.content.writer("held")
        w.abort()
        client.content.delete(dgst)
        with pytest.raises(errdefs.NotFound):
            client.content.info(dgst)


def test_pyctr_content_commands_on_containerd(containerd: RunningDaemon) -> None:
    ns = f"interop-{uuid.uuid4().hex[:8]}"

    def pyctr(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(daemons.VENV_BIN / "pyctr"), "-a", containerd.address, "-n", ns, *args],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=True,
        )

    data = b"pyctr to containerd"
    pyctr(
        "content",
        "ingest",
        "--expected-size",
        str(len(data)),
        "--expected-digest",
        sha(data),
        "p",
        stdin=data,
    )
    assert pyctr("content", "get", sha(data)).stdout == data
    assert pyctr("content", "label", sha(data), "x=y").stdout.strip() == b"x=y"
    assert pyctr("content", "ls", "-q").stdout.split() == [sha(data).encode()]
    assert pyctr("content", "rm", sha(data)).stdout.split() == [sha(data).encode()]
    assert pyctr("content", "ls", "-q").stdout == b""
