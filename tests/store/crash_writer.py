"""A store writer made to be killed: appends through GroupCommitter and reports each id only after
its append returned. Run by test_crash (and, draining newest first, test_crash_newest_first) in a
forkserver child; it never stops on its own.
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
NEWEST: Final = QueueKey("newest")
"""Drained newest first by the writer (read_newest, then mark_delivered), never checkpointed."""
SENT_REPORT: Final = b"sent"
"""Ids a newest-first batch handed to the "endpoint": reported before they are marked delivered."""
MARKED_REPORT: Final = b"marked"
"""Ids whose mark_delivered returned."""
NEWEST_BATCH: Final = 20
NEWEST_DELIVERERS: Final = 2
NEWEST_BACKLOG: Final = 3000
"""Appended before anything is delivered in each run, so the kill lands while a backlog waits."""
NEWEST_ROUND_TRIP: Final = 0.002
"""Seconds a newest-first batch waits for its "confirmation": the deliverers are slower than the producers."""
OLDEST_EVERY: Final = 11
"""Every this many batches a deliverer takes the oldest waiting messages, as the pump's aging does."""


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


def drain_newest_until_killed(
    folder: str, backend: Literal["rocksdb", "sqlite"], sync: bool, out: Connection,
) -> None:
    asyncio.run(_drain_newest(Path(folder), backend, sync, out))


async def _drain_newest(
    folder: Path, backend: Literal["rocksdb", "sqlite"], sync: bool, out: Connection,
) -> None:
    """Producers append to NEWEST (and DELIVERED, short-lived, checkpointed oldest first, so bodies
    with refs in both are reclaimed by either order); deliverers drain NEWEST newest first."""
    store = open_store(folder, backend=backend, sync=sync)
    committer = GroupCommitter(store, sync=sync)
    rng = random.Random()
    start = time.monotonic_ns()
    in_flight: set[int] = set()

    async def produce(producer: int) -> None:
        seq = 0
        while True:
            now = int(time.time() * 1000)
            labels = [f"{start}:{producer}:{seq + n}:" for n in range(rng.randint(1, 3))]
            bodies = [body_of(label, rng.randint(len(label), 3000)) for label in labels]
            items = [
                IngestItem(Message(body), (Delivery(NEWEST, now + 3_600_000), Delivery(DELIVERED, now + 20)))
                for body in bodies
            ]
            ids = await committer.append(items)
            out.send_bytes(b"".join(
                b"%d %s\n" % (message_id, digest(body)) for message_id, body in zip(ids, bodies, strict=True)
            ))
            seq += len(items)

    now = int(time.time() * 1000)
    backlog = [body_of(f"{start}:backlog:{n}:", 200) for n in range(NEWEST_BACKLOG)]
    ids = await committer.append(
        [IngestItem(Message(body), (Delivery(NEWEST, now + 3_600_000),)) for body in backlog],
    )
    out.send_bytes(b"".join(b"%d %s\n" % (i, digest(body)) for i, body in zip(ids, backlog, strict=True)))

    async def deliver_newest() -> None:
        turn = 0
        while True:
            now = int(time.time() * 1000)
            turn += 1
            if turn % OLDEST_EVERY:
                read = store.read_newest(NEWEST, 0, None, 3 * NEWEST_BATCH, now)
                ids = [queued.id for queued in read if queued.id not in in_flight][-NEWEST_BATCH:]
            else:
                read = store.read(NEWEST, 0, 3 * NEWEST_BATCH, now)
                ids = [queued.id for queued in read if queued.id not in in_flight][:NEWEST_BATCH]
            if ids:
                in_flight.update(ids)
                out.send_bytes(SENT_REPORT + b"".join(b" %d" % message_id for message_id in ids) + b"\n")
                await asyncio.sleep(NEWEST_ROUND_TRIP)  # the endpoint's confirmation comes back later
                await committer.call(store.mark_delivered, NEWEST, ids)
                out.send_bytes(MARKED_REPORT + b"".join(b" %d" % message_id for message_id in ids) + b"\n")
                in_flight.difference_update(ids)
            await asyncio.sleep(0)

    async def deliver_oldest() -> None:
        while True:
            now = int(time.time() * 1000)
            read = store.read(DELIVERED, 0, 200, now)
            if read:
                await committer.call(store.checkpoint, DELIVERED, read[rng.randrange(len(read))].id)
            await committer.call(store.expire, now)
            await asyncio.sleep(0)

    await asyncio.gather(
        *(produce(n) for n in range(PRODUCERS)), *(deliver_newest() for _ in range(NEWEST_DELIVERERS)),
        deliver_oldest(),
    )
