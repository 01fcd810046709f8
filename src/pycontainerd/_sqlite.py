"""SQLite as every store of ours opens it, and how common values are spelled.

The metadata database and each snapshotter's metastore are separate files
with the same needs: WAL (readers never wait for the writer), synchronous
FULL (a committed write survives power loss), foreign keys, a busy timeout;
times as integer nanoseconds, string maps as sorted JSON.  Kept at the
package top level because the snapshotters sit below metadata.

Every database file is the daemon's alone (0600): container records carry
specs, and a spec's environment often carries secrets.  SQLite gives the
``-wal`` and ``-shm`` files the mode of the database they belong to.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from pycontainerd.times import EPOCH

__all__ = ["EMPTY_MAP", "connect", "dump_map", "load_map", "to_datetime"]

EMPTY_MAP = "{}"


#: The mode of every database file and of its WAL and shared-memory files.
FILE_MODE = 0o600


def _owner_only(path: Path) -> None:
    """Create ``path`` 0600 if it is new, and take group and other access
    from it and its companions if an older version left them readable."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    for name, create in ((path, os.O_CREAT), (Path(f"{path}-wal"), 0), (Path(f"{path}-shm"), 0)):
        try:
            fd = os.open(name, flags | create, FILE_MODE)
        except FileNotFoundError:
            continue
        try:
            os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (callers BEGIN/COMMIT themselves)."""
    _owner_only(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def to_datetime(ns: int) -> dt.datetime:
    """Integer nanoseconds since the epoch as an aware UTC datetime (microseconds)."""
    return EPOCH + dt.timedelta(microseconds=ns // 1000)


def dump_map(m: Mapping[str, str] | None) -> str:
    """A string map as JSON, keys sorted so equal maps store equal text."""
    return json.dumps(dict(m), sort_keys=True) if m else EMPTY_MAP


def load_map(text: str) -> dict[str, str]:
    if text == EMPTY_MAP:
        return {}
    result: dict[str, str] = json.loads(text)
    return result
