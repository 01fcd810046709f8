"""Which single mounts an applier can write into without mounting them.

A bind mount is a directory already: a layer can be applied into its
source.  (Overlay mounts are read with :func:`pycontainerd.mount.overlay_dirs`.)
"""

from __future__ import annotations

import functools
from pathlib import Path

from pycontainerd.mount import Mount

__all__ = ["bind_source", "in_user_namespace"]


def bind_source(m: Mount) -> tuple[Path, bool] | None:
    """A bind mount's source directory and whether it is read-only; None for
    any other mount (and for a nested one, whose target is not the root)."""
    if m.type != "bind" and not ({"bind", "rbind"} & set(m.options)):
        return None
    if m.target:
        return None
    return Path(m.source), "ro" in m.options


@functools.cache
def in_user_namespace() -> bool:
    """True inside a user namespace, where overlay whiteouts (0/0 character
    devices) cannot be created, so layers must go through a real mount."""
    try:
        fields = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return False
    return fields != ["0", "0", "4294967295"]
