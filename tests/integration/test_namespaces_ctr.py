"""Deleting a namespace that still holds objects: Debian's ctr and our pyctr get
the same refusal from our daemon as from containerd."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration._cli import Cli
from tests.support import daemons

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[Cli, Cli]]:
    with daemons.pycontainerd() as ours, daemons.containerd() as theirs:
        yield Cli("ctr", ours.address), Cli("ctr", theirs.address)


def _refusal(ctr: Cli, tool: str = "ctr") -> str:
    cli = Cli(tool, ctr.address)
    return cli.error("namespaces", "rm", "left")


def test_namespace_with_snapshots_left_is_refused_as_containerd_does(
    both: tuple[Cli, Cli],
) -> None:
    messages = []
    for ctr in both:
        ns = ctr.in_namespace("left")
        ns("snapshots", "prepare", "k1")
        ns("snapshots", "--snapshotter", "native", "prepare", "k2")
        ns("containers", "create", "--rootfs", "/tmp", "c1")
        messages.append((_refusal(ctr), _refusal(ctr, "pyctr")))
        ns("containers", "rm", "c1")
        ns("snapshots", "rm", "k1")
        ns("snapshots", "--snapshotter", "native", "rm", "k2")
        ctr("namespaces", "rm", "left")
    ours, theirs = messages
    assert ours == theirs
    assert theirs[0] == (
        'unable to delete left: namespace "left" must be empty, but it still has containers, '
        'snapshots on "native" snapshotter, snapshots on "overlayfs" snapshotter: '
        "failed precondition"
    )
