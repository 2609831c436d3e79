"""The store conformance suite: one set of tests every backend must pass (trio-style;
docs/architecture.md §5).

Subclass StoreConformance as ``Test<Backend>Store`` (and build ``store_model.stateful_store_test``);
nothing here picks a backend or touches files outside the given folder.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Final

import pytest

from edgehub.errors import StoreError, StoreFullError, StoreOpenError
from edgehub.message import Message, MessageId
from edgehub.store import expiry
from edgehub.store.base import Delivery, IngestItem, QueueKey
from edgehub.store.kv import EXPIRY, META, WriteBatch
from edgehub.store.memory import MemoryKeyValue, MemoryStore
from edgehub.store.message_store import MessageStore
from edgehub.store.records import (
    FORMAT_IN_ORDER,
    FORMAT_SOLO,
    FORMAT_SPARSE,
    FORMAT_VERSION,
    META_FORMAT,
    U32,
)

StoreOpener = Callable[[Path, "int | None"], MessageStore]
"""Opens the store kept in a folder (creating it); called again on the same folder it reopens it."""

def memory_opener() -> StoreOpener:
    """An opener for MemoryStore whose data outlives ``close`` per folder, so reopen is real."""
    kvs: dict[Path, MemoryKeyValue] = {}

    def open_memory(folder: Path, max_size_bytes: int | None) -> MessageStore:
        return MemoryStore(max_size_bytes=max_size_bytes, kv=kvs.setdefault(folder, MemoryKeyValue()))

    return open_memory


NOW: Final = 1_700_000_000_000
HOUR: Final = 3_600_000
UPSTREAM: Final = QueueKey("$upstream")
MODULE: Final = QueueKey("/modules/filter/inputs/in", 1)
MODULE_URGENT: Final = QueueKey("/modules/filter/inputs/in", 0)


def item(body: bytes, *deliveries: Delivery, properties: dict[str, str] | None = None) -> IngestItem:
    return IngestItem(Message(body, properties or {}, {"connectionDeviceId": "d1"}, NOW), deliveries)


def to(queue: QueueKey, expiry_ms: int = NOW + HOUR) -> Delivery:
    return Delivery(queue, expiry_ms)


def bodies(store: MessageStore, queue: QueueKey, now_ms: int = NOW, after: MessageId = 0) -> list[bytes]:
    return [queued.message.body for queued in store.read(queue, after, 1000, now_ms)]


class StoreConformance:
    """Behaviour every Store backend shares. Subclasses implement ``open_at``.

    ``reopens`` is False for a backend whose data does not outlive ``close``.
    """

    reopens: ClassVar[bool] = True

    def open_at(self, folder: Path, max_size_bytes: int | None) -> MessageStore:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _stores(self, tmp_path: Path) -> Iterator[None]:
        self.folder = tmp_path / "store"
        self.opened: list[MessageStore] = []
        yield
        for store in self.opened:
            store.close()

    def open(self, max_size_bytes: int | None = None) -> MessageStore:
        store = self.open_at(self.folder, max_size_bytes)
        self.opened.append(store)
        return store

    def reopen(self, store: MessageStore, max_size_bytes: int | None = None) -> MessageStore:
        store.close()
        return self.open(max_size_bytes)

    # -- order, queues, priorities ---------------------------------------------------

    def test_ids_increase_and_each_queue_reads_in_ingest_order(self) -> None:
        store = self.open()
        first = store.append([item(b"a", to(UPSTREAM)), item(b"b", to(UPSTREAM))])
        second = store.append([item(b"c", to(UPSTREAM))])
        ids = first + second
        assert ids == sorted(ids)
        assert len(set(ids)) == 3
        assert [queued.id for queued in store.read(UPSTREAM, 0, 10, NOW)] == ids
        assert bodies(store, UPSTREAM) == [b"a", b"b", b"c"]

    def test_item_without_deliveries_is_not_stored(self) -> None:
        store = self.open()
        ids = store.append([item(b"lost"), item(b"kept", to(UPSTREAM))])
        assert ids[0] == -1
        assert ids[1] > 0
        assert store.message_count() == 1
        assert bodies(store, UPSTREAM) == [b"kept"]

    def test_message_for_several_queues_is_stored_once_and_read_from_each(self) -> None:
        store = self.open()
        [message_id] = store.append([item(b"both", to(UPSTREAM), to(MODULE))])
        assert store.message_count() == 1
        assert [q.id for q in store.read(UPSTREAM, 0, 10, NOW)] == [message_id]
        assert [q.id for q in store.read(MODULE, 0, 10, NOW)] == [message_id]
        assert store.queue_lengths() == {UPSTREAM: 1, MODULE: 1}

    def test_priorities_of_one_endpoint_are_separate_queues(self) -> None:
        store = self.open()
        store.append([item(b"slow", to(MODULE)), item(b"fast", to(MODULE_URGENT))])
        assert bodies(store, MODULE_URGENT) == [b"fast"]
        assert bodies(store, MODULE) == [b"slow"]
        assert store.queues() == sorted([MODULE, MODULE_URGENT])

    def test_read_honours_after_and_limit(self) -> None:
        store = self.open()
        ids = store.append([item(bytes([n]), to(UPSTREAM)) for n in range(10)])
        assert [q.id for q in store.read(UPSTREAM, ids[3], 4, NOW)] == ids[4:8]
        assert store.read(UPSTREAM, ids[-1], 10, NOW) == []
        assert store.read(QueueKey("never-used"), 0, 10, NOW) == []

    def test_message_round_trips_properties_and_body(self) -> None:
        store = self.open()
        message = Message(
            bytes(range(256)) * 300,
            {"temp": "21.5", "ünï": "çødé", "empty": ""},
            {"connectionDeviceId": "d1", "connectionModuleId": "m", "contentType": "application/json"},
            NOW - 5,
        )
        store.append([IngestItem(message, (to(UPSTREAM),)), IngestItem(Message(b""), (to(UPSTREAM),))])
        read = store.read(UPSTREAM, 0, 10, NOW)
        assert read[0].message == message
        assert read[0].queue == UPSTREAM
        assert read[0].expiry_ms == NOW + HOUR
        assert read[1].message.body == b""
        assert not read[1].message.properties

    def test_a_queue_listed_twice_in_one_item_gets_one_ref(self) -> None:
        store = self.open()
        store.append([item(b"once", to(UPSTREAM), to(UPSTREAM, NOW + 2 * HOUR))])
        assert bodies(store, UPSTREAM) == [b"once"]
        assert store.queue_lengths() == {UPSTREAM: 1}

    def test_invalid_queue_names_are_refused(self) -> None:
        store = self.open()
        with pytest.raises(ValueError, match="NUL"):
            store.append([item(b"x", to(QueueKey("a\x00b")))])
        with pytest.raises(ValueError, match="priority"):
            store.append([item(b"x", to(QueueKey("a", -1)))])
        assert store.message_count() == 0

    # -- checkpoint and reclaim ----------------------------------------------------

    def test_checkpoint_hides_delivered_messages(self) -> None:
        store = self.open()
        ids = store.append([item(bytes([n]), to(UPSTREAM)) for n in range(5)])
        store.checkpoint(UPSTREAM, ids[2])
        assert [q.id for q in store.read(UPSTREAM, 0, 10, NOW)] == ids[3:]
        assert store.queue_lengths()[UPSTREAM] == 2
        assert store.checkpoint_of(UPSTREAM) == ids[2]
        store.checkpoint(UPSTREAM, ids[1])  # going back is a no-op
        assert store.checkpoint_of(UPSTREAM) == ids[2]

    def test_body_is_reclaimed_only_when_every_queue_delivered_it(self) -> None:
        store = self.open()
        [message_id] = store.append([item(b"both", to(UPSTREAM), to(MODULE))])
        size = store.size_bytes()
        assert size > 0
        store.checkpoint(UPSTREAM, message_id)
        assert store.size_bytes() == size
        assert bodies(store, MODULE) == [b"both"]
        store.checkpoint(MODULE, message_id)
        assert store.size_bytes() == 0
        assert store.message_count() == 0
        assert store.queue_lengths() == {UPSTREAM: 0, MODULE: 0}

    def test_checkpoint_beyond_the_last_id_does_not_swallow_later_messages(self) -> None:
        store = self.open()
        [first] = store.append([item(b"a", to(UPSTREAM))])
        store.checkpoint(UPSTREAM, first + 1000)
        store.append([item(b"b", to(UPSTREAM))])
        assert bodies(store, UPSTREAM) == [b"b"]

    def test_checkpoint_of_a_new_queue_registers_it(self) -> None:
        store = self.open()
        store.append([item(b"a", to(UPSTREAM))])
        store.checkpoint(MODULE, 1)
        assert MODULE in store.queues()

    # -- newest first (drainOrder newestFirst) ---------------------------------------

    def ids_of(self, store: MessageStore, queue: QueueKey, now_ms: int = NOW) -> list[MessageId]:
        return [queued.id for queued in store.read(queue, 0, 1000, now_ms)]

    def test_read_newest_gives_the_newest_waiting_in_id_order(self) -> None:
        store = self.open()
        ids = store.append([item(bytes([n]), to(UPSTREAM)) for n in range(10)])
        assert [q.id for q in store.read_newest(UPSTREAM, 0, None, 3, NOW)] == ids[7:]
        assert [q.id for q in store.read_newest(UPSTREAM, 0, ids[7], 3, NOW)] == ids[4:7]
        assert [q.id for q in store.read_newest(UPSTREAM, ids[5], ids[7], 3, NOW)] == [ids[6]]
        assert [q.message.body for q in store.read_newest(UPSTREAM, 0, ids[2], 5, NOW)] == [b"\x00", b"\x01"]
        assert store.read_newest(UPSTREAM, ids[5], ids[6], 3, NOW) == []
        assert store.read_newest(MODULE, 0, None, 3, NOW) == []

    def test_read_newest_skips_expired_delivered_and_checkpointed_messages(self) -> None:
        store = self.open()
        short = [item(b"short", to(UPSTREAM, NOW + 10)) for _ in range(200)]
        ids = store.append([item(b"old", to(UPSTREAM)), *short, item(b"x", to(UPSTREAM)),
                            item(b"y", to(UPSTREAM))])
        assert [q.message.body for q in store.read_newest(UPSTREAM, 0, None, 2, NOW + 10)] == [b"x", b"y"]
        store.mark_delivered(UPSTREAM, [ids[-1]])
        assert [q.message.body for q in store.read_newest(UPSTREAM, 0, None, 2, NOW + 10)] == [b"old", b"x"]
        store.checkpoint(UPSTREAM, ids[0])
        assert [q.message.body for q in store.read_newest(UPSTREAM, 0, None, 5, NOW + 10)] == [b"x"]

    def test_mark_delivered_removes_exactly_those_messages(self) -> None:
        store = self.open()
        ids = store.append([item(bytes([n]), to(UPSTREAM)) for n in range(10)])
        store.mark_delivered(UPSTREAM, ids[7:])
        assert self.ids_of(store, UPSTREAM) == ids[:7]
        assert store.queue_lengths()[UPSTREAM] == 7
        assert store.message_count() == 7
        assert store.checkpoint_of(UPSTREAM) == 0
        assert store.delivered_above_of(UPSTREAM) == ids[9]
        assert store.format_version == FORMAT_VERSION
        store.mark_delivered(UPSTREAM, [ids[3], ids[8], ids[9] + 50, -1])  # delivered or unknown: ignored
        assert self.ids_of(store, UPSTREAM) == ids[:3] + ids[4:7]
        assert store.queue_lengths()[UPSTREAM] == 6

    def test_mark_delivered_moves_the_checkpoint_over_a_delivered_prefix(self) -> None:
        store = self.open()
        ids = store.append([item(bytes([n]), to(UPSTREAM)) for n in range(10)])
        store.mark_delivered(UPSTREAM, ids[6:])
        store.mark_delivered(UPSTREAM, ids[:3])
        assert store.checkpoint_of(UPSTREAM) == ids[2]
        assert store.delivered_above_of(UPSTREAM) == ids[9]
        store.mark_delivered(UPSTREAM, ids[3:6])
        assert store.checkpoint_of(UPSTREAM) == ids[9]
        assert store.delivered_above_of(UPSTREAM) == 0
        assert (store.queue_lengths()[UPSTREAM], store.message_count(), store.size_bytes()) == (0, 0, 0)
        [later] = store.append([item(b"later", to(UPSTREAM))])
        assert self.ids_of(store, UPSTREAM) == [later]

    def test_oldest_first_checkpoint_passes_messages_delivered_newest_first(self) -> None:
        store = self.open()
        ids = store.append([item(bytes([n]), to(UPSTREAM)) for n in range(6)])
        store.mark_delivered(UPSTREAM, [ids[4]])
        store.checkpoint(UPSTREAM, ids[2])
        assert store.delivered_above_of(UPSTREAM) == ids[4]
        store.checkpoint(UPSTREAM, ids[4])
        assert store.delivered_above_of(UPSTREAM) == 0
        assert self.ids_of(store, UPSTREAM) == [ids[5]]
        assert (store.queue_lengths()[UPSTREAM], store.message_count()) == (1, 1)

    def test_body_reclaimed_when_one_queue_delivered_it_newest_first_and_the_other_oldest_first(self) -> None:
        store = self.open()
        ids = store.append([item(b"older", to(UPSTREAM)), item(b"both", to(UPSTREAM), to(MODULE)),
                            item(b"again", to(UPSTREAM), to(MODULE))])
        store.mark_delivered(UPSTREAM, ids[1:])
        assert store.message_count() == 3
        store.checkpoint(MODULE, ids[1])
        assert store.message_count() == 2
        store.mark_delivered(MODULE, [ids[2]])
        assert store.message_count() == 1
        assert bodies(store, UPSTREAM) == [b"older"]
        assert store.queue_lengths() == {UPSTREAM: 1, MODULE: 0}

    def test_expire_does_not_count_a_message_delivered_newest_first_as_dropped(self) -> None:
        store = self.open()
        soon = NOW + 10
        ids = store.append([item(b"waits", to(UPSTREAM)), item(b"sent", to(UPSTREAM, soon), to(MODULE, soon)),
                            item(b"dies", to(UPSTREAM, soon))])
        store.mark_delivered(UPSTREAM, [ids[1]])
        assert store.expire(NOW + 10) == {UPSTREAM: 1, MODULE: 1}
        assert store.queue_lengths() == {UPSTREAM: 1, MODULE: 0}
        assert store.message_count() == 1
        assert bodies(store, UPSTREAM, NOW + 10) == [b"waits"]

    def test_newest_first_drain_delivers_every_message_once_with_live_traffic_first(self) -> None:
        """A backlog drained newest first while new messages keep arriving: every batch holds
        the newest waiting messages, and in the end each message was delivered exactly once."""
        store = self.open()
        backlog = store.append([item(b"backlog", to(UPSTREAM)) for _ in range(50)])
        delivered: list[MessageId] = []
        for _ in range(30):
            [live] = store.append([item(b"live", to(UPSTREAM))])
            batch = [q.id for q in store.read_newest(UPSTREAM, 0, None, 4, NOW)]
            assert batch[-1] == live  # the live message goes out in the first batch after it arrived
            store.mark_delivered(UPSTREAM, batch)
            delivered.extend(batch)
        while batch := [q.id for q in store.read_newest(UPSTREAM, 0, None, 4, NOW)]:
            store.mark_delivered(UPSTREAM, batch)
            delivered.extend(batch)
        assert sorted(delivered) == sorted(set(delivered))
        assert set(delivered) == set(backlog) | set(range(backlog[-1] + 1, store.next_id))
        assert (store.queue_lengths()[UPSTREAM], store.message_count(), store.size_bytes()) == (0, 0, 0)
        assert store.checkpoint_of(UPSTREAM) == store.next_id - 1

    def test_a_store_drained_oldest_first_keeps_the_in_order_format(self) -> None:
        store = self.open()
        # Two queues per message: no solo entry, so nothing an older hub could not read.
        ids = store.append([item(b"a", to(UPSTREAM), to(MODULE)), item(b"b", to(UPSTREAM), to(MODULE))])
        store.checkpoint(UPSTREAM, ids[0])
        store.mark_delivered(UPSTREAM, [ids[1]])  # at the head of the queue: in order
        assert store.format_version == FORMAT_IN_ORDER
        assert store.checkpoint_of(UPSTREAM) == ids[1]
        assert store.delivered_above_of(UPSTREAM) == 0

    def test_deliveries_out_of_order_survive_reopen(self) -> None:
        if not self.reopens:
            pytest.skip("this backend keeps nothing across close")
        store = self.open()
        ids = store.append([item(bytes([n]), to(UPSTREAM), to(MODULE)) for n in range(8)])
        store.mark_delivered(UPSTREAM, ids[5:])
        store.mark_delivered(MODULE, ids[6:])
        store.checkpoint(MODULE, ids[2])
        before = (store.queue_lengths(), store.size_bytes(), store.message_count(), store.stats())
        store = self.reopen(store)
        assert (store.queue_lengths(), store.size_bytes(), store.message_count(), store.stats()) == before
        assert store.format_version == FORMAT_SPARSE
        assert store.delivered_above_of(UPSTREAM) == ids[7]
        assert self.ids_of(store, UPSTREAM) == ids[:5]
        assert self.ids_of(store, MODULE) == ids[3:6]
        store.mark_delivered(UPSTREAM, ids[:5])
        store.mark_delivered(MODULE, ids[3:6])
        assert (store.message_count(), store.size_bytes()) == (0, 0)
        store = self.reopen(store)
        assert (store.message_count(), store.size_bytes(), store.delivered_above_of(UPSTREAM)) == (0, 0, 0)

    # -- TTL -------------------------------------------------------------------------

    def test_expired_message_is_never_read(self) -> None:
        store = self.open()
        store.append([item(b"short", to(UPSTREAM, NOW + 10)), item(b"long", to(UPSTREAM))])
        assert bodies(store, UPSTREAM, NOW + 9) == [b"short", b"long"]
        assert bodies(store, UPSTREAM, NOW + 10) == [b"long"]

    def test_read_skips_a_long_run_of_expired_refs(self) -> None:
        store = self.open()
        store.append([item(b"old", to(UPSTREAM, NOW)) for _ in range(300)] + [item(b"new", to(UPSTREAM))])
        assert bodies(store, UPSTREAM, NOW) == [b"new"]
        assert [q.message.body for q in store.read(UPSTREAM, 0, 1, NOW)] == [b"new"]

    def test_expire_reclaims_a_queue_nobody_reads(self) -> None:
        store = self.open()
        store.append([item(b"x", to(UPSTREAM, NOW + 10)) for _ in range(3)])
        assert store.expire(NOW + 9) == {}
        assert store.message_count() == 3
        assert store.expire(NOW + 10) == {UPSTREAM: 3}
        assert store.size_bytes() == 0
        assert store.message_count() == 0
        assert store.queue_lengths() == {UPSTREAM: 0}
        assert store.expire(NOW + 20) == {}

    def test_expiry_is_per_ref(self) -> None:
        store = self.open()
        [message_id] = store.append([item(b"m", to(UPSTREAM, NOW + 10), to(MODULE, NOW + 100))])
        assert store.expire(NOW + 50) == {UPSTREAM: 1}
        assert bodies(store, UPSTREAM, NOW) == []
        assert bodies(store, MODULE, NOW + 50) == [b"m"]
        assert store.message_count() == 1
        store.checkpoint(MODULE, message_id)
        assert store.message_count() == 0
        assert store.size_bytes() == 0

    def test_body_reclaimed_when_one_ref_delivered_and_the_other_expires(self) -> None:
        store = self.open()
        [message_id] = store.append([item(b"m", to(UPSTREAM, NOW + 10), to(MODULE, NOW + 100))])
        store.checkpoint(MODULE, message_id)
        assert store.message_count() == 1
        assert store.expire(NOW + 10) == {UPSTREAM: 1}
        assert store.message_count() == 0
        assert store.size_bytes() == 0
        assert store.expire(NOW + 200) == {}

    def test_delivered_ref_is_not_counted_as_dropped(self) -> None:
        store = self.open()
        ids = store.append([item(b"a", to(UPSTREAM, NOW + 10)), item(b"b", to(UPSTREAM, NOW + 10))])
        store.checkpoint(UPSTREAM, ids[0])
        assert store.expire(NOW + 10) == {UPSTREAM: 1}
        assert store.message_count() == 0

    def test_delivery_expiring_before_the_last_expire_run_is_dropped_by_the_next(self) -> None:
        store = self.open()
        store.expire(NOW)
        [message_id] = store.append([item(b"late", to(UPSTREAM, NOW - 1), to(MODULE))])
        assert {queue.queue: queue.length for queue in store.stats().queues}[UPSTREAM] == 1
        assert bodies(store, UPSTREAM, NOW) == []
        assert bodies(store, UPSTREAM, NOW - 5) == [b"late"]  # the clock went back: not expired yet
        assert store.expire(NOW + 1) == {UPSTREAM: 1}
        assert store.message_count() == 1
        assert bodies(store, MODULE, NOW + 1) == [b"late"]
        store.checkpoint(MODULE, message_id)
        assert store.message_count() == 0

    def test_expire_runs_in_chunks_and_cuts_only_between_expiry_times(
        self, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(expiry, "EXPIRE_CHUNK", 3)
        store = self.open()
        # Five messages share one expiry time, then singles: a chunk must take all five.
        items = [item(b"same", to(UPSTREAM, NOW + 5), to(MODULE, NOW + 50)) for _ in range(5)]
        items += [item(bytes([n]), to(UPSTREAM, NOW + 6 + n)) for n in range(7)]
        store.append(items)
        assert store.expire(NOW + 20) == {UPSTREAM: 12}
        assert store.message_count() == 5
        assert bodies(store, MODULE, NOW + 20) == [b"same"] * 5
        assert store.expire(NOW + 50) == {MODULE: 5}
        assert store.size_bytes() == 0

    # -- solo entries (one ref, its queue's entries in index-time order) -------------------------

    def test_a_message_for_one_queue_has_no_expiry_entry_and_marks_the_format(self) -> None:
        store = self.open()
        assert store.format_version == FORMAT_IN_ORDER
        store.append([item(b"a", to(UPSTREAM)), item(b"b", to(UPSTREAM), to(MODULE))])
        assert store.format_version == FORMAT_SOLO == FORMAT_VERSION
        assert len(store.kv.scan(EXPIRY, b"", b"\xff", 10)) == 1  # only the message for two queues
        if self.reopens:
            assert self.reopen(store).format_version == FORMAT_SOLO

    def test_solo_messages_expire_from_the_head_of_their_queue_in_order(self) -> None:
        store = self.open()
        store.append([item(bytes([n]), to(UPSTREAM, NOW + 10 * n)) for n in range(1, 6)])
        store.append([item(b"m", to(MODULE, NOW + 5))])
        size = store.size_bytes()
        assert store.expire(NOW + 25) == {UPSTREAM: 2, MODULE: 1}
        assert bodies(store, UPSTREAM, NOW) == [bytes([3]), bytes([4]), bytes([5])]
        lengths = store.queue_lengths()
        assert (lengths[UPSTREAM], lengths[MODULE], store.message_count()) == (3, 0, 3)
        assert 0 < store.size_bytes() < size
        assert store.expire(NOW + 25) == {}
        assert store.expire(NOW + 50) == {UPSTREAM: 3}
        assert (store.message_count(), store.size_bytes()) == (0, 0)

    def test_a_shorter_ttl_after_a_longer_one_still_expires_on_time(self) -> None:
        store = self.open()
        store.append([item(b"long", to(UPSTREAM, NOW + HOUR))])
        store.append([item(b"short", to(UPSTREAM, NOW + 10))])  # sorts below: gets an expiry entry
        store.append([item(b"after", to(UPSTREAM, NOW + 2 * HOUR))])
        if self.reopens:  # the order of the solo entries is recovered at open
            store = self.reopen(store)
        store.append([item(b"short again", to(UPSTREAM, NOW + 20))])
        assert store.expire(NOW + 30) == {UPSTREAM: 2}
        assert bodies(store, UPSTREAM, NOW) == [b"long", b"after"]
        assert store.expire(NOW + HOUR) == {UPSTREAM: 1}
        assert bodies(store, UPSTREAM, NOW) == [b"after"]
        assert store.expire(NOW + 2 * HOUR) == {UPSTREAM: 1}
        assert (store.message_count(), store.size_bytes(), store.queue_lengths()[UPSTREAM]) == (0, 0, 0)

    def test_expire_of_solo_entries_skips_delivered_ones_and_runs_in_chunks(
        self, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(expiry, "EXPIRE_CHUNK", 3)
        store = self.open()
        ids = store.append([item(bytes([n]), to(UPSTREAM, NOW + 10)) for n in range(10)])
        store.append([item(b"later", to(UPSTREAM, NOW + HOUR))])
        store.checkpoint(UPSTREAM, ids[1])
        store.mark_delivered(UPSTREAM, [ids[4], ids[5]])
        assert store.expire(NOW + 10) == {UPSTREAM: 6}
        assert bodies(store, UPSTREAM, NOW) == [b"later"]
        assert (store.message_count(), store.queue_lengths()[UPSTREAM]) == (1, 1)

    def test_solo_entries_reopen_with_their_size_count_and_stats(self) -> None:
        if not self.reopens:
            pytest.skip("this backend keeps nothing across close")
        store = self.open()
        ids = store.append([item(b"x" * n, to(UPSTREAM)) for n in range(1, 9)])
        store.append([item(b"both", to(UPSTREAM), to(MODULE))])
        store.checkpoint(UPSTREAM, ids[2])
        before = (store.queue_lengths(), store.size_bytes(), store.message_count(), store.stats())
        store = self.reopen(store)
        assert (store.queue_lengths(), store.size_bytes(), store.message_count(), store.stats()) == before
        [upstream] = [queue for queue in store.stats().queues if queue.queue == UPSTREAM]
        assert (upstream.length, upstream.oldest_enqueued_ms) == (6, NOW)

    # -- size limit ------------------------------------------------------------------

    def test_full_store_refuses_a_batch_and_writes_nothing(self) -> None:
        store = self.open(max_size_bytes=2000)
        [kept] = store.append([item(b"k" * 900, to(UPSTREAM))])
        size = store.size_bytes()
        next_id = store.next_id
        with pytest.raises(StoreFullError):
            store.append([item(b"s", to(UPSTREAM)), item(b"x" * 1200, to(MODULE))])
        assert store.size_bytes() == size
        assert store.next_id == next_id
        assert MODULE not in store.queues()
        assert bodies(store, UPSTREAM) == [b"k" * 900]
        store.checkpoint(UPSTREAM, kept)
        store.append([item(b"x" * 1200, to(MODULE))])
        assert bodies(store, MODULE) == [b"x" * 1200]

    def test_expire_makes_room_again(self) -> None:
        store = self.open(max_size_bytes=1500)
        store.append([item(b"k" * 1000, to(UPSTREAM, NOW + 10))])
        with pytest.raises(StoreFullError):
            store.append([item(b"n" * 1000, to(UPSTREAM))])
        store.expire(NOW + 10)
        store.append([item(b"n" * 1000, to(UPSTREAM))])
        assert bodies(store, UPSTREAM, NOW + 10) == [b"n" * 1000]

    # -- reopen ----------------------------------------------------------------------

    def test_reopen_recovers_queues_checkpoints_lengths_size_and_counter(self) -> None:
        if not self.reopens:
            pytest.skip("this backend keeps nothing across close")
        store = self.open()
        ids = store.append([item(bytes([n]), to(UPSTREAM), to(MODULE, NOW + 10)) for n in range(6)])
        store.checkpoint(UPSTREAM, ids[1])
        store.expire(NOW + 10)
        before = (store.queues(), store.queue_lengths(), store.size_bytes(), store.message_count(),
                  store.next_id, store.stats())
        store = self.reopen(store)
        after = (store.queues(), store.queue_lengths(), store.size_bytes(), store.message_count(),
                 store.next_id, store.stats())
        assert after == before
        assert store.checkpoint_of(UPSTREAM) == ids[1]
        assert bodies(store, UPSTREAM, NOW + 10) == [bytes([n]) for n in range(2, 6)]
        assert bodies(store, MODULE) == []
        [new] = store.append([item(b"new", to(UPSTREAM))])
        assert new > ids[-1]

    def test_ids_never_go_back_after_everything_was_deleted(self) -> None:
        if not self.reopens:
            pytest.skip("this backend keeps nothing across close")
        store = self.open()
        ids = store.append([item(b"a", to(UPSTREAM)), item(b"b", to(UPSTREAM))])
        store.checkpoint(UPSTREAM, ids[-1])
        assert store.message_count() == 0
        store = self.reopen(store)
        [new] = store.append([item(b"c", to(UPSTREAM))])
        assert new > ids[-1]
        assert bodies(store, UPSTREAM) == [b"c"]

    def test_reopen_keeps_expiry_progress(self) -> None:
        if not self.reopens:
            pytest.skip("this backend keeps nothing across close")
        store = self.open()
        [message_id] = store.append([item(b"m", to(UPSTREAM, NOW + 10), to(MODULE))])
        assert store.expire(NOW + 10) == {UPSTREAM: 1}
        store = self.reopen(store)
        store.checkpoint(MODULE, message_id)  # the expired ref is known gone after reopen
        assert store.message_count() == 0
        assert store.size_bytes() == 0

    def test_newer_format_version_is_refused(self) -> None:
        if not self.reopens:
            pytest.skip("this backend keeps nothing across close")
        store = self.open()
        store.append([item(b"a", to(UPSTREAM))])
        batch = WriteBatch()
        batch.put(META, META_FORMAT, U32.pack(FORMAT_VERSION + 1))
        store.kv.write(batch, sync=True)
        store.close()
        with pytest.raises(StoreOpenError, match="newer"):
            self.open()

    # -- twins ----------------------------------------------------------------------

    def test_twin_record_round_trips_and_is_overwritten(self) -> None:
        store = self.open()
        assert store.get_twin("edge/filter") is None
        store.put_twin("edge/filter", b'{"reported":1}')
        store.put_twin("sensör 1", "ünï".encode())
        assert store.get_twin("edge/filter") == b'{"reported":1}'
        store.put_twin("edge/filter", b'{"reported":2}')
        assert store.get_twin("edge/filter") == b'{"reported":2}'
        assert store.get_twin("sensör 1") == "ünï".encode()
        assert store.twin_keys() == sorted(["edge/filter", "sensör 1"])

    def test_twin_records_do_not_touch_messages_or_the_size_limit(self) -> None:
        store = self.open(max_size_bytes=2000)
        store.put_twin("edge/$edgeHub", b"x" * 5000)
        assert store.size_bytes() == 0
        assert store.message_count() == 0
        store.append([item(b"m", to(UPSTREAM))])
        assert bodies(store, UPSTREAM) == [b"m"]

    def test_deleted_twin_is_gone_and_deleting_nothing_is_fine(self) -> None:
        store = self.open()
        store.put_twin("d1", b"{}")
        store.delete_twin("d1")
        store.delete_twin("never")
        assert store.get_twin("d1") is None
        assert store.twin_keys() == []

    def test_twin_records_survive_reopen(self) -> None:
        if not self.reopens:
            pytest.skip("this backend keeps nothing across close")
        store = self.open()
        store.put_twin("edge/filter", b'{"v":1}')
        store.put_twin("edge/filter", b'{"v":2}')
        store.append([item(b"m", to(UPSTREAM))])
        store = self.reopen(store)
        assert store.get_twin("edge/filter") == b'{"v":2}'
        assert store.twin_keys() == ["edge/filter"]
        assert bodies(store, UPSTREAM) == [b"m"]

    def test_closed_store_refuses_twin_writes(self) -> None:
        store = self.open()
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.put_twin("d1", b"{}")

    def test_empty_twin_key_is_refused(self) -> None:
        store = self.open()
        with pytest.raises(ValueError, match="empty"):
            store.put_twin("", b"{}")

    # -- sessions ---------------------------------------------------------------------

    def test_session_record_round_trips_and_is_overwritten(self) -> None:
        store = self.open()
        assert store.get_session("edge/filter") is None
        store.put_session("edge/filter", b'{"subscriptions":1}')
        store.put_session("sensör 1", "ünï".encode())
        store.put_session("edge/filter", b'{"subscriptions":2}')
        assert store.get_session("edge/filter") == b'{"subscriptions":2}'
        assert store.get_session("sensör 1") == "ünï".encode()
        assert store.session_keys() == sorted(["edge/filter", "sensör 1"])

    def test_session_records_are_apart_from_twins_messages_and_the_size_limit(self) -> None:
        store = self.open(max_size_bytes=2000)
        store.put_session("edge/filter", b"s" * 5000)
        store.put_twin("edge/filter", b"t")
        assert store.size_bytes() == 0
        assert store.message_count() == 0
        assert store.get_twin("edge/filter") == b"t"
        store.delete_twin("edge/filter")
        assert store.get_session("edge/filter") == b"s" * 5000
        store.append([item(b"m", to(UPSTREAM))])
        assert bodies(store, UPSTREAM) == [b"m"]

    def test_deleted_session_is_gone_and_deleting_nothing_is_fine(self) -> None:
        store = self.open()
        store.put_session("d1", b"{}")
        store.delete_session("d1")
        store.delete_session("never")
        assert store.get_session("d1") is None
        assert store.session_keys() == []

    def test_session_records_survive_reopen(self) -> None:
        if not self.reopens:
            pytest.skip("this backend keeps nothing across close")
        store = self.open()
        store.put_session("edge/filter", b'{"v":1}')
        store.put_session("edge/gone", b'{"v":1}')
        store.delete_session("edge/gone")
        store.put_session("edge/filter", b'{"v":2}')
        store = self.reopen(store)
        assert store.get_session("edge/filter") == b'{"v":2}'
        assert store.session_keys() == ["edge/filter"]

    def test_closed_store_refuses_session_writes(self) -> None:
        store = self.open()
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.put_session("d1", b"{}")
        with pytest.raises(StoreError, match="closed"):
            store.delete_session("d1")

    def test_empty_session_key_is_refused(self) -> None:
        store = self.open()
        with pytest.raises(ValueError, match="empty"):
            store.put_session("", b"{}")

    # -- views and lifecycle ---------------------------------------------------------

    def test_stats_report_each_queue(self) -> None:
        store = self.open()
        store.append([item(b"a" * 100, to(UPSTREAM), to(MODULE)), item(b"b" * 100, to(UPSTREAM))])
        stats = store.stats()
        by_queue = {queue.queue: queue for queue in stats.queues}
        assert by_queue[UPSTREAM].length == 2
        assert by_queue[MODULE].length == 1
        assert by_queue[UPSTREAM].oldest_enqueued_ms == NOW
        assert by_queue[UPSTREAM].bytes > by_queue[MODULE].bytes > 100
        assert stats.message_count == 2
        assert stats.size_bytes == store.size_bytes()

    def test_closed_store_refuses_writes_and_close_is_idempotent(self) -> None:
        store = self.open()
        store.close()
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.append([item(b"a", to(UPSTREAM))])
        with pytest.raises(StoreError, match="closed"):
            store.checkpoint(UPSTREAM, 1)

    def test_appends_from_a_thread_while_the_loop_thread_reads_and_checkpoints(self) -> None:
        store = self.open()
        rounds = 200
        writer = threading.Thread(
            target=lambda: [store.append([item(b"t", to(UPSTREAM))]) for _ in range(rounds)],
        )
        writer.start()
        delivered = 0
        while writer.is_alive() or delivered < rounds:
            read = store.read(UPSTREAM, 0, 50, NOW)
            if read:
                store.checkpoint(UPSTREAM, read[-1].id)
                delivered += len(read)
            elif not writer.is_alive() and not store.read(UPSTREAM, 0, 1, NOW):
                break
        writer.join()
        assert delivered == rounds
        assert store.message_count() == 0
        assert store.size_bytes() == 0
