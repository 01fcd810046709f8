"""Where the services meet the garbage collector.

Deleting an image or a lease with ``sync`` asks containerd to collect
garbage before answering.  The collector is a plugin of type
``io.containerd.gc.v1`` (:mod:`pycontainerd.gc.scheduler`, as containerd's
``scheduler``) whose instance has ``async schedule_and_wait()``; when it is
disabled, ``sync`` deletes return at once and what they orphaned stays.
"""

from __future__ import annotations

from typing import Any, Protocol

from pycontainerd import errdefs, plugin

__all__ = ["Scheduler", "scheduler"]


class Scheduler(Protocol):
    async def schedule_and_wait(self) -> Any:
        """Run a collection now (or join the one running) and wait for it."""
        ...


def scheduler(ctx: plugin.InitContext) -> Scheduler | None:
    """The GC scheduler if one is loaded (list ``plugin.PluginType.GC`` in requires)."""
    try:
        found: Scheduler = ctx.get(plugin.PluginType.GC)
    except errdefs.NotFound:
        return None
    return found


async def collect(gc: Scheduler | None) -> None:
    """Collect synchronously if a collector is loaded."""
    if gc is not None:
        await gc.schedule_and_wait()
