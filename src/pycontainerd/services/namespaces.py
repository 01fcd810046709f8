"""The local namespaces service (containerd's ``namespaces-service``).

Namespaces in metadata, listed through the filter language, and the
``/namespaces/*`` events their changes publish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pycontainerd import errdefs, filters, namespaces, plugin
from pycontainerd.api.events import namespace_pb2 as events_pb
from pycontainerd.events import Exchange
from pycontainerd.metadata import Metadata
from pycontainerd.metadata.namespaces import Namespace

__all__ = ["NamespacesService"]

ID = "namespaces-service"


def _event_namespace() -> str:
    """Namespace events go out in the caller's namespace, else ``default``."""
    return namespaces.current() or namespaces.DEFAULT


def _adapt(ns: Namespace) -> filters.FieldFunc:
    return filters.adapt_mapping({"name": ns.name, "labels": dict(ns.labels)})


class NamespacesService:
    def __init__(self, metadata: Metadata, exchange: Exchange) -> None:
        self._store = metadata.namespaces
        self._events = exchange

    def get(self, name: str) -> Namespace:
        """The namespace, or one with no labels when it does not exist: as
        containerd answers (Docker Engine reads its namespace this way at
        start-up, before anything created it)."""
        try:
            return self._store.get(name)
        except errdefs.NotFound:
            return Namespace(name, {})

    async def list(self, *filter_texts: str) -> Sequence[Namespace]:
        flt = await filters.parse_async([f for f in filter_texts if f])
        return await filters.select(flt, self._store.list(), _adapt)

    async def create(self, name: str, labels: Mapping[str, str]) -> Namespace:
        ns = await self._store.create(name, dict(labels))
        await self._events.publish(
            "/namespaces/create",
            events_pb.NamespaceCreate(name=ns.name, labels=dict(ns.labels)),
            namespace=_event_namespace(),
        )
        return ns

    async def update(
        self, name: str, labels: Mapping[str, str], paths: Sequence[str] | None
    ) -> Namespace:
        """Set the labels ``paths`` name (``labels.KEY``, ``labels``), or all when
        None; a namespace that does not exist is created, as by containerd."""
        ns = await self._store.update_labels(
            name, dict(labels), None if paths is None else list(paths)
        )
        await self._events.publish(
            "/namespaces/update",
            events_pb.NamespaceUpdate(name=ns.name, labels=dict(ns.labels)),
            namespace=_event_namespace(),
        )
        return ns

    async def delete(self, name: str) -> None:
        await self._store.delete(name)
        # containerd publishes the delete in the deleted namespace itself, so a
        # subscriber filtering on namespace==NAME sees its namespace go away.
        await self._events.publish(
            "/namespaces/delete", events_pb.NamespaceDelete(name=name), namespace=name
        )


plugin.register(
    plugin.Registration(
        type=plugin.PluginType.SERVICE,
        id=ID,
        init=lambda ctx: NamespacesService(ctx.get(plugin.PluginType.METADATA), ctx.events),
        requires=(plugin.PluginType.METADATA,),
    )
)
