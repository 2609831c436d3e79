"""MemoryStore against the store conformance suite (reopen = a new store on the same tables)."""

from __future__ import annotations

from pathlib import Path

from edgehub.store.base import Delivery, IngestItem, QueueKey
from edgehub.store.memory import MemoryKeyValue, MemoryStore
from edgehub.store.message_store import MessageStore
from edgehub.testing.store_model import stateful_store_test
from edgehub.testing.store_suite import NOW, StoreConformance, item, memory_opener

_open_memory = memory_opener()


class TestMemoryStore(StoreConformance):
    def open_at(self, folder: Path, max_size_bytes: int | None) -> MessageStore:
        return _open_memory(folder, max_size_bytes)


TestMemoryStoreModel = stateful_store_test(memory_opener(), max_examples=60)


def test_memory_store_opens_empty_without_arguments() -> None:
    store = MemoryStore()
    assert store.queues() == []
    assert store.size_bytes() == 0
    assert store.disk_bytes() == 0


def test_memory_store_counts_its_write_batches() -> None:
    kv = MemoryKeyValue()
    store = MemoryStore(kv=kv)
    writes = kv.writes
    queue = QueueKey("q")
    store.append([item(b"a", Delivery(queue, NOW + 10)), item(b"b", Delivery(queue, NOW + 10))])
    store.append([IngestItem(item(b"c").message, ())])
    assert kv.writes == writes + 1
