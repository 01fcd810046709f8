"""The version constant is the one the package is built with."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

from pycontainerd.version import VERSION

pytestmark = pytest.mark.unit

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_version_constant_matches_pyproject() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    # Either pyproject states the version, or it takes it from our constant.
    if "version" in project:
        assert project["version"] == VERSION
    else:
        assert "version" in project.get("dynamic", [])


def test_version_constant_matches_the_installed_metadata() -> None:
    try:
        installed = importlib.metadata.version("pycontainerd")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pycontainerd is not installed (running from a source tree)")
    assert installed == VERSION
