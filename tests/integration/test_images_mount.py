"""Images as root filesystems through pyctr: mount, unmount, check, usage, and
containers made from an image, against our daemon and Debian's containerd
(ctr imports the image; outputs are compared with ctr's)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.images.identity import chain_id
from pycontainerd.oci import spec as oci
from tests.integration._cli import Cli, table
from tests.integration.test_images_ctr_acceptance import BUSYBOX, BuiltImage, build_oci_archive
from tests.support import daemons

pytestmark = pytest.mark.integration

NAME = "docker.io/library/rootfs:test"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return build_oci_archive(tmp_path_factory.mktemp("img") / "oci.tar", NAME)


@pytest.fixture(params=["pycontainerd", "containerd"])
def clis(request: pytest.FixtureRequest, image: BuiltImage) -> Iterator[tuple[Cli, Cli]]:
    """(pyctr, ctr) on a fresh daemon holding the imported, unpacked image:
    ours, and Debian's containerd, where pyctr must behave the same."""
    start = daemons.pycontainerd if request.param == "pycontainerd" else daemons.containerd
    with start() as d:
        ctr = Cli("ctr", d.address, "rootfs")
        ctr("images", "import", str(image.archive))
        yield Cli("pyctr", d.address, "rootfs"), ctr


def _snapshots(ctr: Cli) -> dict[str, list[str]]:
    """KEY -> [PARENT, KIND] (PARENT empty for a base layer)."""
    rows = table(ctr("snapshots", "ls").stdout)[1:]
    return {r[0]: (r[1:] if len(r) == 3 else ["", r[1]]) for r in rows}


