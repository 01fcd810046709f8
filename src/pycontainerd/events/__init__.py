"""Events: what happened in the daemon, published on topics per namespace."""

from pycontainerd.events.exchange import Envelope, Exchange, validate_topic

__all__ = ["Envelope", "Exchange", "validate_topic"]
