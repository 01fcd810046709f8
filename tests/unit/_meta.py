"""Helpers for the metadata store tests: a temp database and a sync runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())
