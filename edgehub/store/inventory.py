"""What a store holds, read from its tables: the format and id counter at open, live counts, per-queue stats.

Reads only, over a KeyValue; MessageStore keeps the results in memory and owns every write
(except the format marker of a brand-new store).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgehub.errors import StoreOpenError
from edgehub.store.base import QueueKey, QueueStats
from edgehub.store.kv import (
    CHECKPOINTS,
    EXPIRY,
    MESSAGES,
    META,
    QUEUES,
    SCAN_PAGE,
    KeyValue,
    StoreCorruptError,
    WriteBatch,
    scan_all,
)
from edgehub.store.records import (
    EXPIRY_HEAD,
    EXPIRY_KEY,
    FORMAT_IN_ORDER,
    FORMAT_VERSION,
    ID_BYTES,
    META_EXPIRED_UPTO,
    META_FORMAT,
    META_NEXT_ID,
    QUEUE_STOP,
    SOLO_QUEUE_VALUE,
    U32,
    U64,
    decode_checkpoint,
    decode_expiry_value,
    decode_queue_value,
)
from edgehub.store.verify import verify_bodies

FIRST_ID = 1


class NewerFormatError(StoreOpenError):
    """The store was written by a newer hub (format version above ours); never quarantined."""


SAMPLE_IDS = 256
"""Live ids count_live keeps, evenly spread, for the body check at open (edgehub.store.verify)."""


@dataclass(slots=True)
class LiveCounts:
    """Checkpoint, highest id delivered above it (out of order, else absent), waiting refs and
    the index time of the latest solo entry per queue prefix, and the live bodies' count and
    bytes; ``sample_ids`` some live ids."""

    checkpoints: dict[bytes, int] = field(default_factory=dict)
    delivered_above: dict[bytes, int] = field(default_factory=dict)
    lengths: dict[bytes, int] = field(default_factory=dict)
    solo_last: dict[bytes, int] = field(default_factory=dict)
    size: int = 0
    count: int = 0
    sample_ids: list[int] = field(default_factory=list)
    sample_stride: int = 1

    def add_body(self, message_id: int, record_size: int) -> None:
        """Count one live body, keeping about SAMPLE_IDS ids evenly spread over all of them."""
        self.size += record_size
        self.count += 1
        if self.count % self.sample_stride == 0:
            self.sample_ids.append(message_id)
            if len(self.sample_ids) >= 2 * SAMPLE_IDS:
                del self.sample_ids[1::2]
                self.sample_stride *= 2


def read_meta(kv: KeyValue, location: str, read_only: bool) -> tuple[int, int, int]:
    """(next id, expired-up-to time, format version) of the store; marks a brand-new store
    with FORMAT_IN_ORDER (see edgehub.store.records).
    Refuses a newer format and reports a damaged one as StoreCorruptError."""
    version = kv.get(META, META_FORMAT)
    if version is None:
        if kv.scan(MESSAGES, b"", b"\xff", 1) or kv.scan(CHECKPOINTS, b"", b"\xff", 1):
            raise StoreCorruptError(location, "format version missing in a non-empty store")
        if not read_only:
            batch = WriteBatch()
            batch.put(META, META_FORMAT, U32.pack(FORMAT_IN_ORDER))
            batch.put(META, META_NEXT_ID, U64.pack(FIRST_ID))
            kv.write(batch, sync=True)
        return FIRST_ID, 0, FORMAT_IN_ORDER
    if len(version) != U32.size:
        raise StoreCorruptError(location, "format version unreadable")
    found = U32.unpack(version)[0]
    if found > FORMAT_VERSION:
        raise NewerFormatError(
            location,
            f"store format version {found} is newer than this hub's ({FORMAT_VERSION}); "
            "upgrade the hub or move the store aside"
        )
    next_id = kv.get(META, META_NEXT_ID)
    if next_id is None or len(next_id) != U64.size:
        raise StoreCorruptError(location, "id counter missing")
    expired = kv.get(META, META_EXPIRED_UPTO)
    return U64.unpack(next_id)[0], U64.unpack(expired)[0] if expired is not None else 0, found


def count_live(kv: KeyValue) -> LiveCounts:
    """One pass over checkpoints, queues and the expiry index (never the bodies), checking
    that they agree (StoreCorruptError otherwise): see ``_check_refs``."""
    counts = LiveCounts()
    for prefix, value in scan_all(kv, CHECKPOINTS, b"", b"\xff"):
        upto, above = decode_checkpoint(value)
        counts.checkpoints[prefix] = upto
        if above > upto:
            counts.delivered_above[prefix] = above
    next_id, expired_upto = _counters(kv)
    checkpoints, lengths, solo_last = counts.checkpoints, counts.lengths, counts.solo_last
    # Per queue, the refs the live messages say still wait: certainly (above every delivered
    # id) and possibly (delivered out of order at or below delivered_above, which only the
    # entry itself tells). A solo entry is its message's only ref, so it counts as itself.
    certain: dict[bytes, int] = {}
    possible: dict[bytes, int] = {}
    beyond: list[bytes] = []
    solo_size = SOLO_QUEUE_VALUE.size
    for key, value in scan_all(kv, QUEUES, b"", b"\xff"):
        prefix = key[:-ID_BYTES]
        lengths[prefix] = lengths.get(prefix, 0) + 1
        message_id = U64.unpack_from(key, len(prefix))[0]
        if not checkpoints.get(prefix, 0) < message_id < next_id and len(beyond) < 3:
            beyond.append(key)
        if len(value) == solo_size:
            _, _, index, record_size, _ = SOLO_QUEUE_VALUE.unpack(value)
            counts.add_body(message_id, record_size)
            certain[prefix] = certain.get(prefix, 0) + 1
            solo_last[prefix] = max(solo_last.get(prefix, 0), index)
    for key, value in scan_all(kv, EXPIRY, b"", b"\xff"):
        expiry, message_id = EXPIRY_KEY.unpack(key)
        record_size, _, max_expiry, *_ = EXPIRY_HEAD.unpack_from(value, 0)
        if expiry != max_expiry:  # the entry of a message's latest expiry lives as long as its body
            continue
        counts.add_body(message_id, record_size)
        for prefix, index in decode_expiry_value(value)[3]:
            if index <= expired_upto or message_id <= checkpoints.get(prefix, 0):
                continue
            tally = possible if message_id <= counts.delivered_above.get(prefix, 0) else certain
            tally[prefix] = tally.get(prefix, 0) + 1
    _check_refs(kv, counts, beyond, certain, possible)
    verify_bodies(kv, str(getattr(kv, "path", "store")), counts.count, counts.size, counts.sample_ids)
    return counts


def _counters(kv: KeyValue) -> tuple[int, int]:
    """(next id, expired-up-to time) from meta; read_meta has refused a missing counter already."""
    next_id = kv.get(META, META_NEXT_ID)
    expired = kv.get(META, META_EXPIRED_UPTO)
    return (
        U64.unpack(next_id)[0] if next_id is not None and len(next_id) == U64.size else FIRST_ID,
        U64.unpack(expired)[0] if expired is not None and len(expired) == U64.size else 0,
    )


def _check_refs(
    kv: KeyValue, counts: LiveCounts, beyond: list[bytes],
    certain: dict[bytes, int], possible: dict[bytes, int],
) -> None:
    """The store's own consistency check (issue 15: a damaged queues table read as half the
    queue, a damaged MANIFEST as messages without any queue): every queue entry lies between
    its queue's checkpoint and the id counter, and each queue holds as many entries as the live
    messages' refs say are waiting (exactly, up to refs delivered out of order)."""
    location = str(getattr(kv, "path", "store"))
    if beyond:
        raise StoreCorruptError(
            location, f"queue entries outside their checkpoint and the id counter (first: {beyond[0]!r})",
        )
    for prefix in certain.keys() | possible.keys() | counts.lengths.keys():
        found = counts.lengths.get(prefix, 0)
        low = certain.get(prefix, 0)
        if not low <= found <= low + possible.get(prefix, 0):
            raise StoreCorruptError(
                location,
                f"queue {prefix[:-5].decode(errors='replace')!r} holds {found} entries but its live "
                f"messages have {low}{f' to {low + possible[prefix]}' if prefix in possible else ''} "
                "waiting refs: the queues, checkpoints or expiry table is damaged",
            )


