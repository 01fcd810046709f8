"""``pyctr`` against Debian's containerd: it works, and prints what ``ctr`` prints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.interop

PYCTR = Path(sys.executable).parent / "pyctr"


def run(binary: str, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-a", address, *args], capture_output=True, text=True, timeout=30
    )


def pyctr(containerd: RunningDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run(str(PYCTR), containerd.address, *args)
    assert proc.returncode == 0, proc.stderr
    return proc


def ctr(containerd: RunningDaemon, *args: str) -> str:
    binary = shutil.which("ctr")
    if binary is None:
        pytest.skip("Debian's ctr is not installed")
    proc = run(binary, containerd.address, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_version_against_containerd(containerd: RunningDaemon) -> None:
    proc = pyctr(containerd, "version")
    server = proc.stdout.split("Server:\n", 1)[1].splitlines()
    assert server[0].startswith("  Version:  1.6")
    assert server[2].startswith("  UUID: ")
    # Like ctr, a client/server version difference is a warning, not an error.
    assert "WARNING: version mismatch" in proc.stderr

    data = json.loads(pyctr(containerd, "version", "--format", "json").stdout)
    assert data["server"]["version"].startswith("1.6")


def test_namespaces_ls_against_containerd(containerd: RunningDaemon) -> None:
    pyctr(containerd, "namespaces", "create", "pyctr-interop", "team=a", "tier=b")
    try:
        assert pyctr(containerd, "namespaces", "ls").stdout == ctr(containerd, "namespaces", "ls")
        assert "pyctr-interop" in pyctr(containerd, "ns", "ls", "-q").stdout.split()
    finally:
        pyctr(containerd, "namespaces", "rm", "pyctr-interop")


def test_plugins_ls_matches_ctr_byte_for_byte(containerd: RunningDaemon) -> None:
    assert pyctr(containerd, "plugins", "ls").stdout == ctr(containerd, "plugins", "ls")
    grpc = ("type==io.containerd.grpc.v1",)
    assert pyctr(containerd, "plugins", "ls", "-d", *grpc).stdout == ctr(
        containerd, "plugins", "ls", "-d", *grpc
    )
