"""Docker Engine scenarios: Debian's ``dockerd`` 20.10 on each daemon.

``docker-run-rm``: ``docker run --rm IMG true`` through a dockerd started
with ``--containerd`` on our daemon, against the same through a dockerd on
Debian's containerd.  Each dockerd is private (``tests/support/dockerd.py``:
its own data root, exec root, API socket; no bridge, no iptables) and pulls
a busybox image from a ``docker-registry`` on loopback during the untimed
setup, so a round is the client call, dockerd's container create, the
containerd container and task (create, start, wait, delete) and dockerd's
removal of the container.  Under ours the task runs on our shim, under
containerd on Go's: runc under both.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
from collections.abc import Iterator

from bench.registry import Measure, Target, scenario
from pycontainerd.remotes import Resolver
from tests.support.dockerd import dockerd
from tests.support.registry import RunningRegistry, busybox_image, push_image, registry

REPOSITORY = "bench/busybox"

_registries = contextlib.ExitStack()
atexit.register(_registries.close)


@functools.cache
def _image() -> str:
    """busybox in a registry on loopback (once per run); its reference."""
    reg: RunningRegistry = _registries.enter_context(registry())
    ref = f"{reg.host}/{REPOSITORY}:1"

    async def push() -> None:
        async with Resolver(plain_http=True) as resolver:
            await push_image(resolver, ref, busybox_image(media_types="docker"))

    asyncio.run(push())
    return ref


@scenario(
    "docker-run-rm",
    "docker run --rm IMG true: dockerd 20.10 --containerd on ours (our shim) vs on"
    " containerd (Go's shim), runc under both",
    ops=1,
    unit="run",
    rounds=10,
)
def docker_run_rm(target: Target) -> Iterator[Measure]:
    ref = _image()
    with dockerd(target.address) as engine:
        engine.docker("pull", "-q", ref, timeout=120)
        yield Measure(lambda: engine.docker("run", "--rm", ref, "true"))
