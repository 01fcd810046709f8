"""Unpacking an image: the pure half (names, labels, layer pairing).

An image is unpacked into a snapshotter when each of its layers has been
applied, in order, into a snapshot committed under the layer's chain ID
(:mod:`pycontainerd.images.identity`).  The steps that talk to a daemon
(stat, prepare, apply through the diff service, commit, label content) are
in :mod:`pycontainerd.client._async.image` so that the sync client gets
them too; async callers use ``pycontainerd.client._async.image.unpack``
(``client._sync.image.unpack`` in sync code).  This module holds what both
need and what can be tested without a daemon: which blob goes with which
diff ID, and the names and labels containerd uses.  The spec option an
image config implies, and the resolution of its ``USER``, live in
:mod:`pycontainerd.oci` and are re-exported here for existing callers.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pycontainerd import errdefs
from pycontainerd.images import Descriptor
from pycontainerd.oci.defaults import DEFAULT_UNIX_ENV
from pycontainerd.oci.opts import with_image_config
from pycontainerd.oci.user import Account, parse_group, parse_passwd, resolve_user

__all__ = [
    "DEFAULT_SNAPSHOTTER",
    "DEFAULT_UNIX_ENV",
    "LABEL_DEFAULT_SNAPSHOTTER",
    "LABEL_GC_SNAPSHOT_PREFIX",
    "LABEL_STOP_SIGNAL",
    "LABEL_UNCOMPRESSED",
    "Account",
    "Layer",
    "gc_snapshot_label",
    "pair_layers",
    "parse_group",
    "parse_passwd",
    "resolve_user",
    "unpack_key",
    "with_image_config",
]

#: The snapshotter used when none is named (containerd's default on Linux).
DEFAULT_SNAPSHOTTER = "overlayfs"
#: Namespace label naming the namespace's default snapshotter.
LABEL_DEFAULT_SNAPSHOTTER = "containerd.io/defaults/snapshotter"
#: Content label a compressed layer gets once its uncompressed digest is verified.
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
#: Prefix of the config blob's label holding the top snapshot of an unpack,
#: so garbage collection keeps the snapshots as long as the image.
LABEL_GC_SNAPSHOT_PREFIX = "containerd.io/gc.ref.snapshot."
#: Container label ctr sets to the image's stop signal.
LABEL_STOP_SIGNAL = "io.containerd.image.config.stop-signal"


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer: the blob as stored (often compressed) and its diff ID."""

    blob: Descriptor
    diff_id: str


def pair_layers(layers: Sequence[Descriptor], diff_ids: Sequence[str]) -> list[Layer]:
    """Zip a manifest's layers with its config's diff IDs.

    They must match one to one: a config with a different count describes
    another image, and applying it would commit snapshots under wrong names.
    """
    if len(layers) != len(diff_ids):
        raise errdefs.FailedPrecondition(
            f"mismatched image rootfs and manifest layers: "
            f"{len(diff_ids)} diff ids, {len(layers)} layers"
        )
    return [Layer(blob, diff_id) for blob, diff_id in zip(layers, diff_ids, strict=True)]


def unpack_key(chain_id: str) -> str:
    """A fresh key for the active snapshot a layer is applied into.

    containerd's form, ``extract-<nanoseconds>-<random> <chain id>``, so two
    clients unpacking the same layer at once never collide on a key, and a
    leftover snapshot says which layer it was for.
    """
    unique = base64.urlsafe_b64encode(os.urandom(3)).decode()
    return f"extract-{time.time_ns() % 1_000_000_000}-{unique} {chain_id}"


def gc_snapshot_label(snapshotter: str) -> str:
    """The config label that keeps ``snapshotter``'s unpacked snapshots alive."""
    return LABEL_GC_SNAPSHOT_PREFIX + snapshotter
