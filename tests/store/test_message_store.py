"""MessageStore details beyond the conformance suite: costs, sync use, corruption detection, read-only."""

from __future__ import annotations

import pytest

from edgehub.errors import StoreError
from edgehub.store.kv import CHECKPOINTS, EXPIRY, MESSAGES, META, QUEUES, StoreCorruptError, WriteBatch
from edgehub.store.memory import MemoryKeyValue, MemoryStore
from edgehub.store.message_store import MessageStore
from edgehub.store.records import RECORD_KEY_BYTES, U64, decode_record_refs, queue_prefix
from edgehub.testing.store_suite import HOUR, MODULE, NOW, UPSTREAM, bodies, item, to


class CountingKeyValue(MemoryKeyValue):
    """Counts rows scanned per table and the sync flag of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.rows_scanned = [0] * 5
        self.syncs: list[bool] = []

    def scan(self, table: int, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        rows = super().scan(table, start, stop, limit)
        self.rows_scanned[table] += len(rows)
        return rows

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        self.syncs.append(sync)
        super().write(batch, sync=sync)


def test_expire_reads_only_the_expired_part_of_the_index() -> None:
    kv = CountingKeyValue()
    store = MessageStore(kv)
    store.append([item(b"later", to(UPSTREAM, NOW + HOUR)) for _ in range(500)])
    store.append([item(b"soon", to(UPSTREAM, NOW + 10)) for _ in range(3)])
    kv.rows_scanned[EXPIRY] = 0
    assert store.expire(NOW + 10) == {UPSTREAM: 3}
    assert kv.rows_scanned[EXPIRY] == 3
    store.expire(NOW + 20)
    assert kv.rows_scanned[EXPIRY] == 3
    assert kv.rows_scanned[MESSAGES] == 0  # bodies are never read to expire them


def test_expire_walks_a_queue_of_solo_entries_only_over_the_expired_head() -> None:
    kv = CountingKeyValue()
    store = MessageStore(kv)
    store.append([item(b"soon", to(UPSTREAM, NOW + 10)) for _ in range(40)])
    store.append([item(b"later", to(UPSTREAM, NOW + HOUR)) for _ in range(2000)])
    kv.rows_scanned[QUEUES] = 0
    assert store.expire(NOW + 10) == {UPSTREAM: 40}
    assert 41 <= kv.rows_scanned[QUEUES] <= 64  # the 40 expired, then one page holding the first live one
    kv.rows_scanned[QUEUES] = 0
    assert store.expire(NOW + 20) == {}
    assert kv.rows_scanned[QUEUES] <= 16  # the walk starts where the last one stopped
    assert kv.rows_scanned[EXPIRY] == 0  # solo entries have no expiry entries
    assert store.message_count() == 2000


def test_only_appends_of_a_sync_store_are_fsynced() -> None:
    kv = CountingKeyValue()
    store = MessageStore(kv, sync=True)
    kv.syncs.clear()
    [message_id] = store.append([item(b"a", to(UPSTREAM, NOW + 10))])
    store.checkpoint(UPSTREAM, message_id)
    store.expire(NOW + 10)
    # A lost checkpoint means a duplicate (allowed), never a lost message.
    assert kv.syncs == [True, False, False]


def test_size_is_the_bytes_of_the_live_records() -> None:
    store = MemoryStore()
    store.append([item(b"x" * n, to(UPSTREAM), to(MODULE, NOW + 10)) for n in (0, 10, 1000)])
    records = store.kv.scan(MESSAGES, b"", b"\xff", 100)
    assert store.size_bytes() == sum(len(value) + RECORD_KEY_BYTES for _, value in records)
    assert store.message_count() == 3


def test_non_empty_store_without_a_format_version_is_corrupt() -> None:
    kv = MemoryKeyValue()
    batch = WriteBatch()
    batch.put(MESSAGES, U64.pack(1), b"orphan")
    kv.write(batch, sync=False)
    with pytest.raises(StoreCorruptError, match="format version missing"):
        MessageStore(kv)


def test_undecodable_entries_are_reported_as_corruption() -> None:
    kv = MemoryKeyValue()
    MessageStore(kv).close()
    batch = WriteBatch()
    batch.put(CHECKPOINTS, b"no separator", U64.pack(0))
    kv.write(batch, sync=False)
    with pytest.raises(StoreCorruptError, match="undecodable"):
        MessageStore(kv)


def test_missing_id_counter_is_corruption() -> None:
    kv = MemoryKeyValue()
    MessageStore(kv).close()
    batch = WriteBatch()
    batch.delete(META, b"next_id")
    kv.write(batch, sync=False)
    with pytest.raises(StoreCorruptError, match="id counter"):
        MessageStore(kv)


def test_read_only_store_writes_nothing_even_when_empty() -> None:
    kv = CountingKeyValue()
    store = MessageStore(kv, read_only=True)
    assert kv.syncs == []
    with pytest.raises(StoreError, match="read-only"):
        store.append([item(b"a", to(UPSTREAM))])
    with pytest.raises(StoreError, match="read-only"):
        store.expire(NOW)


def test_lengths_and_checkpoints_are_kept_per_queue() -> None:
    store = MemoryStore()
    ids = store.append([item(b"a", to(UPSTREAM), to(MODULE)), item(b"b", to(UPSTREAM))])
    store.checkpoint(UPSTREAM, ids[0])
    assert store.queue_lengths() == {UPSTREAM: 1, MODULE: 1}
    assert store.checkpoint_of(UPSTREAM) == ids[0]
    assert store.checkpoint_of(MODULE) == 0
    assert store.next_id == ids[-1] + 1


class MultiGetCountingKeyValue(MemoryKeyValue):
    """Counts the message bodies read from the key-value layer."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies_read = 0

    def multi_get(self, table: int, keys: list[bytes]) -> list[bytes | None]:
        if table == MESSAGES:
            self.bodies_read += len(keys)
        return super().multi_get(table, keys)


