"""A store writer for the power-cut test: acks (prints) each id only after its append returned.

``python -m tests.reliability.power_writer FOLDER BACKEND SYNC`` runs until killed, under the
LD_PRELOAD of powercut.c; each printed line is one acknowledged message id.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Final, Literal, cast

from edgehub.message import Message
from edgehub.store.base import Delivery, IngestItem, QueueKey
from edgehub.store.group_commit import GroupCommitter
from edgehub.store.open import open_store

QUEUE: Final = QueueKey("kept")
PRODUCERS: Final = 4


def body_of(message_id_hint: int) -> bytes:
    return b"%012d" % message_id_hint * 20


async def write(folder: Path, backend: Literal["rocksdb", "sqlite"], sync: bool) -> None:
    store = open_store(folder, backend=backend, sync=sync)
    committer = GroupCommitter(store, sync=sync)

    async def produce(producer: int) -> None:
        seq = 0
        while True:
            now = int(time.time() * 1000)
            delivery = (Delivery(QUEUE, now + 3_600_000),)
            items = [IngestItem(Message(body_of(producer * 10**9 + seq + n)), delivery)
                     for n in range(1 + seq % 3)]
            ids = await committer.append(items)
            seq += len(items)
            sys.stdout.write("".join(f"{message_id}\n" for message_id in ids))  # the ack
            sys.stdout.flush()

    await asyncio.gather(*(produce(p) for p in range(PRODUCERS)))


if __name__ == "__main__":
    backend = cast("Literal['rocksdb', 'sqlite']", sys.argv[2])
    asyncio.run(write(Path(sys.argv[1]), backend, sys.argv[3] == "1"))
