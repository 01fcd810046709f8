"""Metadata: the namespaced, transactional store over the core stores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pycontainerd import plugin
from pycontainerd.content import Store as ContentBackend
from pycontainerd.metadata.containers import ContainerStore
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.gc import GarbageCollector
from pycontainerd.metadata.images import ImageStore
from pycontainerd.metadata.leases import LeaseManager
from pycontainerd.metadata.namespaces import Namespace, NamespaceStore
from pycontainerd.metadata.snapshots import SnapshotCollectible, SnapshotStore
from pycontainerd.snapshots import Snapshotter

__all__ = [
    "ContainerStore",
    "ContentStore",
    "Database",
    "GarbageCollector",
    "ImageStore",
    "LeaseManager",
    "Metadata",
    "Namespace",
    "NamespaceStore",
    "SnapshotStore",
]


@dataclass(slots=True)
class Metadata:
    """The metadata plugin's instance: the database and its stores."""

    db: Database
    namespaces: NamespaceStore
    containers: ContainerStore = field(init=False)
    images: ImageStore = field(init=False)
    leases: LeaseManager = field(init=False)
    #: The namespaced view of the content store; None when no backend was given.
    content: ContentStore | None = None
    #: Collects what nothing refers to (the GC scheduler plugin drives it).
    gc: GarbageCollector = field(init=False)
    #: The core snapshotters to wrap, by name (plugin id).
    snapshotter_backends: Mapping[str, Snapshotter] = field(default_factory=dict)
    #: The namespaced view of each snapshotter, by name.
    snapshotters: dict[str, SnapshotStore] = field(init=False)

    def __post_init__(self) -> None:
        self.containers = ContainerStore(self.db)
        self.images = ImageStore(self.db)
        self.leases = LeaseManager(self.db)
        self.gc = GarbageCollector(self.db, self.content)
        self.gc.register_collectible(SnapshotCollectible())
        self.snapshotters = {}
        for name, backend in self.snapshotter_backends.items():
            store = SnapshotStore(self.db, name, backend, on_remove=self.gc.mark_snapshotter_dirty)
            self.snapshotters[name] = store
            self.gc.register_snapshotter(name, store.cleanup)
            # A crash can leave half-made (``new-*``) or half-removed (``rm-*``)
            # directories and backend snapshots no row names; the first
            # collection after start-up (the scheduler's, off the start-up
            # path) sweeps them instead of waiting for a snapshot removal, as
            # containerd 1.6 does (checked: it keeps them until then).
            self.gc.mark_snapshotter_dirty(name)

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        content_store: ContentBackend | None = None,
        snapshotters: Mapping[str, Snapshotter] | None = None,
    ) -> Metadata:
        db = Database(root / "meta.db")
        content = ContentStore(db, content_store) if content_store is not None else None
        return cls(
            db=db,
            namespaces=NamespaceStore(db),
            content=content,
            snapshotter_backends=dict(snapshotters or {}),
        )

    def close(self) -> None:
        self.db.close()


def _init(ctx: plugin.InitContext) -> Metadata:
    ctx.root.mkdir(parents=True, exist_ok=True, mode=0o711)
    return Metadata.open(
        ctx.root,
        content_store=ctx.get(plugin.PluginType.CONTENT),
        snapshotters=ctx.plugins.instances(plugin.PluginType.SNAPSHOT),
    )


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.METADATA,
        id="sqlite",
        init=_init,
        requires=(plugin.PluginType.CONTENT, plugin.PluginType.SNAPSHOT),
    )
)
