"""Layers built to exhaust a tar reader, imported with Debian's ``ctr``: the
daemon's memory stays bounded, bad numbers are typed errors, and it keeps
serving."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_images_ctr_acceptance import build_oci_archive_from_blob
from tests.support import daemons, launch, tarbombs

pytestmark = pytest.mark.integration

MIB = 1 << 20


@pytest.fixture(scope="module")
def daemon() -> Iterator[daemons.RunningDaemon]:
    with daemons.pycontainerd(config=daemons.NO_GC_CONFIG) as d:
        yield d


def peak_rss(pid: int) -> int:
    """The process's high-water resident set, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def ctr_import(daemon: daemons.RunningDaemon, archive: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which("ctr"), "Debian's ctr is not installed"
    return subprocess.run(
        ["ctr", "-a", daemon.address, "images", "import", str(archive)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_extended_header_bomb_costs_the_daemon_a_few_mib(
    daemon: daemons.RunningDaemon, tmp_path: Path
) -> None:
    # Warm up the import path so its code and caches are in the baseline.
    small = tarbombs.GzipLayer(tarbombs.pax_bomb(1, 4096))
    assert ctr_import(daemon, build_oci_archive_from_blob(
        tmp_path / "warm.tar", "docker.io/library/warm:1", small.blob, small.diff_id
    ).archive).returncode == 0
    before = peak_rss(daemon.process.pid)

    # ~160 KiB of gzip: 150 extended headers of 1 MiB, each with its own key.
    bomb = tarbombs.pax_bomb_gzip(150, MIB)
    assert len(bomb.blob) < MIB
    archive = build_oci_archive_from_blob(
        tmp_path / "bomb.tar", "docker.io/library/bomb:1", bomb.blob, bomb.diff_id
    ).archive
    result = ctr_import(daemon, archive)
    grown = peak_rss(daemon.process.pid) - before
    assert grown < 48 * MIB, f"peak RSS grew by {grown / MIB:.0f} MiB: {result.stderr}"
    # Only the last header reaches the entry; a 1 MiB xattr is then refused
    # by the kernel, as a typed error.
    assert "xattr user.k149: Argument list too long: invalid argument" in result.stderr
    assert "user.k148" not in result.stderr
    launch.assert_serving(daemon.address)


@pytest.mark.parametrize("key", ["size", "mtime"])
def test_pax_number_of_thousands_of_digits_is_invalid_argument(
    daemon: daemons.RunningDaemon, tmp_path: Path, key: str
) -> None:
    layer = tarbombs.GzipLayer(iter([
        tarbombs.extended_header({key: "9" * 5000}), *tarbombs.pax_bomb(0, 0)
    ]))
    archive = build_oci_archive_from_blob(
        tmp_path / "digits.tar", f"docker.io/library/digits-{key}:1", layer.blob, layer.diff_id
    ).archive
    result = ctr_import(daemon, archive)
    assert result.returncode != 0
    assert f"malformed PAX {key}" in result.stderr, result.stderr
    assert "invalid argument" in result.stderr, result.stderr
    assert "unknown" not in result.stderr.lower(), result.stderr
    launch.assert_serving(daemon.address)
