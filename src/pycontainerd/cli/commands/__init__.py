"""pyctr's commands, one module each, imported only when they run.

``COMMANDS`` describes each top-level command -- its module, name, aliases
and help line -- so that ``pyctr --help`` lists them all without importing
any (a command module brings in the client, and the client grpcio).

To add a command (``tasks``…), write a module whose ``command`` is a
:class:`pycontainerd.cli.app.Group` or ``Command`` and add its entry here;
``tests/unit/test_cli_lazy.py`` fails until the entry says what the command
says.
"""

from __future__ import annotations

from pycontainerd.cli.app import LazyCommand

__all__ = ["COMMANDS"]

COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand("containers", "containers", "Manage containers.", ("c", "container")),
    LazyCommand("content", "content", "Manage content."),
    LazyCommand(
        "events",
        "events",
        "Display the daemon's events, optionally only those matching FILTERS.",
        ("event",),
    ),
    # images_rootfs adds mount, unmount, check and usage to images.
    LazyCommand("images", "images", "Manage images.", ("image", "i"), extends=("images_rootfs",)),
    LazyCommand("leases", "leases", "Manage leases.", ("lease",)),
    LazyCommand("namespaces", "namespaces", "Manage namespaces.", ("namespace", "ns")),
    LazyCommand(
        "plugins", "plugins", "Provides information about the daemon's plugins.", ("plugin",)
    ),
    LazyCommand("run", "run", "Run a container."),
    LazyCommand("snapshots", "snapshots", "Manage snapshots.", ("snapshot",)),
    LazyCommand("tasks", "tasks", "Manage tasks.", ("t", "task")),
    LazyCommand("version", "version", "Print the client and server versions."),
)
