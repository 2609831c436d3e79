"""Reading what a store holds: format and id counter at open, live counts, per-queue stats."""

from __future__ import annotations

import pytest

from edgehub.store.inventory import FIRST_ID, NewerFormatError, count_live, queue_stats, read_meta
from edgehub.store.kv import META, WriteBatch
from edgehub.store.memory import MemoryKeyValue
from edgehub.store.message_store import MessageStore
from edgehub.store.records import FORMAT_IN_ORDER, FORMAT_VERSION, META_FORMAT, U32
from edgehub.testing.store_suite import HOUR, MODULE, NOW, UPSTREAM, item, to


def test_a_new_store_is_marked_with_the_in_order_format_and_starts_at_the_first_id() -> None:
    kv = MemoryKeyValue()
    assert read_meta(kv, "mem", read_only=False) == (FIRST_ID, 0, FORMAT_IN_ORDER)
    assert kv.get(META, META_FORMAT) == U32.pack(FORMAT_IN_ORDER)


def test_a_read_only_open_of_a_new_store_writes_nothing() -> None:
    kv = MemoryKeyValue()
    read_meta(kv, "mem", read_only=True)
    assert kv.get(META, META_FORMAT) is None


def test_a_newer_format_is_refused_naming_both_versions() -> None:
    kv = MemoryKeyValue()
    batch = WriteBatch()
    batch.put(META, META_FORMAT, U32.pack(FORMAT_VERSION + 1))
    kv.write(batch, sync=False)
    with pytest.raises(NewerFormatError, match=f"version {FORMAT_VERSION + 1} is newer"):
        read_meta(kv, "mem", read_only=False)


def test_live_counts_and_queue_stats_agree_with_the_store() -> None:
    kv = MemoryKeyValue()
    store = MessageStore(kv)
    ids = store.append([item(b"a" * 10, to(UPSTREAM), to(MODULE)), item(b"b" * 20, to(UPSTREAM, NOW + HOUR))])
    store.checkpoint(MODULE, ids[0])
    counts = count_live(kv)
    assert (counts.size, counts.count) == (store.size_bytes(), 2)
    assert sorted(counts.lengths.values()) == [2]  # MODULE's only ref was delivered
    stats = queue_stats(kv, UPSTREAM, store._prefix_of(UPSTREAM), 0)
    assert stats.length == 2
    assert stats.bytes == store.size_bytes()
