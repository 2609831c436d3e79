"""Time as the hub reads it: wall time for TTLs, monotonic time and sleeps for timers.

Everything that waits or expires takes a Clock so tests run in virtual time
(edgehub.testing.clock.FakeClock); nothing here may block.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (TTL, enqueued time)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (timeouts, backoff)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def now_ms(clock: Clock) -> int:
    """Wall time in integer milliseconds, the unit of the store."""
    return int(clock.time() * 1000)


async def within(clock: Clock, waiter: asyncio.Future[Any], seconds: float) -> bool:
    """Wait for ``waiter`` at most ``seconds`` of ``clock`` time; True when it finished in time.
    A waiter still pending then is cancelled."""
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not waiter.done():
            waiter.cancel()
    return waiter.done() and not waiter.cancelled()
