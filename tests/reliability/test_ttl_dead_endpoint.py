"""TTL with a dead endpoint (invariant 5): a queue nobody ever drains stays within its TTL window.

Virtual time: messages arrive at a steady rate for many TTLs and the cleanup runs every
MessageCleanupIntervalSecs, as Hub's cleanup loop does; the store never holds more than what
arrived in one TTL plus one cleanup interval, and its files stop growing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgehub.message import Message
from edgehub.store.base import Delivery, IngestItem, QueueKey
from edgehub.store.open import open_store

DEAD = QueueKey("/modules/dead/inputs/in1")
TTL_MS = 10_000
CLEANUP_MS = 5_000
RATE_PER_SECOND = 200
BODY = b"t" * 500


@pytest.mark.parametrize("backend", ["rocksdb", "sqlite"])
def test_store_of_a_dead_endpoint_does_not_grow_past_its_ttl_window(tmp_path: Path, backend: str) -> None:
    if backend == "rocksdb":
        pytest.importorskip("rocksdict")
    store = open_store(tmp_path / "store", backend=backend)  # type: ignore[arg-type]
    start = 1_700_000_000_000
    window = (TTL_MS + CLEANUP_MS) // 1000 * RATE_PER_SECOND
    peak = 0
    disk: list[int] = []
    try:
        for second in range(120):  # twelve TTLs
            now = start + second * 1000
            store.append([IngestItem(Message(BODY), (Delivery(DEAD, now + TTL_MS),))
                          for _ in range(RATE_PER_SECOND)])
            if second * 1000 % CLEANUP_MS == 0:
                store.expire(now)
                disk.append(store.disk_bytes())
            peak = max(peak, store.message_count())
            assert store.queue_lengths()[DEAD] == store.message_count()
        assert peak <= window
        assert store.read(DEAD, -1, 1, start + 120_000)  # what is left is within its TTL
        store.expire(start + 200_000)
        assert store.message_count() == 0
        assert store.size_bytes() == 0
        assert store.queue_lengths()[DEAD] == 0
    finally:
        store.close()
    # Files: the second half of the run needs no more room than the first (compaction reclaims).
    half = len(disk) // 2
    assert max(disk[half:]) <= 2 * max(disk[:half]) + (8 << 20)
    reopened = open_store(tmp_path / "store", backend=backend)  # type: ignore[arg-type]
    try:
        assert reopened.message_count() == 0
    finally:
        reopened.close()
