"""Our ``pyctr snapshots`` and client against Debian's containerd.

Every command runs through Debian's ``ctr`` and through ``pyctr`` in two
namespaces of the same containerd; the outputs must match once times,
sequence-numbered paths and the order of Go's label maps are set aside.
"""

from __future__ import annotations

import re
import uuid

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client
from pycontainerd.snapshots import Info, Kind, Usage
from tests.integration._cli import Cli
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.interop

STEPS: list[tuple[str, ...]] = [
    ("prepare", "a"),
    ("prepare", "--target", "/mnt/t", "p2"),
    ("prepare", "x", "nope"),
    ("commit", "c1", "nonexist"),
    ("commit", "c1", "a"),
    ("prepare", "b", "c1"),
    ("ls",),
    ("rm", "c1"),
    ("info", "c1"),
    ("info", "b"),
    ("info", "nonexist"),
    ("mounts", "/mnt/x", "b"),
    ("usage",),
    ("usage", "b"),
    ("usage", "-b", "b"),
    ("tree",),
    ("prepare", "b", "c1"),
    ("rm", "nonexist"),
    ("label", "b", "x.y=1"),
    # ctr puts no gc.root label on a view: containerd's collector (running
    # for other tests too) may take one at any time, so views stay brief.
    ("view", "--target", "/mnt/v", "v", "c1"),
    ("rm", "v", "b"),
    ("ls",),
]

#: The native snapshotter differs only in its mounts and sizes.
NATIVE_STEPS: list[tuple[str, ...]] = [
    ("prepare", "a"),
    ("commit", "c1", "a"),
    ("prepare", "--target", "/mnt/x", "b", "c1"),
    ("usage",),
    ("view", "--target", "/mnt/v", "v", "c1"),
    ("rm", "v", "b", "c1"),
]


def _normalise(text: str) -> str:
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "TIME", text)
    text = re.sub(r"snapshots/\d+", "snapshots/N", text)
    text = re.sub(r"\b[\w-]+/\d+/", "NS/N/", text)  # backend keys in errors
    text = text.replace("pyctr: ", "ctr: ")
    # Go prints a label map in random order.
    return re.sub(
        r"^([^\s{}\"]+=[^\s,]*(?:,[^\s,]+=[^\s,]*)+)$",
        lambda m: ",".join(sorted(m.group(1).split(","))),
        text,
        flags=re.M,
    )


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
def test_pyctr_prints_what_ctr_prints(containerd: RunningDaemon, snapshotter: str) -> None:
    run = uuid.uuid4().hex[:8]
    outputs = {}
    for tool in ("ctr", "pyctr"):
        cli = Cli(tool, containerd.address, f"{tool}-{run}")
        lines = []
        for step in STEPS if snapshotter == "overlayfs" else NATIVE_STEPS:
            r = cli("snapshots", "--snapshotter", snapshotter, *step, ok=False)
            lines.append(f"$ {' '.join(step)} -> {r.returncode}\n{r.stdout}{r.stderr}")
        outputs[tool] = [_normalise(x) for x in lines]
    for ours, theirs in zip(outputs["pyctr"], outputs["ctr"], strict=True):
        assert ours == theirs


def test_client_snapshot_service_keeps_the_protocol(containerd: RunningDaemon) -> None:
    with Client(containerd.address, f"client-{uuid.uuid4().hex[:8]}") as client:
        sn = client.snapshot_service("native")
        root = {"containerd.io/gc.root": "2026-01-01T00:00:00Z"}
        mounts = sn.prepare("w", labels=root)
        assert mounts[0].type == "bind"
        sn.commit("c", "w", root)
        sn.prepare("k", "c", {**root, "x": "1"})
        info = sn.stat("k")
        assert (info.name, info.parent, info.kind, info.labels["x"]) == ("k", "c", Kind.ACTIVE, "1")
        updated = sn.update(Info("k", Kind.UNKNOWN, labels={"y": "2"}), ["labels.y", "labels.x"])
        assert "x" not in updated.labels and updated.labels["y"] == "2"
        assert [i.name for i in sn.walk()] == ["c", "k"]
        assert isinstance(sn.usage("c"), Usage)
        with pytest.raises(errdefs.FailedPrecondition):
            sn.remove("c")
        with pytest.raises(errdefs.NotFound):
            sn.stat("nope")
        sn.remove("k")
        sn.remove("c")
        assert sn.list() == []
