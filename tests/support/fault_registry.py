"""A registry that misbehaves on request, for pull-level fault tests.

:func:`fault_registry` serves one image read-only (``GET``/``HEAD`` of
``/v2/<repo>/manifests/<tag|digest>`` and ``/v2/<repo>/blobs/<digest>``) on
127.0.0.1 from an asyncio server in the test's own event loop, with one
:class:`Fault` switched on for the blob it names:

* ``status_500``: the blob's GETs answer 500;
* ``cut``: the first GET of the blob is cut after half its bytes (Range
  requests are honoured, so a client resumes);
* ``cut_no_range``: every GET is cut after half the bytes and Range is
  ignored (nothing can resume);
* ``extra``: the blob comes with more bytes than its descriptor says;
* ``bad_digest``: the blob's bytes are replaced by as many other bytes.

Every request is recorded (method, path, Range) for the test to inspect.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["Fault", "FaultRegistry", "fault_registry"]

_PATH = re.compile(r"/v2/(?P<repo>.+?)/(?P<kind>manifests|blobs)/(?P<ref>[^/?]+)")


class Fault(enum.Enum):
    NONE = "none"
    STATUS_500 = "status_500"
    CUT = "cut"
    CUT_NO_RANGE = "cut_no_range"
    EXTRA = "extra"
    BAD_DIGEST = "bad_digest"


@dataclass
class FaultRegistry:
    repo: str
    #: (media type, bytes) by tag and by digest
    manifests: dict[str, tuple[str, bytes]]
    blobs: dict[str, bytes]
    fault: Fault = Fault.NONE
    fault_digest: str = ""
    port: int = 0
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    _cut_done: bool = False

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes, int | None]:
        """(status, headers, body, cut after this many body bytes or None)."""
        self.requests.append((method, path, headers.get("range", "")))
        if path == "/v2/":
            return 200, {}, b"", None
        m = _PATH.fullmatch(path)
        if m is None or m["repo"] != self.repo:
            return (
                404,
                {},
                b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}',
                None,
            )
        ref = m["ref"]
        if m["kind"] == "manifests":
            found = self.manifests.get(ref)
            if found is None:
                return (
                    404,
                    {},
                    b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}',
                    None,
                )
            media_type, data = found
            from hashlib import sha256

            return (
                200,
                {
                    "Content-Type": media_type,
                    "Docker-Content-Digest": "sha256:" + sha256(data).hexdigest(),
                },
                data,
                None,
            )
        data = self.blobs.get(ref)
        if data is None:
            return 404, {}, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}', None
        if ref != self.fault_digest or self.fault is Fault.NONE:
            return self._ranged(data, headers)
        fault = self.fault
        if fault is Fault.STATUS_500:
            return 500, {}, b'{"errors":[{"code":"UNKNOWN","message":"internal error"}]}', None
        if fault is Fault.EXTRA:
            return 200, {}, data + b"more bytes than the descriptor says", None
        if fault is Fault.BAD_DIGEST:
            return 200, {}, bytes(b ^ 0xFF for b in data[:16]) + data[16:], None
        if fault is Fault.CUT_NO_RANGE:
            return 200, {}, data, len(data) // 2
        assert fault is Fault.CUT
        if not self._cut_done and method == "GET":
            self._cut_done = True
            return 200, {}, data, len(data) // 2
        return self._ranged(data, headers)

    @staticmethod
    def _ranged(
        data: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes, int | None]:
        wanted = headers.get("range", "")
        if wanted.startswith("bytes="):
            start = int(wanted.removeprefix("bytes=").partition("-")[0])
            return (
                206,
                {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
                data[start:],
                None,
            )
        return 200, {}, data, None


async def _serve_connection(
    registry: FaultRegistry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            status, extra, body, cut = registry.answer(method, target.partition("?")[0], headers)
            head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in extra.items()]
            if "Content-Type" not in extra:
                head.append("Content-Type: application/octet-stream")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            if method != "HEAD":
                writer.write(body if cut is None else body[:cut])
            await writer.drain()
            if cut is not None and method != "HEAD":
                return
    except (ConnectionError, ValueError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def fault_registry(registry: FaultRegistry) -> AsyncIterator[FaultRegistry]:
    """Serve ``registry`` on 127.0.0.1 at a free port for the block."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(registry, reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    registry.port = server.sockets[0].getsockname()[1]
    try:
        yield registry
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
