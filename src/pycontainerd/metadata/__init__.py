"""Metadata: the namespaced, transactional store over the core stores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pycontainerd import plugin
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.namespaces import Namespace, NamespaceStore

__all__ = ["Database", "Metadata", "Namespace", "NamespaceStore"]


@dataclass(slots=True)
class Metadata:
    """The metadata plugin's instance: the database and its stores."""

    db: Database
    namespaces: NamespaceStore

    @classmethod
    def open(cls, root: Path) -> Metadata:
        db = Database(root / "meta.db")
        return cls(db=db, namespaces=NamespaceStore(db))

    def close(self) -> None:
        self.db.close()


def _init(ctx: plugin.InitContext) -> Metadata:
    ctx.root.mkdir(parents=True, exist_ok=True, mode=0o711)
    return Metadata.open(ctx.root)


plugin.register(plugin.Registration(type=plugin.PluginType.METADATA, id="sqlite", init=_init))
