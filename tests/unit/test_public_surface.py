"""The public export list is pinned so an accidental change shows in review."""

import pytest

import pycontainerd
import pycontainerd.client

pytestmark = pytest.mark.unit


def test_top_level_exports():
    assert sorted(pycontainerd.__all__) == ["AsyncClient", "Client", "__version__"]
    assert pycontainerd.Client is pycontainerd.client.Client
    assert pycontainerd.AsyncClient is pycontainerd.client.AsyncClient


def test_client_exports():
    assert sorted(pycontainerd.client.__all__) == [
        "AsyncClient",
        "Client",
        "DEFAULT_ADDRESS",
        "ServerInfo",
        "Version",
    ]


def test_sync_and_async_clients_have_the_same_methods():
    def public(cls):
        return {n for n in dir(cls) if not n.startswith("_")}

    assert public(pycontainerd.Client) == public(pycontainerd.AsyncClient)


def test_generated_code_is_fresh():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for tool in ("genproto.py", "unasync.py"):
        res = subprocess.run(
            [sys.executable, str(root / "tools" / tool), "--check"], capture_output=True, text=True
        )
        assert res.returncode == 0, res.stdout + res.stderr
