"""pyctr's command groups, one module each; ``main`` registers ``COMMANDS``.

To add a group (``containers``, ``images``, ``tasks``…), write a module whose
``command`` is a :class:`pycontainerd.cli.app.Group` or ``Command`` and list
it here.
"""

from __future__ import annotations

import click

from pycontainerd.cli.commands import (
    containers,
    content,
    events,
    images,
    images_rootfs,  # noqa: F401  (adds mount, unmount, check, usage to images)
    leases,
    namespaces,
    plugins,
    snapshots,
    version,
)

__all__ = ["COMMANDS"]

COMMANDS: tuple[click.Command, ...] = (
    containers.command,
    content.command,
    events.command,
    images.command,
    leases.command,
    namespaces.command,
    plugins.command,
    snapshots.command,
    version.command,
)
