"""Damage found while running: which bodies of a read are unreadable, and taking them out of the store.

Called by MessageStore (under its lock for the write) when a read fails its checksum; it never
hides damage: every dropped message is logged at error level with its id and what failed
(docs/architecture.md §1 invariant 8). Damage it cannot pin on messages is raised, not handled.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgehub.errors import StoreDamagedError
from edgehub.store.kv import EXPIRY, MESSAGES, QUEUES, KeyValue, WriteBatch
from edgehub.store.records import EXPIRY_KEY, SOLO_QUEUE_VALUE, U64, decode_expiry_value, decode_queue_value

if TYPE_CHECKING:
    from edgehub.store.message_store import MessageStore

log = logging.getLogger(__name__)


Damaged = list[tuple[bytes, StoreDamagedError]]
"""(message key, the error reading it) of each unreadable body."""


def read_each(kv: KeyValue, keys: list[bytes]) -> tuple[list[bytes | None], Damaged]:
    """The records of ``keys`` one by one (a batch read failed): None for each unreadable one,
    which is also listed with its error."""
    records: list[bytes | None] = []
    damaged: Damaged = []
    for key in keys:
        try:
            records.append(kv.get(MESSAGES, key))
        except StoreDamagedError as exc:
            records.append(None)
            damaged.append((key, exc))
    return records, damaged


def drop_unreadable(store: MessageStore, prefix: bytes, damaged: Damaged) -> None:
    """Take each unreadable message out of every queue that still holds it (its refs and size
    come from its expiry entry, or from its solo queue entry), in one write. A message whose
    expiry entry is unreadable too leaves only the queue read (``prefix``); its body stays until
    the store is rebuilt."""
    if not damaged:
        return
    kv = store._kv
    batch = WriteBatch()
    for key, error in damaged:
        message_id = U64.unpack(key)[0]
        entry = kv.get(QUEUES, prefix + key)
        if entry is None:
            continue  # delivered or expired meanwhile
        if len(entry) == SOLO_QUEUE_VALUE.size:  # its only ref: the entry holds its size
            batch.delete(QUEUES, prefix + key)
            queue = store._queue_of(prefix)
            store._lengths[queue] = store._lengths.get(queue, 0) - 1
            batch.delete(MESSAGES, key)
            store._size -= SOLO_QUEUE_VALUE.unpack(entry)[3]
            store._count -= 1
            _log_dropped(message_id, error, 1)
            continue
        head: bytes | None = None
        try:
            head = kv.get(EXPIRY, EXPIRY_KEY.pack(decode_queue_value(entry)[2], message_id))
        except StoreDamagedError:
            head = None
        queues = [prefix] if head is None else [p for p, _ in decode_expiry_value(head)[3]]
        removed = 0
        for ref_prefix in dict.fromkeys(queues):
            if ref_prefix == prefix or kv.get(QUEUES, ref_prefix + key) is not None:
                batch.delete(QUEUES, ref_prefix + key)
                queue = store._queue_of(ref_prefix)
                store._lengths[queue] = store._lengths.get(queue, 0) - 1
                removed += 1
        if head is not None:
            record_size, _, _, refs = decode_expiry_value(head)
            store._reclaim(batch, message_id, refs, record_size)
        _log_dropped(message_id, error, removed)
    store._kv.write(batch, sync=store._sync)


def _log_dropped(message_id: int, error: StoreDamagedError, queues: int) -> None:
    log.error(
        "store: message %d is unreadable (%s); removed from %d queue(s), it will not be delivered",
        message_id, error.reason, queues,
    )
