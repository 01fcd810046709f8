"""Our client pulls into Debian's containerd exactly as its own ctr does: the
same blobs with the same labels (distribution source, child gc references,
uncompressed digests, the snapshot reference), an unpacked image, and a push
back to the registry from containerd's store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import pytest

from pycontainerd.client import AsyncClient
from pycontainerd.remotes import Resolver
from tests.integration._cli import Cli
from tests.support import daemons
from tests.support.registry import BuiltImage, RunningRegistry, busybox_image, push_image, registry

pytestmark = pytest.mark.interop

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    return busybox_image()


@pytest.fixture(scope="module")
def reg(image: BuiltImage) -> Iterator[RunningRegistry]:
    with registry() as running:

        async def fill() -> None:
            async with Resolver(plain_http=True) as resolver:
                await push_image(resolver, f"{running.host}/library/busybox:latest", image)

        run(fill())
        yield running


def test_our_pull_into_containerd_labels_content_as_ctr_does(
    reg: RunningRegistry, image: BuiltImage
) -> None:
    ref = f"{reg.host}/library/busybox:latest"
    with daemons.containerd() as d:
        Cli("ctr", d.address, "by-ctr")("images", "pull", "--plain-http", ref)

        async def main() -> None:
            async with AsyncClient(d.address, namespace="by-ctr") as client:
                theirs = {i.digest: dict(i.labels) for i in await client.content.list()}
            async with AsyncClient(d.address, namespace="by-us") as client:
                pulled = await client.pull(ref, plain_http=True)
                assert await pulled.is_unpacked()
                ours = {i.digest: dict(i.labels) for i in await client.content.list()}
                await client.push(f"{reg.host}/from/containerd:v1", pulled.name, plain_http=True)
            assert ours == theirs
            async with Resolver(plain_http=True) as resolver:
                _, desc = await resolver.resolve(f"{reg.host}/from/containerd:v1")
                assert desc.digest == image.manifest.digest

        run(main())
