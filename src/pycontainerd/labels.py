"""Limits on the labels attached to containers, images, content, snapshots and leases.

Labels are stored in metadata and copied into every listing, so containerd caps
each key/value pair at 4096 bytes (UTF-8 length of key plus value).  We apply
the same cap with the same message, so a label that one daemon refuses the
other refuses too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pycontainerd import errdefs

__all__ = ["MAX_SIZE", "apply_update", "validate", "validate_all"]

#: Largest accepted ``len(key) + len(value)``, in bytes.
MAX_SIZE = 4096

# The error shows only the head of the key: a huge key would drown the message.
_KEY_PREVIEW = 10


def _size(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def validate(key: str, value: str) -> None:
    """Raise ``InvalidArgument`` if the pair is larger than ``MAX_SIZE`` bytes."""
    # A character is at most 4 UTF-8 bytes, so most labels pass without encoding.
    if 4 * (len(key) + len(value)) <= MAX_SIZE:
        return
    if _size(key) + _size(value) > MAX_SIZE:
        preview = key.encode("utf-8", "surrogatepass")[:_KEY_PREVIEW].decode("utf-8", "replace")
        raise errdefs.InvalidArgument(
            f"label key and value greater than maximum size ({MAX_SIZE} bytes), key: {preview}"
        )


def validate_all(labels: Mapping[str, str] | None) -> None:
    """Validate every pair of ``labels``; ``None`` or empty is valid.

    Raises ``InvalidArgument`` for the first pair over the limit.
    """
    if not labels:
        return
    for key, value in labels.items():
        validate(key, value)


def apply_update(
    what: str, current: Mapping[str, str], new: Mapping[str, str], fieldpaths: Sequence[str]
) -> dict[str, str]:
    """containerd's update mask over an object that has only labels.

    No paths, or ``labels``, take ``new`` whole; ``labels.<key>`` takes that
    one key (absent or empty in ``new``: removed).  Empty values are never
    kept.  Any other path is an ``InvalidArgument`` naming ``what``
    (``snapshot "x"``, ``content info "sha256:…"``).  Validation is the
    caller's: each prefixes its own context to the message.
    """
    if not fieldpaths:
        result = dict(new)
    else:
        result = dict(current)
        for path in fieldpaths:
            if path.startswith("labels."):
                key = path[len("labels.") :]
                result[key] = new.get(key, "")
            elif path == "labels":
                result = dict(new)
            else:
                raise errdefs.InvalidArgument(f"cannot update {errdefs.q(path)} field on {what}")
    return {k: v for k, v in result.items() if v}
