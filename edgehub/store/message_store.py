"""MessageStore: the Store protocol once for every backend, over a KeyValue.

Owns ids, queues, checkpoints, expiry, reclaim and size accounting (docs/architecture.md §1
invariants 1, 2, 5, 6, §5); knows nothing of RocksDB or SQLite and never awaits.

Delivered refs. A ref is waiting exactly while its queue entry exists: ``checkpoint``
(oldest first) deletes the entries up to an id and moves the queue's checkpoint there;
``mark_delivered`` (``drainOrder`` newestFirst) deletes the entries of exactly the given
ids, anywhere in the queue, and moves the checkpoint over every entry now gone at its
start. A queue with entries deleted above its checkpoint keeps the highest such id
beside the checkpoint (format 2, see edgehub.store.records), durable in the same write
batch; only for ids at or below it does "is this ref delivered" cost a lookup of the
entry, so a queue drained oldest first pays nothing. A body is reclaimed when each of
its refs is delivered either way or expired.

Solo entries (format 3). A message with one ref whose index time is not below that of the
previous solo entry of its queue gets no expiry entry: its queue entry holds its size and
enqueued time instead (two writes to store it and two to reclaim it, not three and three). The
solo entries of a queue are in index-time order, so an expire run (edgehub.store.expiry) removes
the expired ones by walking the queue from its head and stopping at the first one not expired;
the others (several refs, or a shorter TTL than the message before) keep their expiry entry.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from mypy_extensions import mypyc_attr

from edgehub.errors import StoreDamagedError, StoreError, StoreFullError
from edgehub.message import Message, MessageId
from edgehub.store.base import Delivery, IngestItem, QueuedMessage, QueueKey, StoreStats
from edgehub.store.broker_table import BrokerTable
from edgehub.store.damage import drop_unreadable, read_each
from edgehub.store.expiry import expire_chunk, expire_solo
from edgehub.store.inventory import count_live, queue_stats, read_meta
from edgehub.store.kv import (
    CHECKPOINTS,
    EXPIRY,
    MESSAGES,
    META,
    QUEUES,
    SESSIONS,
    TWINS,
    KeyValue,
    StoreCorruptError,
    WriteBatch,
    scan_all,
)
from edgehub.store.records import (
    EXPIRY_KEY,
    EXPIRY_SIZE_AND_REFS,
    FORMAT_SOLO,
    FORMAT_SPARSE,
    LATE_QUEUE_VALUE,
    META_FORMAT,
    META_NEXT_ID,
    QUEUE_STOP,
    QUEUE_VALUE,
    RECORD_KEY_BYTES,
    SOLO_QUEUE_VALUE,
    U32,
    U64,
    Ref,
    checkpoint_value,
    decode_expiry_value,
    decode_message,
    encode_record,
    encode_refs,
    expiry_value,
    parse_queue_prefix,
    queue_prefix,
    queue_value,
    solo_queue_value,
)

RECENT_BYTES: Final = 16 << 20
"""Default bound on the bodies the recent cache holds, so large messages cannot fill memory."""
_MIN_READ_SCAN: Final = 64
"""Rows per further scan of a read whose first scan (``limit`` rows) held expired entries."""
_SOLO_SIZE: Final = SOLO_QUEUE_VALUE.size


class _QueueSlot:
    """One queue's key prefix, how many refs an append adds to it, and the index time of its
    latest solo entry (a solo entry must not sort below it)."""

    __slots__ = ("count", "prefix", "solo_last")

    def __init__(self, prefix: bytes, solo_last: int) -> None:
        self.prefix = prefix
        self.count = 0
        self.solo_last = solo_last


class _AppendPlan:
    """What one append will write and change, built before anything is written."""

    __slots__ = (
        "added", "batch", "count", "fresh", "fresh_bytes", "ids", "new_queues", "next_id", "same_delivery",
        "same_refs", "slots", "solo",
    )

    def __init__(self, next_id: int) -> None:
        self.next_id = next_id
        # The last single delivery planned and its (slot, refs, max expiry, encoded refs): the
        # messages of one Hub.ingest batch share their Delivery objects, so most reuse them.
        self.same_delivery: Delivery | None = None
        self.same_refs: tuple[_QueueSlot, list[Ref], int, bytes] | None = None
        self.fresh: list[tuple[MessageId, tuple[Message, bytes]]] = []
        self.fresh_bytes = 0
        self.batch = WriteBatch()
        self.ids: list[MessageId] = []
        self.slots: dict[QueueKey, _QueueSlot] = {}
        self.new_queues: list[QueueKey] = []
        self.added = 0
        self.count = 0
        self.solo = False


@mypyc_attr(allow_interpreted_subclasses=True)  # store.memory.MemoryStore stays interpreted
class MessageStore:
    """Implements edgehub.store.base.Store over a KeyValue.

    In memory it keeps one checkpoint and one length per queue, the index time of each
    queue's latest solo entry, the id counter, the size and the message count (all
    recomputed at open), and, when
    ``recent_messages`` > 0, up to that many of the latest appended messages not yet
    delivered (their bodies at most ``recent_bytes`` together), so a pump that keeps up,
    or lags by less than that, reads and checkpoints them without a store lookup
    (low-memory mode keeps none: docs/architecture.md §6). One lock orders every write;
    reads take no lock.
    """

    def __init__(
        self,
        kv: KeyValue,
        *,
        max_size_bytes: int | None = None,
        sync: bool = False,
        read_only: bool = False,
        location: str = "memory",
        recent_messages: int = 0,
        recent_bytes: int = RECENT_BYTES,
    ) -> None:
        self._kv = kv
        # id -> (message, its expiry entry) of the latest appends still waiting, oldest first, so
        # read and checkpoint skip the store lookups. A message leaves it when its body is
        # reclaimed by a checkpoint (so a pump that keeps up keeps it nearly empty) or, oldest
        # first, when it holds more than ``recent_messages`` messages or ``recent_bytes`` of
        # bodies; an entry of a message reclaimed another way is never looked up again (ids are
        # never reused) and just ages out. An OrderedDict, not a dict: a dict emptied from the
        # front makes every next(iter()) walk the holes left behind (measured: 5.8 vs 0.5 µs per
        # message at 4096 entries); it also deletes from the middle in O(1).
        self._recent: OrderedDict[MessageId, tuple[Message, bytes]] = OrderedDict()
        self._recent_limit = recent_messages
        self._recent_byte_limit = recent_bytes
        self._recent_bytes = 0
        self._location = location
        self._max_size = max_size_bytes
        self._sync = sync
        self._read_only = read_only
        self._lock = threading.Lock()
        self._closed = False
        self._prefixes: dict[QueueKey, bytes] = {}
        self._queues_by_prefix: dict[bytes, QueueKey] = {}
        self._checkpoints: dict[QueueKey, int] = {}
        # queue -> highest id delivered out of order above its checkpoint (absent: none).
        self._delivered_above: dict[QueueKey, int] = {}
        self._format = FORMAT_SOLO  # set from the store by _recover
        # queue -> index time of its latest solo entry; queue -> id up to which its head holds no
        # expired solo entry (where the next expire run starts walking it; 0: at its checkpoint).
        self._solo_last: dict[QueueKey, int] = {}
        self._expired_through: dict[QueueKey, int] = {}
        self._lengths: dict[QueueKey, int] = {}
        self._next_id = self._expired_upto = 0  # set from the tables by _recover
        self._size = self._count = 0
        self._recover()

    # -- open ---------------------------------------------------------------

    def _recover(self) -> None:
        try:
            self._next_id, self._expired_upto, self._format = read_meta(
                self._kv, self._location, self._read_only,
            )
            found = count_live(self._kv)
            for prefix, upto in found.checkpoints.items():
                queue = self._queue_of(prefix)
                self._checkpoints[queue] = upto
                self._lengths[queue] = 0
            for prefix, above in found.delivered_above.items():
                self._delivered_above[self._queue_of(prefix)] = above
            for prefix, length in found.lengths.items():
                queue = self._queue_of(prefix)
                self._lengths[queue] = self._lengths.get(queue, 0) + length
            for prefix, index in found.solo_last.items():
                self._solo_last[self._queue_of(prefix)] = index
        except (ValueError, struct.error) as exc:
            raise StoreCorruptError(self._location, f"undecodable entry: {exc}") from exc
        self._size, self._count = found.size, found.count

    # -- queues ---------------------------------------------------------------

    def _queue_of(self, prefix: bytes) -> QueueKey:
        queue = self._queues_by_prefix.get(prefix)
        if queue is None:
            queue = parse_queue_prefix(prefix)
            self._queues_by_prefix[prefix] = queue
            self._prefixes[queue] = prefix
        return queue

    def _prefix_of(self, queue: QueueKey) -> bytes:
        prefix = self._prefixes.get(queue)
        if prefix is None:
            prefix = queue_prefix(queue)
            self._prefixes[queue] = prefix
            self._queues_by_prefix[prefix] = queue
        return prefix

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        if self._read_only:
            raise StoreError("store is open read-only")

    # -- append -----------------------------------------------------------------

    def append(self, items: Sequence[IngestItem]) -> list[MessageId]:
        with self._lock:
            self._check_writable()
            plan = _AppendPlan(self._next_id)
            for item in items:
                if item.deliveries:
                    self._plan_item(plan, item)
                else:
                    plan.ids.append(-1)
            if self._max_size is not None and self._size + plan.added > self._max_size:
                raise StoreFullError(
                    f"store holds {self._size} of {self._max_size} bytes; "
                    f"a batch of {plan.added} bytes does not fit"
                )
            if plan.next_id != self._next_id:
                self._write_plan(plan)
            return plan.ids

    def _plan_item(self, plan: _AppendPlan, item: IngestItem) -> None:
        message_id = plan.next_id
        plan.next_id += 1
        plan.ids.append(message_id)
        id_key = U64.pack(message_id)
        deliveries = item.deliveries
        if len(deliveries) == 1:  # the usual case, without the set and lists of the general one
            delivery = deliveries[0]
            expiry = delivery.expiry_ms
            same = plan.same_refs
            if delivery is not plan.same_delivery or same is None:
                max_expiry = expiry if expiry > self._expired_upto else self._expired_upto + 1  # see _refs_of
                slot = plan.slots.get(delivery.queue) or self._new_slot(plan, delivery.queue)
                refs = [(slot.prefix, max_expiry)]
                same = plan.same_refs = (slot, refs, max_expiry, encode_refs(refs))
                plan.same_delivery = delivery
            slot, refs, max_expiry, encoded_refs = same
            slot.count += 1
            record, refs_end = encode_record(item.message, refs, max_expiry, encoded_refs)
            if max_expiry >= slot.solo_last:  # a solo entry: no expiry entry (see the module doc)
                slot.solo_last = max_expiry
                plan.solo = True
                self._plan_solo(plan, item.message, message_id, id_key, slot.prefix, expiry, max_expiry,
                                record)
                return
            entries = [(slot.prefix + id_key, queue_value(message_id, expiry, max_expiry))]
        else:
            refs, entries = self._refs_of(plan, message_id, id_key, deliveries)
            max_expiry = max(index for _, index in refs)
            record, refs_end = encode_record(item.message, refs, max_expiry)
        record_size = len(record) + RECORD_KEY_BYTES
        plan.added += record_size
        plan.count += 1
        puts = plan.batch.puts
        puts[MESSAGES].append((id_key, record))
        puts[QUEUES].extend(entries)
        head = expiry_value(record, refs_end, record_size)
        if self._recent_limit:
            plan.fresh.append((message_id, (item.message, head)))
            plan.fresh_bytes += len(item.message.body)
        if len(refs) == 1:
            puts[EXPIRY].append((EXPIRY_KEY.pack(max_expiry, message_id), head))
        else:  # one entry per distinct index time of the message
            puts[EXPIRY].extend((EXPIRY_KEY.pack(index, message_id), head) for index in {i for _, i in refs})

    def _plan_solo(
        self, plan: _AppendPlan, message: Message, message_id: int, id_key: bytes, prefix: bytes,
        expiry: int, index: int, record: bytes,
    ) -> None:
        record_size = len(record) + RECORD_KEY_BYTES
        plan.added += record_size
        plan.count += 1
        puts = plan.batch.puts
        puts[MESSAGES].append((id_key, record))
        puts[QUEUES].append(
            (prefix + id_key, solo_queue_value(message_id, expiry, index, record_size, message.enqueued_ms)),
        )
        if self._recent_limit:
            plan.fresh.append((message_id, (message, b"")))  # a solo entry needs no expiry head
            plan.fresh_bytes += len(message.body)

    def _new_slot(self, plan: _AppendPlan, queue: QueueKey) -> _QueueSlot:
        if queue not in self._checkpoints:
            plan.new_queues.append(queue)
        slot = plan.slots[queue] = _QueueSlot(self._prefix_of(queue), self._solo_last.get(queue, 0))
        return slot

    def _refs_of(
        self, plan: _AppendPlan, message_id: int, id_key: bytes, deliveries: tuple[Delivery, ...],
    ) -> tuple[list[Ref], list[tuple[bytes, bytes]]]:
        """The refs of one message (one per distinct queue) and its queue entries.

        A ref whose expiry is at or before the last expire run is indexed just after
        it, because checkpoint counts every ref indexed that early as removed. Read
        still checks the real expiry (invariant 5), so such a message is either
        expired already and dropped by the next run, or (the wall clock went back)
        deliverable until its TTL runs out.
        """
        refs: list[Ref] = []
        entries: list[tuple[bytes, bytes]] = []
        seen: set[QueueKey] = set()
        for delivery in deliveries:
            queue = delivery.queue
            if queue in seen:  # one ref per queue; routes are deduplicated upstream
                continue
            seen.add(queue)
            slot = plan.slots.get(queue) or self._new_slot(plan, queue)
            slot.count += 1
            index = max(delivery.expiry_ms, self._expired_upto + 1)
            refs.append((slot.prefix, index))
            entries.append((slot.prefix + id_key, queue_value(message_id, delivery.expiry_ms, index)))
        return refs, entries

    def _write_plan(self, plan: _AppendPlan) -> None:
        batch = plan.batch
        for queue in plan.new_queues:
            batch.put(CHECKPOINTS, plan.slots[queue].prefix, U64.pack(0))
        batch.put(META, META_NEXT_ID, U64.pack(plan.next_id))
        marks_solo = plan.solo and self._format < FORMAT_SOLO
        if marks_solo:  # the store's first solo entry: older hubs must refuse it from now on
            batch.put(META, META_FORMAT, U32.pack(FORMAT_SOLO))
        self._kv.write(batch, sync=self._sync)
        if marks_solo:
            self._format = FORMAT_SOLO
        self._next_id = plan.next_id
        self._size += plan.added
        self._count += plan.count
        for queue in plan.new_queues:
            self._checkpoints[queue] = 0
        if plan.fresh:
            recent = self._recent
            recent.update(plan.fresh)
            self._recent_bytes += plan.fresh_bytes
            limit, byte_limit = self._recent_limit, self._recent_byte_limit
            while recent and (len(recent) > limit or self._recent_bytes > byte_limit):
                self._recent_bytes -= len(recent.popitem(last=False)[1][0].body)
        lengths, solo_last = self._lengths, self._solo_last
        for queue, slot in plan.slots.items():
            lengths[queue] = lengths.get(queue, 0) + slot.count
            if slot.solo_last:
                solo_last[queue] = slot.solo_last

    # -- read -------------------------------------------------------------------

    def read(self, queue: QueueKey, after: MessageId, limit: int, now_ms: int) -> list[QueuedMessage]:
        prefix = self._prefixes.get(queue)
        if prefix is None or limit <= 0:
            return []
        first = max(after, self._checkpoints.get(queue, 0)) + 1
        start = prefix + U64.pack(first)
        stop = prefix + QUEUE_STOP
        live: list[tuple[int, int]] = []
        want = limit  # the usual read finds nothing expired: scan no more rows than it returns
        while len(live) < limit:
            rows = self._kv.scan(QUEUES, start, stop, want)
            for _, value in rows:
                message_id, expiry = QUEUE_VALUE.unpack_from(value)
                if expiry > now_ms:  # invariant 5: TTL is enforced at read time
                    live.append((message_id, expiry))
            if len(rows) < want:
                break
            start = rows[-1][0] + b"\x00"
            want = max(limit - len(live), _MIN_READ_SCAN)
        del live[limit:]
        return self._materialize(queue, live)

    def read_newest(
        self, queue: QueueKey, above: MessageId, below: MessageId | None, limit: int, now_ms: int,
    ) -> list[QueuedMessage]:
        """Up to ``limit`` waiting messages of ``queue`` with ``above < id < below`` (``below``
        None: no upper bound): the newest of them, returned in id order; skips every expired
        and every delivered one (``drainOrder`` newestFirst reads the head of a queue)."""
        prefix = self._prefixes.get(queue)
        if prefix is None or limit <= 0:
            return []
        start = prefix + U64.pack(max(above, self._checkpoints.get(queue, 0)) + 1)
        stop = prefix + (QUEUE_STOP if below is None else U64.pack(max(below, 0)))
        live: list[tuple[int, int]] = []
        while len(live) < limit and start < stop:
            want = max(limit - len(live), _MIN_READ_SCAN)
            rows = self._kv.scan_reverse(QUEUES, start, stop, want)
            for _, value in rows:
                message_id, expiry = QUEUE_VALUE.unpack_from(value)
                if expiry > now_ms:  # invariant 5
                    live.append((message_id, expiry))
            if len(rows) < want:
                break
            stop = rows[-1][0]
        del live[limit:]
        live.reverse()
        return self._materialize(queue, live)

    def _materialize(self, queue: QueueKey, live: list[tuple[int, int]]) -> list[QueuedMessage]:
        """The messages of (id, expiry) pairs read from ``queue``, from the recent cache or the store."""
        recent = self._recent
        messages: list[Message | None] = [
            entry[0] if (entry := recent.get(message_id)) is not None else None for message_id, _ in live
        ]
        missing = [index for index, message in enumerate(messages) if message is None]
        if missing:
            records = self._read_bodies(queue, [live[index][0] for index in missing])
            for index, record in zip(missing, records, strict=True):
                if record is not None:  # else reclaimed between the two reads by another thread
                    messages[index] = decode_message(record)
        return [
            QueuedMessage(message_id, queue, expiry, message)
            for (message_id, expiry), message in zip(live, messages, strict=True)
            if message is not None
        ]

    def _read_bodies(self, queue: QueueKey, ids: list[int]) -> list[bytes | None]:
        """The records of ``ids``; a body that fails its checksum is dropped from the store
        (edgehub.store.damage) and read as absent, so one damaged block never stops a queue."""
        keys = [U64.pack(message_id) for message_id in ids]
        try:
            return self._kv.multi_get(MESSAGES, keys)
        except StoreDamagedError:
            records, damaged = read_each(self._kv, keys)
        with self._lock:
            drop_unreadable(self, self._prefix_of(queue), damaged)
        return records

    # -- checkpoint and reclaim ---------------------------------------------------

    def _is_done(self, message_id: int, refs: list[Ref], delivered: bytes) -> bool:
        """Every ref of the message was delivered (its ref in the queue with prefix
        ``delivered`` is being delivered now) or removed by an expire run."""
        expired_upto = self._expired_upto
        for prefix, expiry in refs:
            if prefix == delivered or expiry <= expired_upto:
                continue
            queue = self._queue_of(prefix)
            if self._checkpoints.get(queue, 0) < message_id and not self._delivered_out_of_order(
                queue, prefix, message_id,
            ):
                return False
        return True

    def _delivered_out_of_order(self, queue: QueueKey, prefix: bytes, message_id: int) -> bool:
        """The ref of ``message_id`` (above the checkpoint of ``queue``) was delivered by
        ``mark_delivered``: its entry is gone. Free for a queue drained oldest first."""
        if self._delivered_above.get(queue, 0) < message_id:
            return False
        return self._kv.get(QUEUES, prefix + U64.pack(message_id)) is None

    def _reclaim(self, batch: WriteBatch, message_id: int, refs: list[Ref], record_size: int) -> None:
        batch.delete(MESSAGES, U64.pack(message_id))
        for expiry in {expiry for _, expiry in refs}:
            batch.delete(EXPIRY, EXPIRY_KEY.pack(expiry, message_id))
        self._size -= record_size
        self._count -= 1

    def checkpoint(self, queue: QueueKey, upto: MessageId) -> None:
        with self._lock:
            self._check_writable()
            old = self._checkpoints.get(queue, 0)
            upto = min(upto, self._next_id - 1)  # never mark ids not yet assigned delivered
            if upto <= old:
                return
            prefix = self._prefix_of(queue)
            refs = list(scan_all(self._kv, QUEUES, prefix + U64.pack(old + 1), prefix + U64.pack(upto + 1)))
            batch = WriteBatch()
            size, count = self._size, self._count
            above = self._delivered_above.get(queue, 0)
            try:
                gone = self._deliver_refs(batch, refs, prefix)
                batch.put(CHECKPOINTS, prefix, checkpoint_value(upto, above))
                self._kv.write(batch, sync=False)
            except BaseException:
                self._size, self._count = size, count
                raise
            self._forget_recent(gone)
            self._checkpoints[queue] = upto
            if above and above <= upto:
                del self._delivered_above[queue]
            self._lengths[queue] = self._lengths.get(queue, 0) - len(refs)

    def mark_delivered(self, queue: QueueKey, ids: Sequence[MessageId]) -> None:
        with self._lock:
            self._check_writable()
            old = self._checkpoints.get(queue, 0)
            wanted = sorted({message_id for message_id in ids if old < message_id < self._next_id})
            if not wanted:
                return
            prefix = self._prefix_of(queue)
            keys = [prefix + U64.pack(message_id) for message_id in wanted]
            refs = [
                (key, value)
                for key, value in zip(keys, self._kv.multi_get(QUEUES, keys), strict=True)
                if value is not None  # else delivered already or expired
            ]
            if not refs:
                return
            upto = self._prefix_end(prefix, old, {key for key, _ in refs})
            above = max(self._delivered_above.get(queue, 0), U64.unpack_from(refs[-1][0], len(prefix))[0])
            if above <= upto:
                above = 0
            batch = WriteBatch()
            size, count = self._size, self._count
            try:
                gone = self._deliver_refs(batch, refs, prefix)
                batch.put(CHECKPOINTS, prefix, checkpoint_value(upto, above))
                if above and self._format < FORMAT_SPARSE:  # the first out-of-order delivery
                    batch.put(META, META_FORMAT, U32.pack(FORMAT_SPARSE))
                self._kv.write(batch, sync=False)
            except BaseException:
                self._size, self._count = size, count
                raise
            self._forget_recent(gone)
            self._checkpoints[queue] = upto
            if above:
                self._delivered_above[queue] = above
                self._format = max(self._format, FORMAT_SPARSE)
            else:
                self._delivered_above.pop(queue, None)
            self._lengths[queue] = self._lengths.get(queue, 0) - len(refs)

    def _prefix_end(self, prefix: bytes, checkpoint: int, gone: set[bytes]) -> int:
        """The new checkpoint of a queue once the entries ``gone`` are deleted: just before
        the first entry left after ``checkpoint``, or the last id assigned when none is.

        Reads one entry, then more only while they are all in ``gone``, so a run of entries
        deleted earlier beyond the first one left is never walked (RocksDB keeps their
        tombstones until a compaction)."""
        start, stop = prefix + U64.pack(checkpoint + 1), prefix + QUEUE_STOP
        want = 1
        while True:
            rows = self._kv.scan(QUEUES, start, stop, want)
            for key, _ in rows:
                if key not in gone:
                    first_left: int = U64.unpack_from(key, len(prefix))[0]
                    return max(checkpoint, first_left - 1)
            if len(rows) < want:
                return self._next_id - 1
            start = rows[-1][0] + b"\x00"
            want = min(2 * want, len(gone) + 1)

    def _deliver_refs(self, batch: WriteBatch, refs: list[tuple[bytes, bytes]], prefix: bytes) -> list[int]:
        """Delete the delivered refs of one queue; reclaim each body no other ref still needs.
        Returns the ids of the messages reclaimed."""
        recent = self._recent
        id_start = len(prefix)
        message_deletes = batch.deletes[MESSAGES]
        freed = reclaimed = 0
        gone: list[int] = []
        # (key, id, index time, expiry entry or None when not cached) per ref that is not solo,
        # decoded inline: this runs for every delivered message.
        found: list[tuple[bytes, int, int, bytes | None]] = []
        missing: list[int] = []
        for key, value in refs:
            if len(value) == _SOLO_SIZE:  # its only ref, and the entry holds its size
                message_id, _, _, record_size, _ = SOLO_QUEUE_VALUE.unpack(value)
                message_deletes.append(key[id_start:])  # the queue key ends with the messages key
                freed += record_size
                reclaimed += 1
                gone.append(message_id)
                continue
            message_id, index = QUEUE_VALUE.unpack_from(value)
            if len(value) != QUEUE_VALUE.size:
                index = LATE_QUEUE_VALUE.unpack(value)[2]
            entry = recent.get(message_id)
            if entry is None:
                missing.append(len(found))
                found.append((key, message_id, index, None))
            else:
                found.append((key, message_id, index, entry[1]))
        if missing:
            heads = self._kv.multi_get(EXPIRY, [EXPIRY_KEY.pack(found[i][2], found[i][1]) for i in missing])
            for i, head in zip(missing, heads, strict=True):
                key, message_id, index, _ = found[i]
                found[i] = (key, message_id, index, head)
        batch.deletes[QUEUES].extend([key for key, _ in refs])
        expiry_deletes = batch.deletes[EXPIRY]
        for key, message_id, index, head in found:
            if head is None:
                raise StoreError(f"expiry entry missing for message {message_id}")
            record_size, _, _, nrefs = EXPIRY_SIZE_AND_REFS.unpack_from(head, 0)
            if nrefs == 1:  # its only ref was this one: reclaim without decoding the refs
                message_deletes.append(key[id_start:])
                expiry_deletes.append(EXPIRY_KEY.pack(index, message_id))
                freed += record_size
                reclaimed += 1
                gone.append(message_id)
                continue
            _, _, _, message_refs = decode_expiry_value(head)
            if self._is_done(message_id, message_refs, prefix):
                self._reclaim(batch, message_id, message_refs, record_size)
                gone.append(message_id)
        self._size -= freed
        self._count -= reclaimed
        return gone

    def _forget_recent(self, gone: list[int]) -> None:
        """Drop the reclaimed messages ``gone`` from the recent cache (once their write is done)."""
        recent = self._recent
        if not recent:
            return
        freed = 0
        for message_id in gone:
            entry = recent.pop(message_id, None)
            if entry is not None:
                freed += len(entry[0].body)
        self._recent_bytes -= freed

    def expire(self, now_ms: int) -> dict[QueueKey, int]:
        with self._lock:
            self._check_writable()
        dropped: dict[QueueKey, int] = {}
        more = True
        while more:  # the lock is let go between chunks, so appends and checkpoints get in
            with self._lock:
                more = not self._closed and expire_chunk(self, now_ms, dropped)
        with self._lock:  # then the solo entries of every queue holding any, up to the same time
            walked = [queue for queue in self._solo_last if self._lengths.get(queue, 0)]
        for queue in walked:
            more = True
            while more:
                with self._lock:
                    more = not self._closed and expire_solo(self, queue, dropped)
        return {queue: count for queue, count in dropped.items() if count}

    # -- twins --------------------------------------------------------------------

    def get_twin(self, key: str) -> bytes | None:
        """The twin record stored under ``key`` (an identity id), or None."""
        return self._kv.get(TWINS, _twin_key(key))

    def put_twin(self, key: str, value: bytes) -> None:
        """Store one twin record: one atomic write (fsynced with ``storeSyncWrites``)."""
        batch = WriteBatch()
        batch.put(TWINS, _twin_key(key), value)
        with self._lock:
            self._check_writable()
            self._kv.write(batch, sync=self._sync)

    def delete_twin(self, key: str) -> None:
        """Forget the twin record under ``key`` (no-op when there is none)."""
        batch = WriteBatch()
        batch.delete(TWINS, _twin_key(key))
        with self._lock:
            self._check_writable()
            self._kv.write(batch, sync=self._sync)

    def twin_keys(self) -> list[str]:
        """Every key with a twin record, sorted (by UTF-8 bytes)."""
        return [key.decode() for key, _ in scan_all(self._kv, TWINS, b"", b"\xff")]

    # -- sessions -----------------------------------------------------------------

    def get_session(self, key: str) -> bytes | None:
        """The persistent MQTT session record stored under ``key`` (a client id), or None."""
        return self._kv.get(SESSIONS, _record_key(key, "session"))

    def put_session(self, key: str, value: bytes) -> None:
        """Store one session record: one atomic write (fsynced with ``storeSyncWrites``)."""
        batch = WriteBatch()
        batch.put(SESSIONS, _record_key(key, "session"), value)
        with self._lock:
            self._check_writable()
            self._kv.write(batch, sync=self._sync)

    def delete_session(self, key: str) -> None:
        """Forget the session record under ``key`` (no-op when there is none)."""
        batch = WriteBatch()
        batch.delete(SESSIONS, _record_key(key, "session"))
        with self._lock:
            self._check_writable()
            self._kv.write(batch, sync=self._sync)

    def session_keys(self) -> list[str]:
        """Every client id with a session record, sorted (by UTF-8 bytes)."""
        return [key.decode() for key, _ in scan_all(self._kv, SESSIONS, b"", b"\xff")]

    # -- the generic MQTT broker ---------------------------------------------------

    def broker_table(self) -> BrokerTable:
        """The generic MQTT broker's table (retained messages, sessions, queues), written
        under this store's lock and sync setting."""
        return BrokerTable(self._kv, self._lock, self._sync, self._check_writable)

    # -- views --------------------------------------------------------------------

    def queues(self) -> list[QueueKey]:
        return sorted(self._checkpoints)

    def queue_lengths(self) -> dict[QueueKey, int]:
        """Refs waiting per queue (cheap: kept in memory), for metrics."""
        return dict(self._lengths)

    def checkpoint_of(self, queue: QueueKey) -> MessageId:
        """The last delivered id of ``queue`` (0 when none)."""
        return self._checkpoints.get(queue, 0)

    def delivered_above_of(self, queue: QueueKey) -> MessageId:
        """The highest id of ``queue`` delivered out of order above its checkpoint (0 when none)."""
        return self._delivered_above.get(queue, 0)

    @property
    def recent_size(self) -> tuple[int, int]:
        """(messages, bytes of their bodies) in the recent cache (tests, benchmarks)."""
        return len(self._recent), self._recent_bytes

    @property
    def format_version(self) -> int:
        """The store's format version (1 until a queue had refs delivered out of order)."""
        return self._format

    @property
    def next_id(self) -> MessageId:
        """The id the next stored message will get."""
        return self._next_id

    @property
    def kv(self) -> KeyValue:
        """The backend under this store (tests, the stats CLI)."""
        return self._kv

    def stats(self) -> StoreStats:
        """Per-queue lengths, oldest message and bytes; walks every ref (for the CLI)."""
        queues = tuple(
            queue_stats(self._kv, queue, self._prefix_of(queue), self.checkpoint_of(queue))
            for queue in self.queues()
        )
        return StoreStats(queues, self._size, self._count)

    def size_bytes(self) -> int:
        return self._size

    def message_count(self) -> int:
        return self._count

    def disk_bytes(self) -> int:
        """Bytes the backend's files take on disk (compaction lags deletes)."""
        return self._kv.disk_bytes()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._kv.close()


def _twin_key(key: str) -> bytes:
    if not key:
        raise ValueError("a twin key must not be empty")
    return key.encode()  # UTF-8 never holds 0xff, so every key sorts below twin_keys' bound


def _record_key(key: str, kind: str) -> bytes:
    if not key:
        raise ValueError(f"a {kind} key must not be empty")
    return key.encode()  # UTF-8 never holds 0xff, so every key sorts below the keys' scan bound
