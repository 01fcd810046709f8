"""Filter support shared by the stores' ``list`` methods."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pycontainerd import errdefs, filters

__all__ = ["check_map", "parse_filters"]


async def parse_filters(fs: Sequence[str]) -> filters.Filter:
    """Parse a List's filters; a bad one is InvalidArgument, worded as containerd's."""
    try:
        return await filters.parse_async(fs)
    except errdefs.InvalidArgument as exc:
        # containerd wraps the parser's error (already "...: invalid argument")
        # in ErrInvalidArgument once more; its clients see the suffix twice.
        raise errdefs.InvalidArgument(f"{errdefs.wire_message(exc)}: {exc.suffix}") from None


def check_map(path: Sequence[str], m: Mapping[str, str]) -> tuple[str, bool]:
    """``labels.<a>.<b>``: the rest of the path is one key of the map."""
    if not m:
        return "", False
    key = ".".join(path)
    return (m[key], True) if key in m else ("", False)
