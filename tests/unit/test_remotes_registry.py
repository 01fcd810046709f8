"""Resolver, fetcher and pusher against a fake registry that misbehaves on
request: 500s, connections cut mid-blob (with and without Range support),
more bytes than the descriptor, wrong bytes, oversized manifests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from pycontainerd import errdefs
from pycontainerd.remotes import MAX_MANIFEST_SIZE, RegistryHost, Resolver
from tests.unit._http_server import Reply, Request, serve

pytestmark = pytest.mark.unit

T = TypeVar("T")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Desc:
    media_type: str
    digest: str
    size: int


def desc_of(data: bytes, media_type: str = LAYER) -> Desc:
    return Desc(media_type, sha(data), len(data))


_PATH = re.compile(r"/v2/(?P<repo>.+?)/(?P<kind>manifests|blobs)/(?P<ref>[^/?]*)(?P<rest>/.*)?")


@dataclass
class FakeRegistry:
    """Enough of the distribution API for the client, with faults to switch on."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    # (repo, digest) of blobs in one repository only; others are in all.
    private: dict[str, str] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    status: int | None = None  # answer everything with this status
    cut_after: int | None = None  # close the first blob GET after this many bytes
    ranges: bool = True
    extra: bytes = b""  # sent after a blob's bytes (and counted in Content-Length)
    head_digest: bool = True
    chunked: bool = False

    def add_blob(self, data: bytes) -> Desc:
        self.blobs[sha(data)] = data
        return desc_of(data)

    def add_manifest(
        self, repo: str, tag: str, data: bytes, media_type: str = OCI_MANIFEST
    ) -> Desc:
        self.manifests[(repo, tag)] = (media_type, data)
        self.manifests[(repo, sha(data))] = (media_type, data)
        return desc_of(data, media_type)

    def __call__(self, request: Request) -> Reply:
        if self.status is not None:
            body = json.dumps({"errors": [{"code": "UNKNOWN", "message": "boom"}]}).encode()
            return Reply(self.status, body=body)
        if request.path == "/v2/":
            return Reply(200)
        m = _PATH.fullmatch(request.path)
        if m is None:
            return Reply(404)
        repo, kind, ref, rest = m["repo"], m["kind"], m["ref"], m["rest"]
        if kind == "manifests":
            return self._manifest(request, repo, ref)
        if ref == "uploads":
            return self._upload(request, repo, (rest or "/").lstrip("/"))
        return self._blob(request, repo, ref)

    def _manifest(self, request: Request, repo: str, ref: str) -> Reply:
        if request.method == "PUT":
            media_type = request.headers["content-type"]
            self.manifests[(repo, ref)] = (media_type, request.body)
            self.manifests[(repo, sha(request.body))] = (media_type, request.body)
            return Reply(201, {"Docker-Content-Digest": sha(request.body)})
        found = self.manifests.get((repo, ref))
        if found is None:
            body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
            return Reply(404, body=body)
        media_type, data = found
        headers = {"Content-Type": media_type}
        if self.head_digest:
            headers["Docker-Content-Digest"] = sha(data)
        return Reply(200, headers, data, chunked=self.chunked)

    def _blob(self, request: Request, repo: str, digest: str) -> Reply:
        data = self.blobs.get(digest)
        if data is None or self.private.get(digest, repo) != repo:
            return Reply(404, body=b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
        data = data + self.extra
        range_header = request.headers.get("range")
        if range_header and self.ranges:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            return Reply(206, headers, data[start:])
        if request.method == "GET" and self.cut_after is not None:
            cut, self.cut_after = self.cut_after, None
            return Reply(200, body=data, close_after=cut)
        return Reply(200, {"Docker-Content-Digest": digest}, data, chunked=self.chunked)

    def _upload(self, request: Request, repo: str, upload_id: str) -> Reply:
        if request.method == "POST":
            query = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
            mount = query.get("mount", "").replace("%3A", ":")
            source = query.get("from", "")
            if mount and mount in self.blobs and self.private.get(mount, source) == source:
                self.private.pop(mount, None)
                return Reply(201, {"Location": f"/v2/{repo}/blobs/{mount}"})
            new = uuid.uuid4().hex
            self.uploads[new] = bytearray()
            return Reply(202, {"Location": f"/v2/{repo}/blobs/uploads/{new}?_state=x"})
        upload = self.uploads[upload_id]
        if request.method == "PATCH":
            start, _, _ = request.headers["content-range"].partition("-")
            assert int(start) == len(upload)
            upload += request.body
            return Reply(202, {"Location": f"/v2/{repo}/blobs/uploads/{upload_id}?_state=y"})
        assert request.method == "PUT"
        upload += request.body
        digest = request.query.split("digest=")[1].replace("%3A", ":")
        if sha(bytes(upload)) != digest:
            return Reply(400, body=b'{"errors":[{"code":"DIGEST_INVALID","message":"bad"}]}')
        self.blobs[digest] = bytes(upload)
        return Reply(201, {"Location": f"/v2/{repo}/blobs/{digest}"})


async def fetch_all(resolver: Resolver, ref: str, desc: Desc) -> bytes:
    return b"".join([c async for c in resolver.fetcher(ref).fetch(desc)])


BLOB = bytes(range(256)) * 8192  # 2 MiB


def test_resolve_by_tag_with_head_and_by_digest() -> None:
    fake = FakeRegistry()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    desc = fake.add_manifest("library/app", "v1", manifest)

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            name, got = await resolver.resolve(f"{server.host}/library/app:v1")
            assert name == f"{server.host}/library/app:v1"
            assert (got.media_type, got.digest, got.size) == (OCI_MANIFEST, desc.digest, desc.size)
            assert [r.method for r in server.requests] == ["HEAD"]
            accept = server.requests[0].headers["accept"]
            assert OCI_MANIFEST in accept and "*/*" in accept
            _, by_digest = await resolver.resolve(f"{server.host}/library/app@{desc.digest}")
            assert by_digest.digest == desc.digest
            assert await fetch_all(resolver, name, desc) == manifest

    run(main())


def test_resolve_falls_back_to_get_and_digests_the_body() -> None:
    fake = FakeRegistry(head_digest=False)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    desc = fake.add_manifest("app", "latest", manifest, media_type="application/json")

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            _, got = await resolver.resolve(f"{server.host}/app")
            assert (got.digest, got.size, got.media_type) == (desc.digest, desc.size, OCI_MANIFEST)
            assert [r.method for r in server.requests] == ["HEAD", "GET"]

    run(main())


def test_missing_tag_is_not_found_naming_the_reference() -> None:
    async def main() -> None:
        async with serve(FakeRegistry()) as server, Resolver(plain_http=True) as resolver:
            with pytest.raises(errdefs.NotFound, match=rf"{server.host}/nope/app:v9: not found"):
                await resolver.resolve(f"{server.host}/nope/app:v9")
            with pytest.raises(errdefs.NotFound, match="not found"):
                await fetch_all(resolver, f"{server.host}/nope/app", desc_of(b"x"))

    run(main())


def test_a_registry_answering_500_is_unavailable_with_the_status() -> None:
    fake = FakeRegistry(status=500)

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            with pytest.raises(errdefs.Unavailable, match=r"HEAD request .* 500"):
                await resolver.resolve(f"{server.host}/app:v1")
            # The registry's JSON error body is part of the message.
            with pytest.raises(errdefs.Unavailable, match="500 X: unknown: boom"):
                await fetch_all(resolver, f"{server.host}/app", desc_of(b"x"))

    run(main())


def test_fetch_streams_and_verifies_a_chunked_blob() -> None:
    fake = FakeRegistry(chunked=True)
    desc = fake.add_blob(BLOB)

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            assert await fetch_all(resolver, f"{server.host}/app", desc) == BLOB

    run(main())


def test_a_connection_closed_mid_blob_is_resumed_with_a_range() -> None:
    fake = FakeRegistry(cut_after=300_000)
    desc = fake.add_blob(BLOB)

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            assert await fetch_all(resolver, f"{server.host}/app", desc) == BLOB
            gets = [r for r in server.requests if r.method == "GET"]
            assert len(gets) == 2
            assert gets[1].headers["range"].startswith("bytes=")
            assert int(gets[1].headers["range"][6:-1]) > 0

    run(main())


def test_a_connection_closed_mid_blob_without_range_support_is_a_clear_error() -> None:
    fake = FakeRegistry(cut_after=300_000, ranges=False)
    desc = fake.add_blob(BLOB)

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            with pytest.raises(errdefs.Unavailable, match="does not support range requests"):
                await fetch_all(resolver, f"{server.host}/app", desc)

    run(main())


def test_more_bytes_than_the_descriptor_fail_at_once() -> None:
    fake = FakeRegistry(extra=b"surprise")
    desc = fake.add_blob(BLOB)

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            with pytest.raises(
                errdefs.FailedPrecondition, match=f"more than the expected {len(BLOB)}"
            ):
                await fetch_all(resolver, f"{server.host}/app", desc)
        # Chunked: no length up front; the first byte too many stops it.
        fake.chunked = True
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            received = 0
            with pytest.raises(errdefs.FailedPrecondition, match="more than the expected"):
                async for chunk in resolver.fetcher(f"{server.host}/app").fetch(desc):
                    received += len(chunk)
            assert received <= len(BLOB)

    run(main())


def test_bytes_that_are_not_the_digest_fail() -> None:
    fake = FakeRegistry()
    good = fake.add_blob(BLOB)
    fake.blobs[good.digest] = b"X" + BLOB[1:]

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
                await fetch_all(resolver, f"{server.host}/app", good)
            short = Desc(LAYER, good.digest, len(BLOB) + 10)
            with pytest.raises(errdefs.FailedPrecondition, match="failed size validation"):
                await fetch_all(resolver, f"{server.host}/app", short)

    run(main())


def test_a_manifest_over_the_cap_is_refused() -> None:
    fake = FakeRegistry(head_digest=False)
    big = b"{" + b" " * MAX_MANIFEST_SIZE + b"}"
    desc = fake.add_manifest("app", "big", big)

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            with pytest.raises(errdefs.ResourceExhausted, match="over the 4194304-byte limit"):
                await resolver.resolve(f"{server.host}/app:big")
            with pytest.raises(errdefs.ResourceExhausted, match="limit"):
                await fetch_all(resolver, f"{server.host}/app", desc)
        fake.chunked = True  # no Content-Length: the cap holds while reading
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            with pytest.raises(errdefs.ResourceExhausted, match="limit"):
                await resolver.resolve(f"{server.host}/app:big")

    run(main())


def test_push_skips_what_exists_mounts_and_uploads() -> None:
    fake = FakeRegistry()
    existing = fake.add_blob(b"already there")
    new = b"n" * 5000

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            pusher = resolver.pusher(f"{server.host}/dest:v1")
            assert await pusher.push(existing, b"already there") == "exists"
            assert await pusher.push(desc_of(new), new) == "uploaded"
            assert fake.blobs[sha(new)] == new
            other = b"o" * 100
            fake.blobs[sha(other)] = other
            fake.private[sha(other)] = "src"
            assert await pusher.exists(desc_of(other)) is False
            assert await pusher.push(desc_of(other), b"not sent", source_repository="src") == (
                "mounted"
            )
            assert await pusher.exists(desc_of(other)) is True
            posts = [r for r in server.requests if r.method == "POST"]
            assert "mount=" in posts[-1].query and "from=src" in posts[-1].query

    run(main())


def test_push_in_chunks_and_from_a_stream() -> None:
    fake = FakeRegistry()

    async def main() -> None:
        async def stream() -> AsyncIterator[bytes]:
            for i in range(0, len(BLOB), 100_000):
                yield BLOB[i : i + 100_000]

        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            pusher = resolver.pusher(f"{server.host}/dest:v1")
            desc = desc_of(BLOB)
            assert await pusher.push(desc, stream, chunk_size=512 * 1024) == "uploaded"
            patches = [r for r in server.requests if r.method == "PATCH"]
            assert len(patches) == 4
            assert patches[1].headers["content-range"] == f"{512 * 1024}-{1024 * 1024 - 1}"
            assert fake.blobs[desc.digest] == BLOB
            del fake.blobs[desc.digest]
            assert await pusher.push(desc, stream) == "uploaded"
            assert fake.blobs[desc.digest] == BLOB

    run(main())


def test_push_refuses_bytes_that_are_not_the_descriptor() -> None:
    fake = FakeRegistry()

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            pusher = resolver.pusher(f"{server.host}/dest:v1")
            with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
                await pusher.push(desc_of(b"abc"), b"abd")
            with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
                await pusher.push(desc_of(BLOB), b"Y" + BLOB[1:], chunk_size=1 << 20)
            assert fake.blobs == {}

    run(main())


def test_push_manifest_by_tag_with_its_media_type() -> None:
    fake = FakeRegistry()
    manifest = json.dumps({"schemaVersion": 2}).encode()
    desc = desc_of(manifest, OCI_MANIFEST)

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            pusher = resolver.pusher(f"{server.host}/dest:v1")
            assert await pusher.push(desc, manifest, tag=True) == "uploaded"
            put = next(r for r in server.requests if r.method == "PUT")
            assert put.path == "/v2/dest/manifests/v1"
            assert put.headers["content-type"] == OCI_MANIFEST
            assert await pusher.push(desc, manifest) == "exists"
            _, got = await resolver.resolve(f"{server.host}/dest:v1")
            assert got.digest == desc.digest

    run(main())


def test_mirrors_are_tried_first_and_the_server_after(tmp_path: Path) -> None:
    mirror, upstream = FakeRegistry(), FakeRegistry()
    manifest = b'{"schemaVersion":2}'
    desc = upstream.add_manifest("app", "v1", manifest)

    async def main() -> None:
        async with serve(mirror) as m, serve(upstream) as u:
            (tmp_path / u.host).mkdir()
            (tmp_path / u.host / "hosts.toml").write_text(
                f'server = "http://{u.host}"\n[host."http://{m.host}"]\n'
                '  capabilities = ["pull", "resolve"]\n'
                '  [host."http://' + m.host + '".header]\n    x-mirror = "yes"\n'
            )
            async with Resolver(hosts_dir=tmp_path) as resolver:
                _, got = await resolver.resolve(f"{u.host}/app:v1")
                assert got.digest == desc.digest
                assert m.requests[0].headers["x-mirror"] == "yes"
                assert u.requests[-1].method == "HEAD"
            mirror.add_manifest("app", "v1", manifest)
            u.requests.clear()
            async with Resolver(hosts_dir=tmp_path) as resolver:
                await resolver.resolve(f"{u.host}/app:v1")
                assert u.requests == []

    run(main())


def test_hosts_callable_is_used() -> None:
    fake = FakeRegistry()
    desc = fake.add_blob(b"data")

    async def main() -> None:
        async with serve(fake) as server:
            hosts = [RegistryHost("http", server.host)]
            async with Resolver(hosts=lambda domain: hosts) as resolver:
                assert await fetch_all(resolver, "example.com/x/y", desc) == b"data"

    run(main())


def test_fetch_from_an_offset_with_and_without_range_support() -> None:
    fake = FakeRegistry()
    desc = fake.add_blob(BLOB)
    offset = 777_777

    async def main() -> None:
        for ranges in (True, False):
            fake.ranges = ranges
            async with serve(fake) as server, Resolver(plain_http=True) as resolver:
                fetcher = resolver.fetcher(f"{server.host}/app")
                state = hashlib.sha256(BLOB[:offset])
                rest = [c async for c in fetcher.fetch(desc, offset=offset, digest_state=state)]
                assert b"".join(rest) == BLOB[offset:]
                assert server.requests[-1].headers["range"] == f"bytes={offset}-"
                # Without the first bytes' digest only the size is checked...
                rest = [c async for c in fetcher.fetch(desc, offset=offset)]
                assert b"".join(rest) == BLOB[offset:]
                # ...and with a wrong one, the digest fails.
                wrong = hashlib.sha256(b"not the prefix")
                with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
                    [c async for c in fetcher.fetch(desc, offset=offset, digest_state=wrong)]
                with pytest.raises(errdefs.InvalidArgument, match="outside"):
                    [c async for c in fetcher.fetch(desc, offset=len(BLOB) + 1)]

    run(main())


def test_a_blob_redirected_to_storage_resumes_there() -> None:
    storage = FakeRegistry(cut_after=100_000)
    desc = storage.add_blob(BLOB)

    def token_and_storage(request: Request) -> Reply:
        if request.path == "/token":
            return Reply(200, body=b'{"token": "t"}')
        return storage(request)

    async def main() -> None:
        async with serve(token_and_storage) as store:

            def registry(request: Request) -> Reply:
                if request.headers.get("authorization") != "Bearer t":
                    return Reply(401, {"WWW-Authenticate": f'Bearer realm="{store.url}/token"'})
                return Reply(307, {"Location": f"{store.url}/v2/app/blobs/{desc.digest}"})

            async with serve(registry) as server, Resolver(plain_http=True) as resolver:
                assert await fetch_all(resolver, f"{server.host}/app", desc) == BLOB
            blob_gets = [r for r in store.requests if r.path.startswith("/v2/")]
            assert len(blob_gets) == 2 and blob_gets[1].headers["range"].startswith("bytes=")
            # The registry's token never reaches the storage.
            assert all("authorization" not in r.headers for r in blob_gets)

    run(main())


def test_concurrent_fetches_share_the_pool() -> None:
    fake = FakeRegistry()
    descs = [fake.add_blob(bytes([i]) * (300_000 + i)) for i in range(8)]

    async def main() -> None:
        async with serve(fake) as server, Resolver(plain_http=True) as resolver:
            fetched = await asyncio.gather(
                *(fetch_all(resolver, f"{server.host}/app", d) for d in descs * 2)
            )
            assert [len(b) for b in fetched] == [d.size for d in descs * 2]
            assert len(server.connections) <= 16

    run(main())
