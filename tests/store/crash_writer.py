"""A store writer made to be killed: appends through GroupCommitter and reports each id only after
its append returned. Run by test_crash in a forkserver child; it never stops on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final, Literal

from edgehub.message import Message
from edgehub.store.base import Delivery, IngestItem, QueueKey
from edgehub.store.group_commit import GroupCommitter
from edgehub.store.open import open_store

KEPT: Final = QueueKey("kept")
"""Never checkpointed by the writer: every reported id must still be in it after the crash."""
DELIVERED: Final = QueueKey("delivered", 0)
"""Checkpointed and expired by the writer as it goes, so reclaim also runs when the kill lands."""
PRODUCERS: Final = 8
TWIN_KEY: Final = "edge/crash"
"""Rewritten by the writer with a growing counter; the counter is reported after each write."""
TWIN_REPORT: Final = b"twin"


def body_of(label: str, size: int) -> bytes:
    return (label.encode() * (size // max(len(label), 1) + 1))[:size]


def digest(body: bytes) -> bytes:
    """What the writer reports of a body: short, so one report is one atomic pipe write."""
    return hashlib.blake2b(body, digest_size=8).hexdigest().encode() + b":%d" % len(body)


def write_until_killed(
    folder: str, backend: Literal["rocksdb", "sqlite"], sync: bool, out: Connection,
) -> None:
    asyncio.run(_write(Path(folder), backend, sync, out))


async def _write(folder: Path, backend: Literal["rocksdb", "sqlite"], sync: bool, out: Connection) -> None:
    store = open_store(folder, backend=backend, sync=sync)
    committer = GroupCommitter(store, sync=sync)
    rng = random.Random()
    start = time.monotonic_ns()

    async def produce(producer: int) -> None:
        seq = 0
        while True:
            now = int(time.time() * 1000)
            labels = [f"{start}:{producer}:{seq + n}:" for n in range(rng.randint(1, 3))]
            bodies = [body_of(label, rng.randint(len(label), 3000)) for label in labels]
            items = [
                IngestItem(Message(body), (Delivery(KEPT, now + 3_600_000), Delivery(DELIVERED, now + 20)))
                for body in bodies
            ]
            ids = await committer.append(items)
            # Only now, after the write batch returned, is the message acked.
            out.send_bytes(b"".join(
                b"%d %s\n" % (message_id, digest(body)) for message_id, body in zip(ids, bodies, strict=True)
            ))
            seq += len(items)

    async def deliver() -> None:
        while True:
            now = int(time.time() * 1000)
            read = store.read(DELIVERED, 0, 200, now)
            if read:
                await committer.call(store.checkpoint, DELIVERED, read[rng.randrange(len(read))].id)
            await committer.call(store.expire, now)
            await asyncio.sleep(0)

    async def write_twin() -> None:
        found = store.get_twin(TWIN_KEY)
        count = int(found) if found is not None else 0
        while True:
            count += 1
            await committer.call(store.put_twin, TWIN_KEY, b"%d" % count)
            out.send_bytes(b"%s %d\n" % (TWIN_REPORT, count))  # acked only after the write returned
            await asyncio.sleep(0)

    await asyncio.gather(*(produce(n) for n in range(PRODUCERS)), deliver(), write_twin())
