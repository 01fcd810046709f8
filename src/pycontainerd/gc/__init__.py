"""Garbage collection's core: tri-colour mark and sweep over a resource graph.

As containerd's ``gc`` package, this knows nothing of databases or labels.
A resource is a :class:`Node` — a type, a namespace and a key (a digest, a
lease id, ``<snapshotter>/<key>``) — and the caller supplies the graph as
data: the roots (what is in use by itself: images, containers, live leases),
a ``refs`` function naming what a node refers to, and every node that could
be removed.  :func:`tricolor` marks what the roots reach, :func:`sweep`
removes the rest.  The rules that build that graph from the metadata
database live in :mod:`pycontainerd.metadata.gc`; when collection runs is
the scheduler's business (:mod:`pycontainerd.gc.scheduler`).

A node may be reached *flat* (``Node.flat``): a lease labelled
``containerd.io/gc.flat`` holds its content and snapshots without what they
refer to.  Marking leaves it to ``refs`` to follow less from a flat node;
the reachable set only ever holds the plain node, so flat and plain
references to one resource keep the same thing alive.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

__all__ = ["Node", "ResourceType", "Stats", "sweep", "tricolor", "unreachable"]


class ResourceType(enum.IntEnum):
    """Kinds of resource, numbered as containerd's ``metadata`` package numbers them."""

    UNKNOWN = 0
    CONTENT = 1
    SNAPSHOT = 2
    CONTAINER = 3
    TASK = 4
    LEASE = 5
    INGEST = 6


class Node(NamedTuple):
    """One resource in the graph."""

    type: ResourceType
    namespace: str
    key: str
    #: Reached through a flat reference: hold the node, not what it refers to.
    flat: bool = False


class Stats(Protocol):
    """What a collection reports; ``elapsed`` is its pause, in seconds."""

    @property
    def elapsed(self) -> float: ...


Refs = Callable[[Node], Iterable[Node]]


def tricolor(roots: Iterable[Node], refs: Refs) -> set[Node]:
    """Every node reachable from ``roots`` through ``refs`` (flat marks dropped).

    White nodes are unseen, grey ones wait on the stack with their
    references unexplored, black ones are done.  Depth first with an
    explicit stack, so a deep chain costs no recursion and a cycle or a
    shared node is explored once.
    """
    grey = list(roots)
    seen: set[Node] = set()
    black: set[Node] = set()
    while grey:
        node = grey.pop()
        if node in seen:
            continue
        seen.add(node)
        grey.extend(ref for ref in refs(node) if ref not in seen)
        black.add(node._replace(flat=False) if node.flat else node)
    return black


def sweep(
    reachable: set[Node], nodes: Iterable[Node], remove: Callable[[Node], None]
) -> list[Node]:
    """Call ``remove`` on each of ``nodes`` that is not reachable; returns those nodes."""
    removed = []
    for node in nodes:
        if node not in reachable:
            remove(node)
            removed.append(node)
    return removed


def unreachable(roots: Iterable[Node], refs: Refs, nodes: Iterable[Node]) -> list[Node]:
    """The nodes of ``nodes`` the roots do not reach: what a collection would remove."""
    reachable = tricolor(roots, refs)
    return [n for n in nodes if n not in reachable]
