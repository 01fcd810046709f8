"""``python -m bench``: see bench/README.md."""

from __future__ import annotations

import sys
from pathlib import Path

# The daemon helpers live in tests/support (shared with the test suite), so the
# repository root must be importable even when started from elsewhere.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
