"""Backlog drain order: time until a live message goes up after an outage left a backlog, fifo vs
newestFirst, on a RocksDB store and a real EndpointPump over a simulated link (fixed round trip).

Prints a table; asserts nothing about speed.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from bench.common import sample_message
from edgehub.clock import SystemClock
from edgehub.endpoints.base import ReachableListeners, SendResult, Unsubscribe
from edgehub.endpoints.pump import EndpointPump
from edgehub.store.base import Delivery, DrainOrder, IngestItem, QueuedMessage, QueueKey, Store
from edgehub.store.open import open_store

QUEUE: Final = QueueKey("$upstream")
EXPIRY_MS: Final = 2**42
BATCH: Final = 100  # MaxUpstreamBatchSize
FAN_OUT: Final = 10  # UpstreamFanOutFactor
ROUND_TRIP: Final = 0.005
"""Seconds from a batch's send to its PUBACKs on the simulated link."""


class _Link:
    """The upstream as the pump sees it: every batch is confirmed one round trip after it was sent."""

    def __init__(self, watched: int) -> None:
        self.watched = watched
        self.arrived: asyncio.Event = asyncio.Event()
        self.confirmed = 0
        self.drained: asyncio.Event = asyncio.Event()
        self.total = 0
        self._listeners = ReachableListeners()

    @property
    def name(self) -> str:
        return QUEUE.endpoint

    @property
    def max_batch_size(self) -> int:
        return BATCH

    async def send(self, messages: Sequence[QueuedMessage]) -> SendResult:
        await asyncio.sleep(ROUND_TRIP)
        if any(queued.id == self.watched for queued in messages):
            self.arrived.set()
        self.confirmed += len(messages)
        if self.confirmed >= self.total:
            self.drained.set()
        return SendResult(len(messages))

    def subscribe_reachable(self, callback: Callable[[], None]) -> Unsubscribe:
        return self._listeners.subscribe(callback)


def _backlog(store: Store, count: int) -> None:
    for start in range(0, count, 500):
        store.append([IngestItem(sample_message(n), (Delivery(QUEUE, EXPIRY_MS),))
                      for n in range(start, min(start + 500, count))])


async def _drain(folder: Path, order: DrainOrder, backlog: int) -> tuple[float, float]:
    """(seconds until the live message was confirmed, seconds until everything was) after the link returns."""
    store = open_store(folder, backend="rocksdb")
    try:
        _backlog(store, backlog)
        [live] = store.append([IngestItem(sample_message(-1), (Delivery(QUEUE, EXPIRY_MS),))])
        link = _Link(live)
        link.total = backlog + 1
        pump = EndpointPump(store, link, SystemClock(), max_in_flight_batches=FAN_OUT, drain_order=order)
        started = time.perf_counter()
        pump.start()  # the outage ends: the backlog and the live message wait
        await link.arrived.wait()
        first_live = time.perf_counter() - started
        await link.drained.wait()
        drained = time.perf_counter() - started
        await pump.stop()
    finally:
        store.close()
    return first_live, drained


def run(quick: bool = False) -> None:
    backlog = 10_000 if quick else 100_000
    root = Path(tempfile.mkdtemp(prefix="edgehub-bench-"))
    try:
        rows = [(order, *asyncio.run(_drain(root / order.value, order, backlog))) for order in DrainOrder]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n## Drain order after an outage: {backlog:,} backlog + 1 live message, rocksdb, "
          f"batches of {BATCH}, {FAN_OUT} in flight, {ROUND_TRIP * 1000:.0f} ms round trip\n")
    print(f"| {'drainOrder':<12} | {'first live message (s)':>22} | {'whole drain (s)':>15} | {'msg/s':>8}")
    print(f"|{'-' * 14}|{'-' * 24}|{'-' * 17}|{'-' * 9}")
    for order, first_live, drained in rows:
        rate = (backlog + 1) / drained
        print(f"| {order.value:<12} | {first_live:>22.3f} | {drained:>15.2f} | {rate:>8,.0f}")


if __name__ == "__main__":
    run()
