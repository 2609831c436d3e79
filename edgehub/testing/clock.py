"""A fake clock for tests: TTL, backoff and timeouts run in virtual time.

Only ``advance`` moves time; nothing here reads the real clock or sleeps for real.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """Implements edgehub.clock.Clock; ``await advance(s)`` wakes sleepers in deadline order."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._epoch = start
        self._now = 0.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._epoch + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many coroutines are sleeping on this clock now."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        live = [d for d, _, f in self._sleepers if not f.done()]
        return min(live) - self._now if live else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper whose deadline
        passes, in order, and letting the loop run after each wake-up."""
        target = self._now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
                await settle()
        self._now = target
        await settle()


async def settle(turns: int = 50) -> None:
    """Let the event loop run ``turns`` times so woken tasks reach their next await."""
    for _ in range(turns):
        await asyncio.sleep(0)
