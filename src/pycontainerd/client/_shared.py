"""What the sync and async clients share: the default address and results.

Kept light (pyctr reads ``DEFAULT_ADDRESS`` for its ``--help``): the
request metadata is built by the client's ``_Call``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_ADDRESS", "ServerInfo", "Version"]

DEFAULT_ADDRESS = "/run/pycontainerd/pycontainerd.sock"


@dataclass(frozen=True, slots=True)
class Version:
    version: str
    revision: str


@dataclass(frozen=True, slots=True)
class ServerInfo:
    uuid: str
