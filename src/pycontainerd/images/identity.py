"""Chain IDs: the names committed layer snapshots get.

A snapshot holding layers 1..n of an image is named by the *chain ID* of
their uncompressed digests (diff IDs), as the OCI image spec defines it:
``chain(1) = diffid(1)`` and ``chain(n) = sha256(chain(n-1) + " " + diffid(n))``.
Two images sharing their first layers thus share those snapshots, and a
client can tell whether an image is unpacked by stat'ing one name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from pycontainerd import digest, errdefs

__all__ = ["chain_id", "chain_ids"]


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain ID of every prefix of ``diff_ids`` (one per layer, in order).

    Each diff ID is validated first: a malformed one would otherwise be
    hashed into a name that looks fine but matches nothing.
    """
    result: list[str] = []
    for diff_id in diff_ids:
        try:
            digest.validate(diff_id)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"diff id {diff_id!r}: {exc.message}") from exc
        if not result:
            result.append(diff_id)
        else:
            joined = f"{result[-1]} {diff_id}".encode()
            result.append("sha256:" + hashlib.sha256(joined).hexdigest())
    return result


def chain_id(diff_ids: Sequence[str]) -> str:
    """The chain ID of all of ``diff_ids`` ("" for no layers, as containerd)."""
    ids = chain_ids(diff_ids)
    return ids[-1] if ids else ""