def test_recent_messages_are_read_without_a_store_lookup_and_older_ones_from_the_store() -> None:
    kv = MultiGetCountingKeyValue()
    store = MessageStore(kv, recent_messages=2)
    ids = store.append([item(f"m{n}".encode(), to(UPSTREAM, NOW + HOUR)) for n in range(5)])
    read = store.read(UPSTREAM, 0, 10, NOW)
    assert [q.message.body for q in read] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert [q.id for q in read] == ids
    assert kv.bodies_read == 3  # m3 and m4 came from memory
    fresh = MessageStore(MultiGetCountingKeyValue(), recent_messages=0)
    fresh.append([item(b"x", to(UPSTREAM, NOW + HOUR))])
    assert [q.message.body for q in fresh.read(UPSTREAM, 0, 10, NOW)] == [b"x"]


def test_a_recent_message_is_still_expired_and_checkpointed_like_any_other() -> None:
    store = MessageStore(MemoryKeyValue(), recent_messages=100)
    short, long = store.append(
        [item(b"short", to(UPSTREAM, NOW + 10)), item(b"long", to(UPSTREAM, NOW + HOUR))]
    )
    assert [q.message.body for q in store.read(UPSTREAM, 0, 10, NOW + 10)] == [b"long"]
    store.checkpoint(UPSTREAM, long)
    assert store.read(UPSTREAM, 0, 10, NOW) == []
    assert short < long


def test_the_recent_cache_keeps_the_newest_appends_across_batches_and_reclaims_either_kind() -> None:
    kv = MultiGetCountingKeyValue()
    store = MessageStore(kv, recent_messages=3)
    ids = [store.append([item(f"m{n}".encode(), to(UPSTREAM, NOW + HOUR))])[0] for n in range(8)]
    assert [q.message.body for q in store.read(UPSTREAM, ids[4], 10, NOW)] == [b"m5", b"m6", b"m7"]
    assert kv.bodies_read == 0  # the last three appends, each from its own batch, are in memory
    assert [q.message.body for q in store.read(UPSTREAM, 0, 5, NOW)] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert kv.bodies_read == 5  # the oldest ones were evicted first
    store.checkpoint(UPSTREAM, ids[-1])
    assert store.message_count() == 0
    assert store.size_bytes() == 0
    assert kv.scan(MESSAGES, b"", b"\xff", 100) == []
    assert kv.scan(EXPIRY, b"", b"\xff", 100) == []


