"""Blocking work in the async client runs off the event loop; the sync twin runs it in place."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from pycontainerd.client._async import transfer
from pycontainerd.client._streams import AsyncOffload, Offload
from pycontainerd.images import Descriptor

pytestmark = pytest.mark.unit


async def _ticks_while(work: Any) -> int:
    """How often a 10 ms ticker ran on the loop while ``work`` was awaited."""
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await work
    finally:
        done = True
        await task
    return ticks


def test_async_offload_keeps_the_loop_serving() -> None:
    ticks = asyncio.run(_ticks_while(AsyncOffload.run(time.sleep, 0.3)))
    assert ticks >= 10


def test_offload_runs_in_place() -> None:
    assert Offload.run(threading.get_ident) == threading.get_ident()
    assert Offload.run(int, "7", base=8) == 7


class _ThreadRecordingStream(io.BytesIO):
    """An archive whose reads note the thread they ran on."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.threads: set[int] = set()

    def read(self, size: int | None = -1, /) -> bytes:
        self.threads.add(threading.get_ident())
        return super().read(size)


class _FakeContent:
    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self.written: dict[str, bytes] = {}
        self.blobs = blobs or {}

    async def write_blob(
        self, ref: str, data: AsyncIterator[bytes], *, size: int, expected: str
    ) -> str:
        self.written[expected] = b"".join([chunk async for chunk in data])
        return expected

    async def chunks(self, digest: str) -> AsyncIterator[bytes]:
        blob = self.blobs[digest]
        for i in range(0, len(blob), 3):
            yield blob[i : i + 3]


class _FakeClient:
    def __init__(self, content: _FakeContent) -> None:
        self.content = content


def _archive() -> tuple[bytes, str, bytes]:
    blob = b"layer bytes " * 1000
    hexdigest = hashlib.sha256(blob).hexdigest()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", b'{"schemaVersion":2,"manifests":[]}'),
            (f"blobs/sha256/{hexdigest}", blob),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), "sha256:" + hexdigest, blob


def test_async_import_reads_the_archive_off_the_loop() -> None:
    data, digest, blob = _archive()
    stream = _ThreadRecordingStream(data)
    content = _FakeContent()

    async def main() -> int:
        await transfer._read_archive(cast(Any, _FakeClient(content)), stream)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert stream.threads and loop_thread not in stream.threads
    assert content.written == {digest: blob}


class _ThreadRecordingOut(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def write(self, data: Any, /) -> int:
        self.threads.add(threading.get_ident())
        return super().write(data)


def test_async_export_writes_blobs_off_the_loop() -> None:
    blob = b"0123456789"
    desc = Descriptor("application/octet-stream", "sha256:" + hashlib.sha256(blob).hexdigest(), 10)
    out = _ThreadRecordingOut()
    client = cast(Any, _FakeClient(_FakeContent({desc.digest: blob})))

    async def main() -> int:
        await transfer._copy_blob(client, desc, out)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert out.getvalue() == blob
    assert out.threads and loop_thread not in out.threads
