"""Crafted hostile layers imported with Debian's ``ctr images import``: the
daemon unpacks (or refuses) each one, nothing outside the snapshot changes,
and the daemon keeps serving.

The layers are those of ``test_archive_crafted`` (which checks the applier
itself, entry by entry); here they go the whole way a user's would: through
the content service, the snapshots service and the diff service.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_archive_crafted import ESCAPES, snapshot
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import daemons, launch

pytestmark = pytest.mark.integration

#: Deep enough that every "../" run in the crafted names climbs past "/".
DEEP = Path("/" + "/".join(["d"] * 12))


@pytest.fixture(scope="module")
def daemon() -> Iterator[daemons.RunningDaemon]:
    with daemons.pycontainerd(config=daemons.NO_GC_CONFIG) as d:
        yield d


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sentinel directory the crafted layers aim at."""
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "secret").write_bytes(b"secret")
    os.chmod(out / "secret", 0o600)
    (out / "sub/x").write_bytes(b"x")
    return out


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_crafted_layer_import_changes_nothing_outside_and_daemon_keeps_serving(
    daemon: daemons.RunningDaemon, tmp_path: Path, outside: Path, case: str, snapshotter: str
) -> None:
    assert shutil.which("ctr"), "Debian's ctr is not installed"
    before = snapshot(outside)
    name = f"docker.io/library/crafted-{case}:{snapshotter}"
    archive = tmp_path / "crafted.tar"
    build_oci_archive(archive, name, ESCAPES[case](DEEP, outside))
    result = subprocess.run(
        ["ctr", "-a", daemon.address, "images", "import", "--snapshotter", snapshotter,
         str(archive)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Either outcome is acceptable for the layer itself (some are refused with
    # a typed error, some are contained); nothing outside may change.
    assert snapshot(outside) == before, result.stdout + result.stderr
    if result.returncode != 0:
        assert "unknown" not in result.stderr.lower(), result.stderr
    assert daemon.process.poll() is None, daemon.logs()
    launch.assert_serving(daemon.address)
