"""The ``broker`` table: the generic MQTT broker's retained messages, persistent sessions and
their queued messages, as opaque records under a key layout of their own.

Bytes and keys only (edgehub.heads.mqtt.broker_store owns the record format); every change set
is ONE atomic write batch, fsynced with ``storeSyncWrites`` like every other store write.
Key layout: ``r`` + topic → retained; ``s`` + client id → session; ``q`` + u16 length + client
id + u64 seq → queued entry (so one session's queue is one key range, in delivery order).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from typing import Final

from edgehub.store.kv import BROKER, KeyValue, WriteBatch, scan_all

_RETAINED: Final = b"r"
_SESSION: Final = b"s"
_QUEUE: Final = b"q"
_U16: Final = struct.Struct(">H")
_U64: Final = struct.Struct(">Q")


def retained_key(topic: str) -> bytes:
    return _RETAINED + topic.encode()


def session_key(client_id: str) -> bytes:
    return _SESSION + client_id.encode()


def queue_key(client_id: str, seq: int) -> bytes:
    raw = client_id.encode()
    return _QUEUE + _U16.pack(len(raw)) + raw + _U64.pack(seq)


def parse_queue_key(key: bytes) -> tuple[str, int]:
    (length,) = _U16.unpack_from(key, 1)
    return key[3:3 + length].decode(), _U64.unpack_from(key, 3 + length)[0]


class BrokerTable:
    """Reads and atomic writes of the broker table over a store's KeyValue."""

    __slots__ = ("_check", "_kv", "_lock", "_sync")

    def __init__(
        self, kv: KeyValue, lock: threading.Lock, sync: bool, check_writable: Callable[[], None],
    ) -> None:
        self._kv = kv
        self._lock = lock
        self._sync = sync
        self._check = check_writable

    def write(
        self, *, retained_put: Iterable[tuple[str, bytes]] = (), retained_delete: Iterable[str] = (),
        session_put: Iterable[tuple[str, bytes]] = (), session_delete: Iterable[str] = (),
        queue_put: Iterable[tuple[str, int, bytes]] = (), queue_delete: Iterable[tuple[str, int]] = (),
    ) -> None:
        """Apply every put and delete in one atomic batch; a key both deleted and put is put."""
        batch = WriteBatch()
        puts = [(retained_key(t), v) for t, v in retained_put]
        puts += [(session_key(c), v) for c, v in session_put]
        puts += [(queue_key(c, q), v) for c, q, v in queue_put]
        put_keys = {key for key, _ in puts}
        deletes = [retained_key(t) for t in retained_delete]
        deletes += [session_key(c) for c in session_delete]
        deletes += [queue_key(c, q) for c, q in queue_delete]
        for key in deletes:
            if key not in put_keys:
                batch.delete(BROKER, key)
        for key, value in puts:
            batch.put(BROKER, key, value)
        if not len(batch):
            return
        with self._lock:
            self._check()
            self._kv.write(batch, sync=self._sync)

    def retained(self) -> list[tuple[str, bytes]]:
        return [(key[1:].decode(), value) for key, value in scan_all(self._kv, BROKER, _RETAINED, b"r\xff")]

    def sessions(self) -> list[tuple[str, bytes]]:
        return [(key[1:].decode(), value) for key, value in scan_all(self._kv, BROKER, _SESSION, b"s\xff")]

    def queued(self) -> list[tuple[str, int, bytes]]:
        return [(*parse_queue_key(key), value) for key, value in scan_all(self._kv, BROKER, _QUEUE, b"r")]