def test_mount_is_a_read_only_view_and_unmount_rm_removes_it(
    clis: tuple[Cli, Cli], image: BuiltImage, tmp_path: Path
) -> None:
    pyctr, ctr = clis
    top = chain_id(list(image.diff_ids))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert pyctr("images", "mount", NAME, str(mnt)).stdout.split() == [top, str(mnt)]
    try:
        assert (mnt / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
        with pytest.raises(OSError):
            (mnt / "new").write_text("x")
        assert _snapshots(ctr)[str(mnt)] == [top, "View"]
        leases = table(ctr("leases", "ls").stdout)
        assert str(mnt) in [r[0] for r in leases[1:]]
    finally:
        assert pyctr("images", "unmount", "--rm", str(mnt)).stdout.strip() == str(mnt)
    assert not os.listdir(mnt)
    assert str(mnt) not in _snapshots(ctr)
    assert str(mnt) not in ctr("leases", "ls", "-q").stdout.split()


def test_mount_rw_is_writable_and_kept_without_rm(clis: tuple[Cli, Cli], tmp_path: Path) -> None:
    pyctr, ctr = clis
    mnt = tmp_path / "rw"
    mnt.mkdir()
    pyctr("images", "mount", "--rw", NAME, str(mnt))
    (mnt / "new").write_text("written")
    pyctr("images", "unmount", str(mnt))
    assert not (mnt / "new").exists()
    assert _snapshots(ctr)[str(mnt)][1] == "Active"
    # Mounting again finds the same snapshot, with what was written.
    pyctr("images", "mount", "--rw", NAME, str(mnt))
    try:
        assert (mnt / "new").read_text() == "written"
    finally:
        pyctr("images", "unmount", "--rm", str(mnt))


def test_mount_of_a_missing_image_leaves_no_lease(clis: tuple[Cli, Cli], tmp_path: Path) -> None:
    pyctr, ctr = clis
    message = pyctr.error("images", "mount", "docker.io/library/absent:1", str(tmp_path))
    assert message == 'image "docker.io/library/absent:1": not found'
    assert str(tmp_path) not in ctr("leases", "ls", "-q").stdout.split()


def test_failed_mount_leaves_no_view_and_no_lease(clis: tuple[Cli, Cli], tmp_path: Path) -> None:
    pyctr, ctr = clis
    target = str(tmp_path / "absent-dir")
    assert "No such file or directory" in pyctr.error("images", "mount", NAME, target)
    assert target not in _snapshots(ctr)
    assert target not in ctr("leases", "ls", "-q").stdout.split()


def test_check_prints_what_ctr_prints(clis: tuple[Cli, Cli], image: BuiltImage) -> None:
    pyctr, ctr = clis
    assert pyctr("images", "check").stdout == ctr("images", "check").stdout
    assert pyctr("images", "check", "-q").stdout == ctr("images", "check", "-q").stdout
    assert table(pyctr("images", "check").stdout)[1][-1] == "true"
    assert pyctr("images", "check", "name==absent").stdout == ""
    # With its layer blob gone the image is incomplete (still unpacked).
    ctr("content", "rm", image.layers[0])
    out = pyctr("images", "check").stdout
    assert out == ctr("images", "check").stdout
    assert "incomplete (1/2)" in out
    assert pyctr("images", "check", "-q").stdout == ctr("images", "check", "-q").stdout == ""


def test_usage_lists_each_snapshot_of_the_image(clis: tuple[Cli, Cli], image: BuiltImage) -> None:
    pyctr, _ = clis
    rows = table(pyctr("images", "usage", NAME).stdout)
    assert rows[0] == ["KEY", "SIZE", "INODES"]
    assert [r[0] for r in rows[1:]] == [chain_id(list(image.diff_ids))]
    assert int(rows[1][-1]) >= 4  # bin, bin/busybox, bin/sh, etc, etc/hostname
    pyctr("images", "rm", "--sync", NAME)


def _info(cli: Cli, id: str) -> dict[str, object]:
    info: dict[str, object] = json.loads(cli("containers", "info", id).stdout)
    return info


@pytest.mark.parametrize("tool", ["pyctr", "ctr"])
def test_container_from_image_gets_its_own_snapshot(
    clis: tuple[Cli, Cli], image: BuiltImage, tool: str
) -> None:
    pyctr, ctr = clis
    cli = pyctr if tool == "pyctr" else ctr
    top = chain_id(list(image.diff_ids))
    cli("containers", "create", "--label", "app=web", NAME, "web")
    info = _info(ctr, "web")
    assert (info["Image"], info["Snapshotter"], info["SnapshotKey"]) == (NAME, "overlayfs", "web")
    labels = info["Labels"]
    assert isinstance(labels, dict)
    assert labels["app"] == "web"
    assert labels["io.containerd.image.config.stop-signal"] == "SIGTERM"
    spec = info["Spec"]
    assert isinstance(spec, dict)
    assert spec["process"]["args"] == ["/bin/sh"]
    assert spec["process"]["env"] == ["PATH=/bin"]
    assert spec["root"] == {"path": "rootfs"}
    assert _snapshots(ctr)["web"] == [top, "Active"]

    pyctr("containers", "rm", "web")
    assert "web" not in _snapshots(ctr)
    assert ctr("containers", "ls", "-q").stdout == ""


def test_pyctr_and_ctr_make_the_same_container_from_an_image(clis: tuple[Cli, Cli]) -> None:
    pyctr, ctr = clis
    args = ["--env", "A=1", "--cwd", "/tmp", NAME]
    pyctr("containers", "create", *args, "c1", "echo", "hi")
    ctr("containers", "create", *args, "c2", "echo", "hi")
    one, two = _info(ctr, "c1"), _info(ctr, "c2")
    for info in (one, two):
        for volatile in ("ID", "SnapshotKey", "CreatedAt", "UpdatedAt"):
            info.pop(volatile)
    spec_one, spec_two = one.pop("Spec"), two.pop("Spec")
    assert one == two
    assert isinstance(spec_one, dict) and isinstance(spec_two, dict)
    spec_two["linux"]["cgroupsPath"] = spec_one["linux"]["cgroupsPath"]
    assert spec_one["process"] == spec_two["process"]
    pyctr("containers", "rm", "c1", "c2")


def test_rm_keep_snapshot_leaves_the_snapshot(image: BuiltImage) -> None:
    # Without garbage collection: a kept snapshot nothing references is
    # otherwise collected soon after, as with containerd.
    with daemons.pycontainerd(config=daemons.NO_GC_CONFIG) as d:
        pyctr, ctr = Cli("pyctr", d.address, "rootfs"), Cli("ctr", d.address, "rootfs")
        ctr("images", "import", str(image.archive))
        pyctr("containers", "create", NAME, "kept")
        pyctr("containers", "rm", "--keep-snapshot", "kept")
        assert _snapshots(ctr)["kept"][1] == "Active"
        assert ctr("containers", "ls", "-q").stdout == ""


def test_async_client_unpacks_and_builds_a_container_from_an_image(
    image: BuiltImage,
) -> None:
    """The async client (the source of the sync one) against both daemons."""
    from pycontainerd.client import AsyncClient
    from pycontainerd.client._async.containers import with_new_snapshot, with_snapshotter

    async def scenario(address: str) -> None:
        async with AsyncClient(address, "rootfs") as client:
            img = await client.get_image(NAME)
            assert await img.is_unpacked("native") is False
            assert await img.unpack("native") is True
            assert await img.unpack("native") is False
            top = chain_id(await img.rootfs())
            config = await client.content.info((await img.config()).digest)
            assert config.labels["containerd.io/gc.ref.snapshot.native"] == top
            spec = oci.generate("rootfs", "app", await img.spec_opts(["ls"], snapshotter="native"))
            assert spec["process"]["args"] == ["ls"]
            c = await client.new_container(
                "app", with_snapshotter("native"), with_new_snapshot("app", img), spec=spec
            )
            record = await c.info()
            assert (record.snapshotter, record.snapshot_key, record.image) == (
                "native",
                "app",
                NAME,
            )
            assert (await client.snapshot_service("native").stat("app")).parent == top
            await c.delete(cleanup_snapshot=True)
            with pytest.raises(errdefs.NotFound):
                await client.snapshot_service("native").stat("app")
            assert await client.leases.list() == []

    for start in (daemons.pycontainerd, daemons.containerd):
        with start() as d:
            Cli("ctr", d.address, "rootfs")("images", "import", "--no-unpack", str(image.archive))
            asyncio.run(scenario(d.address))
