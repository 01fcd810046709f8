"""Shared fixtures: real daemons on temp paths, cleaned up even on failure."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import daemons


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real mounts, sockets under /run, runc)")
    for item in items:
        if "integration" in item.keywords or "interop" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def daemon() -> Iterator[daemons.RunningDaemon]:
    """A fresh pycontainerd for one test."""
    with daemons.pycontainerd() as d:
        yield d


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[daemons.RunningDaemon]:
    """One pycontainerd for a module's read-mostly tests."""
    with daemons.pycontainerd() as d:
        yield d


@pytest.fixture(scope="session")
def containerd() -> Iterator[daemons.RunningDaemon]:
    """Debian's containerd, for interop tests."""
    with daemons.containerd() as d:
        yield d