def test_a_message_leaves_the_recent_cache_once_its_last_ref_is_delivered_either_way() -> None:
    store = MessageStore(MemoryKeyValue(), recent_messages=10)
    ids = store.append([item(bytes(10), to(UPSTREAM, NOW + HOUR)) for _ in range(5)])
    shared = store.append([item(bytes(7), to(UPSTREAM, NOW + HOUR), to(MODULE, NOW + HOUR))])[0]
    assert store.recent_size == (6, 57)
    store.checkpoint(UPSTREAM, ids[2])
    assert store.recent_size == (3, 27)
    store.mark_delivered(UPSTREAM, [ids[4]])
    assert store.recent_size == (2, 17)
    store.checkpoint(UPSTREAM, shared)  # its ref in MODULE still waits: it stays
    assert store.recent_size == (1, 7)
    assert [q.message.body for q in store.read(MODULE, 0, 10, NOW)] == [bytes(7)]
    store.checkpoint(MODULE, shared)
    assert store.recent_size == (0, 0)


def test_the_recent_cache_holds_no_more_bodies_than_its_byte_bound() -> None:
    kv = MultiGetCountingKeyValue()
    store = MessageStore(kv, recent_messages=100, recent_bytes=1000)
    ids = store.append([item(bytes([n]) * 400, to(UPSTREAM, NOW + HOUR)) for n in range(5)])
    assert store.recent_size == (2, 800)
    read = store.read(UPSTREAM, 0, 10, NOW)
    assert [q.id for q in read] == ids
    assert [q.message.body for q in read] == [bytes([n]) * 400 for n in range(5)]
    assert kv.bodies_read == 3  # the three oldest were evicted to keep 1000 bytes
    store.checkpoint(UPSTREAM, ids[-1])
    assert store.recent_size == (0, 0)
    assert store.message_count() == 0


def test_a_read_scans_no_more_queue_rows_than_it_returns_when_nothing_expired() -> None:
    kv = CountingKeyValue()
    store = MessageStore(kv)
    store.append([item(bytes([n]), to(UPSTREAM, NOW + HOUR)) for n in range(200)])
    assert [q.message.body for q in store.read(UPSTREAM, 0, 10, NOW)] == [bytes([n]) for n in range(10)]
    assert kv.rows_scanned[QUEUES] == 10


def test_a_read_past_a_run_of_expired_refs_still_returns_a_full_batch_in_order() -> None:
    store = MessageStore(MemoryKeyValue())
    store.append([item(b"old", to(UPSTREAM, NOW + 10)) for _ in range(150)])
    store.append([item(bytes([n]), to(UPSTREAM, NOW + HOUR)) for n in range(30)])
    assert [q.message.body for q in store.read(UPSTREAM, 0, 10, NOW + 10)] == [bytes([n]) for n in range(10)]
    assert [q.message.body for q in store.read(UPSTREAM, 0, 100, NOW + 10)] == [bytes([n]) for n in range(30)]


def test_items_sharing_one_delivery_object_get_their_own_queue_entries_and_expiry() -> None:
    store = MemoryStore()
    upstream, module = to(UPSTREAM, NOW + 10), to(MODULE, NOW + HOUR)  # shared, as Hub.ingest shares them
    ids = store.append([item(bytes([n]), upstream if n % 3 else module) for n in range(9)])
    assert bodies(store, UPSTREAM) == [bytes([n]) for n in range(9) if n % 3]
    assert bodies(store, MODULE) == [b"\x00", b"\x03", b"\x06"]
    for message_id, n in zip(ids, range(9), strict=True):
        record = store.kv.get(MESSAGES, U64.pack(message_id))
        assert record is not None
        queue, expiry = (UPSTREAM, NOW + 10) if n % 3 else (MODULE, NOW + HOUR)
        assert decode_record_refs(record) == [(queue_prefix(queue), expiry)]
    assert store.expire(NOW + 10) == {UPSTREAM: 6}
    assert store.message_count() == 3
    assert bodies(store, MODULE, NOW + 10) == [b"\x00", b"\x03", b"\x06"]
