"""Store microbenchmarks: append with and without group commit, sync off/on, both
backends, drain; raw rocksdict WriteBatch puts of the same sizes as the ceiling.

Prints tables; asserts nothing about speed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from bench.common import Row, print_table, sample_message, timed
from edgehub.message import MessageId
from edgehub.store.base import Delivery, IngestItem, QueueKey, Store
from edgehub.store.group_commit import GroupCommitter
from edgehub.store.open import open_store

Backend = Literal["rocksdb", "sqlite"]
QUEUE = QueueKey("$upstream", 0)
EXPIRY_MS = 2**42  # far future: nothing expires during a run
PRODUCERS = 200


def _item(n: int) -> IngestItem:
    return IngestItem(sample_message(n), (Delivery(QUEUE, EXPIRY_MS),))


class _CountingStore:
    """Wraps a store to count append calls (= write batches) and their sizes."""

    def __init__(self, store: Store) -> None:
        self.inner = store
        self.batches = 0
        self.items = 0

    def append(self, items: Sequence[IngestItem]) -> list[MessageId]:
        self.batches += 1
        self.items += len(items)
        return self.inner.append(items)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _open(folder: Path, backend: Backend, sync: bool) -> Store:
    return open_store(folder, backend=backend, sync=sync, low_memory=False, max_size_bytes=None,
                      recovery="fail")


def _unbatched(folder: Path, backend: Backend, sync: bool, count: int) -> Row:
    store = _open(folder, backend, sync)
    try:
        items = [_item(n) for n in range(count)]

        def loop() -> int:
            for item in items:
                store.append([item])
            return count

        n, seconds = timed(loop)
    finally:
        store.close()
    return Row(f"{backend} sync={'on' if sync else 'off'}: append, 1 msg/batch", n, seconds)


def _group_commit(folder: Path, backend: Backend, sync: bool, count: int) -> Row:
    store = _CountingStore(_open(folder, backend, sync))
    per_producer = count // PRODUCERS

    async def main() -> int:
        committer = GroupCommitter(store, sync=sync)  # type: ignore[arg-type]  # duck-typed wrapper

        async def producer(p: int) -> None:
            for i in range(per_producer):
                await committer.append([_item(p * per_producer + i)])

        await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
        await committer.close()
        return per_producer * PRODUCERS

    try:
        n, seconds = timed(lambda: asyncio.run(main()))
    finally:
        store.inner.close()
    note = f"{store.items / max(store.batches, 1):.0f} msgs/batch"
    mode = "on" if sync else "off"
    return Row(f"{backend} sync={mode}: group commit, {PRODUCERS} producers", n, seconds, note)


def _drain(folder: Path, backend: Backend, count: int) -> Row:
    store = _open(folder, backend, False)
    try:
        for start in range(0, count, 500):
            store.append([_item(n) for n in range(start, min(start + 500, count))])

        def loop() -> int:
            after, done = 0, 0
            while True:
                batch = store.read(QUEUE, after, 500, 0)
                if not batch:
                    return done
                after = batch[-1].id
                store.checkpoint(QUEUE, after)
                done += len(batch)

        n, seconds = timed(loop)
    finally:
        store.close()
    return Row(f"{backend}: drain (read 500 + checkpoint)", n, seconds)


def _record_size(folder: Path) -> int:
    store = _open(folder, "sqlite", False)
    try:
        store.append([_item(0)])
        return store.size_bytes()
    finally:
        store.close()


def _raw_rocksdb(folder: Path, sync: bool, count: int, batch: int, value_size: int) -> Row:
    """The ceiling: the same puts per message (body, queue ref, expiry entry) straight
    into rocksdict column families, in write batches of the group-commit size."""
    from rocksdict import Options, Rdict, WriteBatch, WriteOptions

    options = Options()
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    db = Rdict(str(folder), options)
    families = [db.create_column_family(name, Options()) for name in ("m", "q", "e")]
    handles = [db.get_column_family_handle(name) for name in ("m", "q", "e")]
    write_options = WriteOptions()
    write_options.sync = sync
    body = b"v" * value_size
    ref_key_prefix = b"$upstream\x00\x00\x00\x00\x00"

    def loop() -> int:
        for start in range(0, count, batch):
            wb = WriteBatch()
            for n in range(start, min(start + batch, count)):
                key = n.to_bytes(8, "big")
                wb.put(key, body, handles[0])
                wb.put(ref_key_prefix + key, key + key, handles[1])
                wb.put(key + key, ref_key_prefix, handles[2])
            db.write(wb, write_options)
        return count

    try:
        n, seconds = timed(loop)
    finally:
        del families
        db.close()
    return Row(f"rocksdb sync={'on' if sync else 'off'}: raw WriteBatch ceiling", n, seconds,
               f"batches of {batch}")


def run(quick: bool = False) -> None:
    scale = 0.1 if quick else 1.0
    rocksdb = importlib.util.find_spec("rocksdict") is not None  # no armhf wheel: SQLite only there
    backends: tuple[Backend, ...] = ("rocksdb", "sqlite") if rocksdb else ("sqlite",)
    root = Path(tempfile.mkdtemp(prefix="edgehub-bench-"))
    counter = iter(range(10**6))

    def fresh() -> Path:
        return root / f"s{next(counter)}"

    try:
        value_size = _record_size(fresh())
        for sync in (False, True):
            many = int((100_000 if not sync else 20_000) * scale)
            few = int((20_000 if not sync else 300) * scale)
            gc_rows = [_group_commit(fresh(), backend, sync, many) for backend in backends]
            raw = [_raw_rocksdb(fresh(), sync, many, 200, value_size)] if "rocksdb" in backends else []
            rows = [*raw, *gc_rows] + [_unbatched(fresh(), b, sync, few) for b in backends]
            print_table(f"Store append, 256-byte payloads, sync {'on' if sync else 'off'}"
                        f" (record {value_size} bytes; ratio = to the raw ceiling)", rows,
                        raw[0].scenario if raw else None)
        drains = [_drain(fresh(), b, int(100_000 * scale)) for b in backends]
        print_table("Store drain", drains)
    finally:
        shutil.rmtree(root, ignore_errors=True)
