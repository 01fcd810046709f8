"""Walking an image's content graph: sizes and the blobs one platform needs.

containerd composes these from handlers (``ChildrenHandler``,
``FilterPlatforms``, ``LimitManifests``); here they are plain functions
over a :data:`~pycontainerd.images.manifest.ReadBlob`, used by ``images ls``
(the SIZE column) and by export (the blobs an archive must carry).  Each
walks depth first, parents before children, with a stack of its own: an
image's indexes may nest as deep as its author likes.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, overload

from pycontainerd import errdefs
from pycontainerd import platforms as pf
from pycontainerd.images import Descriptor
from pycontainerd.images import mediatypes as mt
from pycontainerd.images.manifest import (
    AnyReadBlob,
    ReadBlob,
    SyncReadBlob,
    Walk,
    drive,
    filter_platforms,
    sort_by_platform,
    walk_children,
)

__all__ = ["image_size", "reachable", "walk_reachable", "walk_size"]


def walk_size(
    target: Descriptor, matcher: pf.Matcher
) -> Walk[tuple[int, errdefs.ContainerdError | None]]:
    """See :func:`image_size`; also returns the error that stopped the walk."""
    total = 0
    stack = [target]
    try:
        while stack:
            desc = stack.pop()
            if desc.size < 0:
                raise errdefs.InvalidArgument(f"invalid size {desc.size} in {desc.digest}")
            total += desc.size
            kids = yield from walk_children(desc)
            if mt.is_index(desc.media_type):
                kids = sort_by_platform(matcher, filter_platforms(matcher, kids))[:1]
            stack.extend(reversed(kids))
    except errdefs.ContainerdError as exc:
        return total, exc
    return total, None


def walk_reachable(target: Descriptor, matcher: pf.Matcher | None = None) -> Walk[list[Descriptor]]:
    """See :func:`reachable`."""
    seen: set[str] = set()
    out: list[Descriptor] = []
    stack = [target]
    while stack:
        desc = stack.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        out.append(desc)
        kids = yield from walk_children(desc)
        if matcher is not None and mt.is_index(desc.media_type):
            kids = filter_platforms(matcher, kids)
        stack.extend(reversed(kids))
    return out


@overload
def image_size(read: SyncReadBlob, target: Descriptor, matcher: pf.Matcher) -> int: ...
@overload
def image_size(
    read: ReadBlob, target: Descriptor, matcher: pf.Matcher
) -> Coroutine[Any, Any, int]: ...
def image_size(read: AnyReadBlob, target: Descriptor, matcher: pf.Matcher) -> Any:
    """Bytes of the image for ``matcher``'s platform, as ctr's SIZE column.

    The target, the best matching manifest of each index, its config and its
    layers (containerd's ``Image.Size`` with a limit of one manifest).  A
    blob that cannot be read stops the walk: the size so far is returned,
    as ctr prints it after logging the error.
    """
    walk = walk_size(target, matcher)
    return drive(_first(walk), read)


def _first(walk: Walk[tuple[int, errdefs.ContainerdError | None]]) -> Walk[int]:
    size, _ = yield from walk
    return size


@overload
def reachable(
    read: SyncReadBlob, target: Descriptor, matcher: pf.Matcher | None = None
) -> list[Descriptor]: ...
@overload
def reachable(
    read: ReadBlob, target: Descriptor, matcher: pf.Matcher | None = None
) -> Coroutine[Any, Any, list[Descriptor]]: ...
def reachable(read: AnyReadBlob, target: Descriptor, matcher: pf.Matcher | None = None) -> Any:
    """Every descriptor under ``target`` (itself included), parents first, once each.

    Index entries whose platform ``matcher`` rejects are left out with
    everything below them; ``None`` keeps all platforms.
    """
    return drive(walk_reachable(target, matcher), read)
