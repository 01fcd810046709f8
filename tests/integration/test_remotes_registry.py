"""Our resolver, fetcher and pusher against Debian's docker-registry on
127.0.0.1: push an image built from busybox-static, resolve it by tag and by
digest, fetch and verify every blob; not-found errors; Basic auth and Bearer
tokens, with and without credentials; a hosts.toml mirror used first;
existing blobs skipped and blobs mounted across repositories."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pycontainerd import errdefs
from pycontainerd.remotes import Resolver, static_credentials
from tests.support.proxy import connect_proxy
from tests.support.registry import (
    BuiltImage,
    RunningRegistry,
    busybox_image,
    push_image,
    push_index,
    registry,
    token_server,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


@pytest.fixture(scope="module")
def open_registry() -> Iterator[RunningRegistry]:
    with registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    return busybox_image()


async def _pull_all(resolver: Resolver, ref: str, image: BuiltImage) -> str:
    """Resolve ``ref`` and fetch everything it points at, checking it is ``image``."""
    name, desc = await resolver.resolve(ref)
    assert desc.digest == image.manifest.digest
    assert desc.media_type == image.manifest.media_type
    assert desc.size == image.manifest.size
    fetcher = resolver.fetcher(name)
    manifest = json.loads(await fetcher.fetch_bytes(desc))
    assert manifest["config"]["digest"] == image.config.digest
    for blob in image.blobs:
        assert b"".join([c async for c in fetcher.fetch(blob)]) == blob.data
    return name


def test_push_resolve_by_tag_and_digest_and_fetch(
    open_registry: RunningRegistry, image: BuiltImage
) -> None:
    ref = f"{open_registry.host}/library/busybox:latest"

    async def main() -> None:
        async with Resolver(plain_http=True) as resolver:
            results = await push_image(resolver, ref, image)
            assert set(results.values()) == {"uploaded"}
            assert await _pull_all(resolver, ref, image) == ref
            by_digest = f"{open_registry.host}/library/busybox@{image.manifest.digest}"
            assert await _pull_all(resolver, by_digest, image) == by_digest
            # Pushed again, every blob is skipped; the manifest is put again (the tag).
            again = await push_image(resolver, ref, image)
            assert [again[b.digest] for b in image.blobs] == ["exists", "exists"]

    run(main())


def test_cross_repository_mount(open_registry: RunningRegistry, image: BuiltImage) -> None:
    source = f"{open_registry.host}/library/busybox:latest"
    dest = f"{open_registry.host}/team/copy:v1"

    async def main() -> None:
        async with Resolver(plain_http=True) as resolver:
            await push_image(resolver, source, image)
            results = await push_image(resolver, dest, image, source_repository="library/busybox")
            assert [results[b.digest] for b in image.blobs] == ["mounted", "mounted"]
            await _pull_all(resolver, dest, image)

    run(main())


def test_chunked_upload_to_the_real_registry(open_registry: RunningRegistry) -> None:
    image = busybox_image(extra=b"chunked")
    layer = image.layers[0]
    ref = f"{open_registry.host}/chunked/app:v1"

    async def main() -> None:
        async with Resolver(plain_http=True) as resolver:
            pusher = resolver.pusher(ref)
            assert await pusher.push(layer, layer.data, chunk_size=256 * 1024) == "uploaded"
            fetched = b"".join([c async for c in resolver.fetcher(ref).fetch(layer)])
            assert fetched == layer.data

    run(main())


def test_missing_repository_and_tag_are_not_found(
    open_registry: RunningRegistry, image: BuiltImage
) -> None:
    async def main() -> None:
        async with Resolver(plain_http=True) as resolver:
            await push_image(resolver, f"{open_registry.host}/library/busybox:latest", image)
            missing_repo = f"{open_registry.host}/no/such:latest"
            with pytest.raises(errdefs.NotFound, match=f"{missing_repo}: not found"):
                await resolver.resolve(missing_repo)
            missing_tag = f"{open_registry.host}/library/busybox:nope"
            with pytest.raises(errdefs.NotFound, match=f"{missing_tag}: not found"):
                await resolver.resolve(missing_tag)
            with pytest.raises(errdefs.NotFound):
                fetcher = resolver.fetcher(missing_repo)
                [c async for c in fetcher.fetch(image.layers[0])]

    run(main())


def test_basic_auth_with_and_without_credentials(image: BuiltImage) -> None:
    with registry(users={"alice": "s3cret"}) as reg:
        ref = f"{reg.host}/library/busybox:latest"

        async def main() -> None:
            async with Resolver(plain_http=True) as anonymous:
                with pytest.raises(errdefs.PermissionDenied, match="none was given"):
                    await push_image(anonymous, ref, image)
            wrong = static_credentials("alice", "wrong")
            async with Resolver(plain_http=True, credentials=wrong) as resolver:
                with pytest.raises(errdefs.PermissionDenied):
                    await resolver.resolve(ref)
            right = static_credentials("alice", "s3cret")
            async with Resolver(plain_http=True, credentials=right) as resolver:
                await push_image(resolver, ref, image)
                await _pull_all(resolver, ref, image)
            async with Resolver(plain_http=True) as anonymous:
                with pytest.raises(errdefs.PermissionDenied):
                    await anonymous.resolve(ref)

        run(main())


def test_token_auth_with_and_without_credentials(image: BuiltImage) -> None:
    with token_server({"bob": "hunter2"}) as tokens, registry(token=tokens) as reg:
        ref = f"{reg.host}/library/busybox:latest"

        async def main() -> None:
            async with Resolver(plain_http=True) as anonymous:
                with pytest.raises(errdefs.PermissionDenied):
                    await push_image(anonymous, ref, image)
            creds = static_credentials("bob", "hunter2")
            async with Resolver(plain_http=True, credentials=creds) as resolver:
                await push_image(resolver, ref, image)
                await _pull_all(resolver, ref, image)
            async with Resolver(plain_http=True) as anonymous:
                with pytest.raises(errdefs.PermissionDenied):
                    await anonymous.resolve(ref)
            async with Resolver(
                plain_http=True, credentials=static_credentials("bob", "nope")
            ) as resolver:
                with pytest.raises(errdefs.PermissionDenied, match="token server refused"):
                    await resolver.resolve(ref)

        run(main())
        assert any(
            "scope=repository%3Alibrary%2Fbusybox%3Apull%2Cpush" in r for r in tokens.requests
        )


def test_anonymous_pull_with_tokens(image: BuiltImage) -> None:
    with token_server({"bob": "pw"}, anonymous=("pull",)) as tokens, registry(token=tokens) as reg:
        ref = f"{reg.host}/library/busybox:latest"

        async def main() -> None:
            creds = static_credentials("bob", "pw")
            async with Resolver(plain_http=True, credentials=creds) as resolver:
                await push_image(resolver, ref, image)
            async with Resolver(plain_http=True) as anonymous:
                await _pull_all(anonymous, ref, image)

        run(main())


def test_a_hosts_toml_mirror_is_tried_first(tmp_path: Path, image: BuiltImage) -> None:
    with registry() as upstream, registry() as mirror:
        # Only the mirror has the image; the upstream has never heard of it.
        (tmp_path / upstream.host).mkdir()
        (tmp_path / upstream.host / "hosts.toml").write_text(
            f'server = "http://{upstream.host}"\n'
            f'[host."http://{mirror.host}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
        ref = f"{upstream.host}/library/busybox:latest"

        async def main() -> None:
            async with Resolver(plain_http=True) as resolver:
                await push_image(resolver, f"{mirror.host}/library/busybox:latest", image)
            async with Resolver(hosts_dir=tmp_path) as resolver:
                await _pull_all(resolver, ref, image)
                # Pushes go to the server: the mirror is not trusted with them.
                pushed = await push_image(resolver, ref, image)
                assert set(pushed.values()) == {"uploaded"}
            async with Resolver(plain_http=True) as direct:
                await _pull_all(direct, ref, image)

        run(main())


def test_tls_with_a_ca_from_hosts_toml_or_skip_verify(tmp_path: Path, image: BuiltImage) -> None:
    with registry(tls=True) as reg:
        assert reg.ca_file is not None
        ref = f"{reg.host}/library/busybox:latest"
        (tmp_path / reg.host).mkdir()
        (tmp_path / reg.host / "ca.pem").write_bytes(reg.ca_file.read_bytes())
        (tmp_path / reg.host / "hosts.toml").write_text(
            f'server = "https://{reg.host}"\nca = "ca.pem"\n'
        )

        async def main() -> None:
            async with Resolver(hosts_dir=tmp_path) as resolver:
                await push_image(resolver, ref, image)
                await _pull_all(resolver, ref, image)
            async with Resolver() as untrusting:
                with pytest.raises(errdefs.Unavailable, match="TLS handshake"):
                    await untrusting.resolve(ref)
            async with Resolver(skip_verify=True) as trusting:
                await _pull_all(trusting, ref, image)

        run(main())


def test_tls_files_given_directly_and_a_client_certificate(image: BuiltImage) -> None:
    """ctr's --tlscacert, --tlscert and --tlskey as the resolver takes them:
    a registry that wants a client certificate refuses a client without one."""
    with registry(client_auth=True) as reg:
        assert reg.ca_file is not None and reg.client_cert is not None
        ref = f"{reg.host}/library/busybox:latest"
        ca, pair = str(reg.ca_file), (str(reg.client_cert[0]), str(reg.client_cert[1]))

        async def main() -> None:
            async with Resolver(ca_files=[ca], client_certs=[pair]) as resolver:
                await push_image(resolver, ref, image)
                await _pull_all(resolver, ref, image)
            async with Resolver(ca_files=[ca]) as anonymous:
                with pytest.raises(errdefs.Unavailable, match="bad certificate"):
                    await anonymous.resolve(ref)
            async with Resolver(client_certs=[pair]) as untrusting:
                with pytest.raises(errdefs.Unavailable, match="TLS handshake"):
                    await untrusting.resolve(ref)
            async with Resolver(ca_files=[ca + ".missing"]) as broken:
                with pytest.raises(errdefs.InvalidArgument, match="TLS files"):
                    await broken.resolve(ref)

        run(main())


def test_token_auth_streamed_upload_after_a_failed_mount(image: BuiltImage) -> None:
    """A mount that does not happen starts an upload; the streamed PUT that
    follows must carry the token the POST got (a stream cannot be re-sent)."""
    with token_server({"bob": "pw"}) as tokens, registry(token=tokens) as reg:
        layer = busybox_image(extra=b"stream").layers[0]
        ref = f"{reg.host}/team/app:v1"

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, layer.size, 100_000):
                yield layer.data[i : i + 100_000]

        async def main() -> None:
            creds = static_credentials("bob", "pw")
            async with Resolver(plain_http=True, credentials=creds) as resolver:
                pusher = resolver.pusher(ref)
                result = await pusher.push(layer, chunks, source_repository="no/such-repo")
                assert result == "uploaded"
                fetched = b"".join([c async for c in resolver.fetcher(ref).fetch(layer)])
                assert fetched == layer.data

        run(main())


def test_an_index_and_docker_media_types(open_registry: RunningRegistry) -> None:
    images = {
        "amd64": busybox_image(architecture="amd64"),
        "arm64": busybox_image(architecture="arm64", media_types="docker"),
    }
    ref = f"{open_registry.host}/multi/busybox:v1"

    async def main() -> None:
        async with Resolver(plain_http=True) as resolver:
            index = await push_index(resolver, ref, images)
            name, desc = await resolver.resolve(ref)
            assert (desc.media_type, desc.digest) == (index.media_type, index.digest)
            fetcher = resolver.fetcher(name)
            listed = json.loads(await fetcher.fetch_bytes(desc))["manifests"]
            assert [m["platform"]["architecture"] for m in listed] == ["amd64", "arm64"]
            for entry, image in zip(listed, images.values(), strict=True):
                child = await fetcher.fetch_bytes(image.manifest)
                assert (
                    child == image.manifest.data and entry["mediaType"] == image.manifest.media_type
                )
                _, by_digest = await resolver.resolve(
                    f"{open_registry.host}/multi/busybox@{entry['digest']}"
                )
                assert by_digest.media_type == image.manifest.media_type

    run(main())


def test_tls_registry_through_a_connect_proxy(image: BuiltImage) -> None:
    with registry(tls=True) as reg:
        ref = f"{reg.host}/library/busybox:latest"

        async def main() -> None:
            async with connect_proxy(credentials=("px", "secret")) as proxy:
                via = f"http://px:secret@127.0.0.1:{proxy.port}"
                async with Resolver(skip_verify=True, proxy=via) as resolver:
                    await push_image(resolver, ref, image)
                    await _pull_all(resolver, ref, image)
                assert proxy.tunnels and set(proxy.tunnels) == {reg.host}
                async with Resolver(skip_verify=True, proxy=proxy.url) as resolver:
                    with pytest.raises(errdefs.PermissionDenied, match="407"):
                        await resolver.resolve(ref)

        run(main())
