"""The scenarios.  Each one registers itself; registration order is run order.

Every scenario runs the same client code against both daemons, so only the
server differs.  Add a scenario by writing a setup generator here (see
:mod:`bench.registry`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bench.commands import ctr
from bench.registry import Measure, Target, scenario
from pycontainerd import errdefs
from pycontainerd.client import Client

ROUND_TRIPS = 1000
CTR_RUNS = 20


def _ensure_namespace(client: Client, name: str) -> None:
    with contextlib.suppress(errdefs.AlreadyExists):
        client.namespaces.create(name)


@scenario(
    "version-namespaces",
    f"{ROUND_TRIPS} x (Version + Namespaces.List) through the sync Client on one channel",
    ops=ROUND_TRIPS,
    unit="Version+List",
)
def version_namespaces(target: Target) -> Iterator[Measure]:
    with Client(target.address, target.namespace) as client:
        # Both daemons list the same single namespace.
        _ensure_namespace(client, target.namespace)

        def run() -> None:
            for _ in range(ROUND_TRIPS):
                client.version()
                client.namespaces.list()

        yield Measure(run)


@scenario(
    "ctr-version-namespaces",
    f"{CTR_RUNS} x (`ctr version` + `ctr namespaces ls`): whole Go client processes",
    ops=CTR_RUNS,
    unit="2 ctr runs",
)
def ctr_version_namespaces(target: Target) -> Iterator[Measure]:
    with Client(target.address, target.namespace) as client:
        _ensure_namespace(client, target.namespace)
    version = ctr(target, "version")
    ls = ctr(target, "namespaces", "ls")

    def run() -> None:
        for _ in range(CTR_RUNS):
            version()
            ls()

    yield Measure(run)
