"""Expire runs (docs/architecture.md §1 invariant 5, §5): TTL removal of refs and the bodies they free.

Functions over a MessageStore's state, each one write batch: MessageStore.expire calls them under
its lock, letting it go between batches so appends and checkpoints get in. First the expiry
table, oldest first, in complete runs up to some time; then the solo entries at each queue's head,
up to the time the expiry table was run to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from edgehub.store.base import QueueKey
from edgehub.store.kv import EXPIRY, MESSAGES, META, QUEUES, WriteBatch, scan_all
from edgehub.store.records import (
    EXPIRY_KEY,
    META_EXPIRED_UPTO,
    QUEUE_STOP,
    SOLO_QUEUE_VALUE,
    U64,
    decode_expiry_value,
)

if TYPE_CHECKING:
    from edgehub.store.message_store import MessageStore

EXPIRE_CHUNK: Final = 4096
"""Expiry entries (or queue entries walked) per write batch in one expire run; bounds the batch's memory."""
FIRST_SOLO_SCAN: Final = 16
"""Rows of the first scan of a queue's head in an expire run; usually the first is not expired."""
SOLO_SIZE: Final = SOLO_QUEUE_VALUE.size


def expire_solo(store: MessageStore, queue: QueueKey, dropped: dict[QueueKey, int]) -> bool:
    """Remove the expired solo entries at the head of ``queue`` (index time up to the last
    expire run's), up to about EXPIRE_CHUNK rows in one batch. Entries that are not solo are
    passed over (their expiry entries expire them); the walk stops at the first solo entry not
    expired, since every later one expires no sooner. True when the chunk ran out first."""
    upto = store._expired_upto
    prefix = store._prefix_of(queue)
    through = max(store._checkpoints.get(queue, 0), store._expired_through.get(queue, 0))
    start, stop = prefix + U64.pack(through + 1), prefix + QUEUE_STOP
    id_start = len(prefix)
    batch = WriteBatch()
    gone: list[int] = []
    freed = scanned = 0
    want = FIRST_SOLO_SCAN
    more = True
    while more:
        rows = store._kv.scan(QUEUES, start, stop, want)
        for key, value in rows:
            if len(value) == SOLO_SIZE:
                message_id, _, index, record_size, _ = SOLO_QUEUE_VALUE.unpack(value)
                if index > upto:
                    more = False
                    break
                batch.delete(QUEUES, key)
                batch.delete(MESSAGES, key[id_start:])
                freed += record_size
                gone.append(message_id)
            through = U64.unpack_from(key, id_start)[0]
        scanned += len(rows)
        if len(rows) < want or scanned >= EXPIRE_CHUNK:
            more = more and len(rows) == want  # the chunk ran out before the queue did
            break
        start = rows[-1][0] + b"\x00"
        want = min(2 * want, EXPIRE_CHUNK)
    if gone:
        store._kv.write(batch, sync=False)
        store._size -= freed
        store._count -= len(gone)
        store._lengths[queue] = store._lengths.get(queue, 0) - len(gone)
        dropped[queue] = dropped.get(queue, 0) + len(gone)
        store._forget_recent(gone)
    store._expired_through[queue] = through
    return more


def expire_chunk(store: MessageStore, now_ms: int, dropped: dict[QueueKey, int]) -> bool:
    """Expire up to about EXPIRE_CHUNK entries as one complete run up to some
    time <= ``now_ms``, in one batch. True when entries up to ``now_ms`` remain."""
    previous = store._expired_upto
    if now_ms <= previous:
        return False
    start = U64.pack(previous + 1)
    rows = store._kv.scan(EXPIRY, start, U64.pack(now_ms + 1), EXPIRE_CHUNK)
    upto = now_ms
    more = False
    if len(rows) == EXPIRE_CHUNK:
        last = EXPIRY_KEY.unpack(rows[-1][0])[0]
        if EXPIRY_KEY.unpack(rows[0][0])[0] < last:
            upto = last - 1  # cut between two expiry times, never inside one
            rows = [row for row in rows if EXPIRY_KEY.unpack(row[0])[0] < last]
        else:
            upto = last
            rows = list(scan_all(store._kv, EXPIRY, start, U64.pack(last + 1)))
        more = upto < now_ms
    batch = WriteBatch()
    size, count = store._size, store._count
    lengths: dict[QueueKey, int] = {}
    handled: set[int] = set()
    try:
        for key, value in rows:
            message_id = EXPIRY_KEY.unpack(key)[1]
            if message_id in handled:
                continue
            handled.add(message_id)
            _expire_message(store, batch, message_id, value, previous, upto, lengths)
        batch.put(META, META_EXPIRED_UPTO, U64.pack(upto))
        store._kv.write(batch, sync=False)
    except BaseException:
        store._size, store._count = size, count
        raise
    store._expired_upto = upto
    for queue, removed in lengths.items():
        store._lengths[queue] -= removed
        dropped[queue] = dropped.get(queue, 0) + removed
    return more


def _expire_message(
store: MessageStore, batch: WriteBatch, message_id: int, head: bytes, previous: int, upto: int,
removed: dict[QueueKey, int],
) -> None:
    """Remove every ref of one message expiring in (previous, upto]; reclaim its body when done."""
    record_size, _, _, refs = decode_expiry_value(head)
    id_key = U64.pack(message_id)
    done = True
    for prefix, expiry in refs:
        queue = store._queue_of(prefix)
        if store._checkpoints.get(queue, 0) >= message_id or expiry <= previous:
            continue  # delivered, or removed by an earlier run
        if store._delivered_out_of_order(queue, prefix, message_id):
            continue
        if expiry > upto:
            done = False
            continue
        batch.delete(QUEUES, prefix + id_key)
        removed[queue] = removed.get(queue, 0) + 1
    if done:
        store._reclaim(batch, message_id, refs, record_size)
        return
    for expiry in {expiry for _, expiry in refs if previous < expiry <= upto}:
        batch.delete(EXPIRY, EXPIRY_KEY.pack(expiry, message_id))
