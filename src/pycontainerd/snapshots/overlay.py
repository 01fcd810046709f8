"""The overlayfs snapshotter (plugin ``io.containerd.snapshotter.v1.overlayfs``).

Layout, as containerd's: ``<root>/metadata.db`` and, per snapshot,
``<root>/snapshots/<id>/fs`` (its own layer: the overlay upper directory
while active) and ``<root>/snapshots/<id>/work`` (overlay's work directory,
active snapshots only).  A snapshot's parents are never copied: mounts
stack their ``fs`` directories.

Mounts, exactly as containerd 1.6 hands them out:

* no parent: a bind mount of the snapshot's ``fs`` (``rw``/``ro``, ``rbind``);
* a view of one parent: a read-only bind mount of that parent's ``fs``;
* otherwise an ``overlay`` mount with ``index=off`` (when the kernel has the
  parameter), ``userxattr`` (only inside a user namespace),
  ``workdir=``/``upperdir=`` for an active snapshot, and
  ``lowerdir=`` listing the parents nearest first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pycontainerd import plugin
from pycontainerd._tree import remove_tree
from pycontainerd.mount import Mount, mount_all, unmount_all
from pycontainerd.snapshots import Info, Kind
from pycontainerd.snapshots._fs import supports_d_type
from pycontainerd.snapshots._local import LocalSnapshotter, host_platform
from pycontainerd.snapshots.storage import Snapshot

__all__ = ["LABEL_UPPERDIR", "OverlayConfig", "OverlaySnapshotter", "check_supported"]

log = logging.getLogger(__name__)

_INDEX_PARAM = Path("/sys/module/overlay/parameters/index")


@dataclass(slots=True)
class OverlayConfig:
    """``[plugins."io.containerd.snapshotter.v1.overlayfs"]``."""

    #: Where snapshots live; empty means the plugin's directory under the daemon root.
    root_path: str = ""
    #: Show each snapshot's upper directory as the label
    #: ``containerd.io/snapshot/overlay.upperdir`` (for tools that read layers directly).
    upperdir_label: bool = False


def _in_user_namespace() -> bool:
    try:
        text = Path("/proc/self/uid_map").read_text()
    except OSError:
        return False
    fields = text.split()
    return fields[:3] != ["0", "0", "4294967295"]


#: The label that shows a snapshot's upper directory when ``upperdir_label`` is on.
LABEL_UPPERDIR = "containerd.io/snapshot/overlay.upperdir"


class OverlaySnapshotter(LocalSnapshotter):
    """Snapshots as overlayfs layers under ``root``."""

    def __init__(self, root: Path, *, upperdir_label: bool = False) -> None:
        super().__init__(root)
        self.upperdir_label = upperdir_label
        self.index_off = _INDEX_PARAM.exists()
        # As root in the initial namespace trusted.* xattrs work; a user
        # namespace needs overlay's user.* variant.
        self.userxattr = _in_user_namespace()

    def layer_dir(self, sid: str) -> Path:
        return self.snapshot_dir(sid) / "fs"

    def _decorate(self, sid: str, info: Info) -> Info:
        if not self.upperdir_label:
            return info
        labels = {**info.labels, LABEL_UPPERDIR: str(self.layer_dir(sid))}
        return dataclasses.replace(info, labels=labels)

    def work_dir(self, sid: str) -> Path:
        return self.snapshot_dir(sid) / "work"

    def _needs_dir(self, kind: Kind, parent: str) -> bool:
        return True

    def _fill_dir(self, tmp: Path, kind: Kind, snap: Snapshot) -> None:
        fs = tmp / "fs"
        fs.mkdir(mode=0o755)
        os.chmod(fs, 0o755)  # not narrowed by the umask
        if kind == Kind.ACTIVE:
            (tmp / "work").mkdir(mode=0o711)
        if snap.parent_ids:
            # The upper's root shows through as the mount's root: keep the owner
            # the parent gave it.
            st = os.stat(self.layer_dir(snap.parent_ids[0]))
            os.lchown(fs, st.st_uid, st.st_gid)

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        if not snap.parent_ids:
            flag = "ro" if snap.kind == Kind.VIEW else "rw"
            return [Mount("bind", str(self.layer_dir(snap.id)), (flag, "rbind"))]
        options: list[str] = []
        if self.index_off:
            options.append("index=off")
        if self.userxattr:
            options.append("userxattr")
        if snap.kind == Kind.ACTIVE:
            options.append(f"workdir={self.work_dir(snap.id)}")
            options.append(f"upperdir={self.layer_dir(snap.id)}")
        elif len(snap.parent_ids) == 1:
            return [Mount("bind", str(self.layer_dir(snap.parent_ids[0])), ("ro", "rbind"))]
        lowers = ":".join(str(self.layer_dir(p)) for p in snap.parent_ids)
        options.append(f"lowerdir={lowers}")
        return [Mount("overlay", "overlay", tuple(options))]


def check_supported(root: Path) -> None:
    """Mount a tiny overlay under ``root``; raise SkipPlugin if this host cannot."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not supports_d_type(root):
        raise plugin.SkipPlugin(
            f"{root} does not support d_type; overlayfs needs it (an xfs backing "
            "filesystem must be formatted with ftype=1)"
        )
    probe = Path(tempfile.mkdtemp(prefix="overlayfs-check-", dir=root))
    try:
        for name in ("lower1", "lower2", "upper", "work", "merged"):
            (probe / name).mkdir()
        options = (
            f"lowerdir={probe / 'lower2'}:{probe / 'lower1'}",
            f"upperdir={probe / 'upper'}",
            f"workdir={probe / 'work'}",
        )
        try:
            mount_all([Mount("overlay", "overlay", options)], probe / "merged")
        except Exception as exc:
            raise plugin.SkipPlugin(f"overlayfs not supported on {root}: {exc}") from exc
        unmount_all(probe / "merged")
    finally:
        with contextlib.suppress(OSError):
            remove_tree(probe)


def _init(ctx: plugin.InitContext) -> OverlaySnapshotter:
    cfg = ctx.config if isinstance(ctx.config, OverlayConfig) else OverlayConfig()
    root = Path(cfg.root_path) if cfg.root_path else ctx.root
    ctx.platforms.append(host_platform())
    ctx.exports["root"] = str(root)
    check_supported(root)
    return OverlaySnapshotter(root, upperdir_label=cfg.upperdir_label)


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SNAPSHOT,
        id="overlayfs",
        init=_init,
        config=OverlayConfig,
    )
)
