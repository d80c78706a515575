"""A lock per key, reference-counted: an entry exists only while someone holds or waits for it.

Used for one CSI operation per target path at a time (`rpc`), one write per Secret at a time
(`secret_writer`) and at most N publishes per pod at once (`publisher`, `size=N`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Entry:
    slots: asyncio.Semaphore
    users: int = field(default=0)  # holders and waiters


class KeyedLock(Generic[K]):
    """`async with locks.hold(key)`: at most `size` holders per key (1: mutual exclusion), FIFO."""

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self._size = size
        self._entries: dict[K, _Entry] = {}

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(asyncio.Semaphore(self._size))
        entry.users += 1
        try:
            async with entry.slots:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]

    def __len__(self) -> int:
        """Keys held or waited for."""
        return len(self._entries)
