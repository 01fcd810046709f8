"""Layer archives: safe apply, whiteouts, the walking differ's tar, compression.

This is where a hostile image meets the host filesystem, so the rule of
DESIGN.md section 7 is kept here: applying a layer never writes, creates,
chmods, chowns, removes or follows anything outside the target root.
"""

from __future__ import annotations

from pycontainerd.archive.apply import ApplyStats, Whiteouts, apply_layer
from pycontainerd.archive.diff import write_diff, write_tree

__all__ = ["ApplyStats", "Whiteouts", "apply_layer", "write_diff", "write_tree"]
