"""The version this build reports over the Version API."""

from __future__ import annotations

import importlib.metadata

__all__ = ["REVISION", "VERSION"]

try:
    VERSION = importlib.metadata.version("pycontainerd")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0+unknown"

#: Identifies the implementation to clients that print both fields (ctr version).
REVISION = "pycontainerd"
