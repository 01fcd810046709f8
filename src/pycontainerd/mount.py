"""Mounts: how a snapshot becomes a directory.

A :class:`Mount` is containerd's ``types.Mount``: what a snapshotter hands
out and what ``mount(8)`` would need to put the snapshot somewhere.  The
daemon never mounts a snapshot for a client; the client (or the diff
service, while applying a layer) does, with :func:`mount_all` and
:func:`unmount`.  Kept at the package top level because the snapshotters,
the diff service and the client all speak it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Mount"]


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount: ``mount -t TYPE -o OPTIONS SOURCE TARGET``.

    ``type`` is ``overlay`` or ``bind`` for our snapshotters; ``options``
    holds both flags (``ro``, ``rbind``) and data (``lowerdir=…``).
    ``target`` is a sub-path for nested mounts and is empty for a root.
    """

    type: str
    source: str
    options: tuple[str, ...] = field(default_factory=tuple)
    target: str = ""
