"""The version this build reports over the Version API.

A constant rather than ``importlib.metadata.version("pycontainerd")``:
reading the installed metadata costs pyctr and the daemon some 20 ms at every
start (``importlib.metadata`` pulls in ``email``, ``zipfile`` and more), for a
value fixed at release.  ``tests/unit/test_version.py`` keeps it equal to
``project.version`` in ``pyproject.toml``.
"""

from __future__ import annotations

__all__ = ["REVISION", "VERSION"]

VERSION = "0.1.0"

#: Identifies the implementation to clients that print both fields (ctr version).
REVISION = "pycontainerd"