def queue_stats(kv: KeyValue, queue: QueueKey, prefix: bytes, checkpoint: int) -> QueueStats:
    """Length, oldest enqueued time and bytes of the refs after ``checkpoint``; walks them all."""
    start = prefix + U64.pack(checkpoint + 1)
    keys: list[bytes] = []
    length = total = 0
    oldest: int | None = None
    for _, value in scan_all(kv, QUEUES, start, prefix + QUEUE_STOP):
        if len(value) == SOLO_QUEUE_VALUE.size:  # it holds what the expiry entry would
            _, _, _, record_size, enqueued = SOLO_QUEUE_VALUE.unpack(value)
            length += 1
            total += record_size
            oldest = enqueued if oldest is None else min(oldest, enqueued)
        else:
            message_id, _, index = decode_queue_value(value)
            keys.append(EXPIRY_KEY.pack(index, message_id))
    for page in range(0, len(keys), SCAN_PAGE):
        for head in kv.multi_get(EXPIRY, keys[page:page + SCAN_PAGE]):
            if head is None:
                continue
            record_size, enqueued, *_ = EXPIRY_HEAD.unpack_from(head, 0)
            length += 1
            total += record_size
            oldest = enqueued if oldest is None else min(oldest, enqueued)
    return QueueStats(queue, length, oldest, total)
