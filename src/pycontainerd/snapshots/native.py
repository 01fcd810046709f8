"""The native snapshotter (plugin ``io.containerd.snapshotter.v1.native``).

Works on any filesystem: an active snapshot starts as a full copy of its
parent's tree (reflinked where the filesystem can share extents), and every
mount is a plain bind mount (options ``rbind`` then ``rw``/``ro``: containerd
1.6's order, the reverse of its overlay snapshotter's).  Layout, as
containerd's: ``<root>/metadata.db`` and ``<root>/snapshots/<id>`` holding
the snapshot's files directly.  A view of a parent has no directory of its
own: it is a read-only bind mount of the parent's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pycontainerd import plugin
from pycontainerd.mount import Mount
from pycontainerd.snapshots import Kind
from pycontainerd.snapshots._fs import copy_tree
from pycontainerd.snapshots._local import LocalSnapshotter, host_platform
from pycontainerd.snapshots.storage import Snapshot

__all__ = ["NativeConfig", "NativeSnapshotter"]


@dataclass(slots=True)
class NativeConfig:
    """``[plugins."io.containerd.snapshotter.v1.native"]``."""

    #: Where snapshots live; empty means the plugin's directory under the daemon root.
    root_path: str = ""


class NativeSnapshotter(LocalSnapshotter):
    """Snapshots as full directory copies under ``root``."""

    def layer_dir(self, sid: str) -> Path:
        return self.snapshot_dir(sid)

    def _needs_dir(self, kind: Kind, parent: str) -> bool:
        return kind == Kind.ACTIVE or not parent

    def _fill_dir(self, tmp: Path, kind: Kind, snap: Snapshot) -> None:
        if snap.parent_ids:
            copy_tree(self.layer_dir(snap.parent_ids[0]), tmp)
        else:
            os.chmod(tmp, 0o755)

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        flag = "ro" if snap.kind == Kind.VIEW else "rw"
        if not snap.parent_ids or snap.kind == Kind.ACTIVE:
            source = self.snapshot_dir(snap.id)
        else:
            source = self.snapshot_dir(snap.parent_ids[0])
        return [Mount("bind", str(source), ("rbind", flag))]


def _init(ctx: plugin.InitContext) -> NativeSnapshotter:
    cfg = ctx.config if isinstance(ctx.config, NativeConfig) else NativeConfig()
    root = Path(cfg.root_path) if cfg.root_path else ctx.root
    ctx.platforms.append(host_platform())
    return NativeSnapshotter(root)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SNAPSHOT,
        id="native",
        init=_init,
        config=NativeConfig,
    )
)
