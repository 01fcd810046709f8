"""Content digests (``sha256:<hex>``), checked the way go-digest checks them.

A digest names a blob, an image target, a lease's content resource; a client
that sends a malformed one must get the same refusal from us as from
containerd, so :func:`validate` follows go-digest's order of checks and its
messages (``invalid checksum digest format``, ``... length``,
``unsupported digest algorithm``).
"""

from __future__ import annotations

import re

from pycontainerd import errdefs

__all__ = ["ALGORITHMS", "validate"]

#: Algorithms containerd links in, with the hex length of their digests.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}

_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX_RE = re.compile(r"[a-f0-9]+")


def validate(digest: str) -> None:
    """Raise ``InvalidArgument`` (go-digest's message) unless ``digest`` is valid."""
    i = digest.find(":")
    if i <= 0 or i + 1 == len(digest):
        raise errdefs.InvalidArgument("invalid checksum digest format")
    algorithm, encoded = digest[:i], digest[i + 1 :]
    size = ALGORITHMS.get(algorithm)
    if size is None:
        if _DIGEST_RE.fullmatch(digest) is None:
            raise errdefs.InvalidArgument("invalid checksum digest format")
        raise errdefs.InvalidArgument("unsupported digest algorithm")
    if len(encoded) != size:
        raise errdefs.InvalidArgument("invalid checksum digest length")
    if _HEX_RE.fullmatch(encoded) is None:
        raise errdefs.InvalidArgument("invalid checksum digest format")
