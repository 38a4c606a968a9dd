"""Hot keys: turning repeated serialization aborts on one row into a short wait.

A (function, key) pair that hit a serialization failure within the last `window_s` seconds
is "hot". Calls on a hot key first wait their turn in an in-process queue (holding no pool
connection), then take a session-level advisory lock on a hash of the pair, in autocommit,
*before* BEGIN (in the same round trip), and release it with COMMIT. Contenders on the same
key then queue instead of aborting one another, and their snapshot is taken only once they
hold the lock (DESIGN §7). Cold keys pay nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class HotKeyStats:
    function: str
    key: str
    conflicts: int = 0
    waits: int = 0
    last_conflict: float = 0.0


def lock_id(function: str, key: str) -> int:
    """A stable signed 64-bit advisory lock id for (function, key)."""
    digest = hashlib.blake2b(f"{function}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class KeyQueue:
    """In-process queues, one per hot (function, key), entered before taking a pool
    connection: calls waiting their turn on a hot key hold no connection while they wait.
    The advisory lock still orders them against other processes."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, function: str, key: str) -> AsyncIterator[bool]:
        """Wait for this key's turn; yields whether another call was ahead (contention)."""
        pair = (function, key)
        entry = self._queues.get(pair)
        if entry is None:
            entry = self._queues[pair] = (asyncio.Lock(), [0])
        entry[1][0] += 1
        contended = entry[1][0] > 1
        try:
            async with entry[0]:
                yield contended
        finally:
            entry[1][0] -= 1
            if entry[1][0] == 0:
                del self._queues[pair]


class HotKeyTracker:
    """Remembers recent conflicts per (function, key); bounded, least recently hot evicted."""

    def __init__(self, window_s: float = 2.0, capacity: int = 10_000) -> None:
        self.window_s = window_s
        self.capacity = capacity
        self._stats: OrderedDict[tuple[str, str], HotKeyStats] = OrderedDict()

    def is_hot(self, function: str, key: str, now: float | None = None) -> bool:
        stats = self._stats.get((function, key))
        if stats is None:
            return False
        return (now or time.monotonic()) - stats.last_conflict < self.window_s

    def record_conflict(self, function: str, key: str) -> None:
        pair = (function, key)
        stats = self._stats.get(pair)
        if stats is None:
            stats = self._stats[pair] = HotKeyStats(function, key)
            if len(self._stats) > self.capacity:
                self._stats.popitem(last=False)
        else:
            self._stats.move_to_end(pair)
        stats.conflicts += 1
        stats.last_conflict = time.monotonic()

    def record_contention(self, function: str, key: str) -> None:
        """A call had to wait for this key: it stays hot. Without this, queuing would stop
        the conflicts that made it hot, it would turn cold after the window, and calls would
        go back to aborting one another."""
        stats = self._stats.get((function, key))
        if stats is not None:
            stats.last_conflict = time.monotonic()

    def record_wait(self, function: str, key: str) -> None:
        stats = self._stats.get((function, key))
        if stats is not None:
            stats.waits += 1

    def top(self, n: int = 20) -> list[dict[str, object]]:
        """The keys with the most conflicts, for `/_runtime/status` and the operator."""
        now = time.monotonic()
        ranked = sorted(self._stats.values(), key=lambda s: s.conflicts, reverse=True)[:n]
        return [
            {
                "function": s.function,
                "key": s.key,
                "conflicts": s.conflicts,
                "lock_waits": s.waits,
                "hot": now - s.last_conflict < self.window_s,
                "seconds_since_conflict": round(now - s.last_conflict, 3),
            }
            for s in ranked
        ]
