"""The key-value contract under MessageStore: named ordered tables, atomic write batches.

Backends (memory, rocksdb, sqlite) implement it; they know bytes and tables only,
never messages, queues or the record format (that is edgehub.store.records).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Protocol

from edgehub.errors import StoreOpenError

# Tables, as indexes into WriteBatch and backend handle tuples (docs/architecture.md §5).
MESSAGES: Final = 0
QUEUES: Final = 1
CHECKPOINTS: Final = 2
EXPIRY: Final = 3
META: Final = 4
TWINS: Final = 5
"""Twin records (edgehub.twins): identity id → JSON; added after format 1, so an older
store opens without it (see edgehub.store.records)."""
SESSIONS: Final = 6
"""Persistent MQTT sessions (edgehub.heads.mqtt.session_store): client id → record; added
like twins, so a store without it opens."""
BROKER: Final = 7
"""The generic MQTT broker's retained messages, sessions and queues (edgehub.store.broker_table);
added like twins, so a store without it opens."""
SQLITE_FILE: Final = "store.sqlite3"
"""The SQLite backend's database in the store folder (here, so finding a store's backend does not
load sqlite3)."""
TABLE_NAMES: Final = ("messages", "queues", "checkpoints", "expiry", "meta", "twins", "sessions", "broker")


class StoreCorruptError(StoreOpenError):
    """The store's files are damaged; ``storeRecovery=quarantine`` may move them aside.

    Locked, newer-format and permission problems are plain StoreOpenError: moving
    those aside would lose good data.
    """


class WriteBatch:
    """Puts and deletes applied by ``KeyValue.write`` all or nothing.

    Within one batch deletes are applied before puts; a batch never needs both
    for the same key.
    """

    __slots__ = ("deletes", "puts")

    def __init__(self) -> None:
        # One list per table, written out: this runs for every group-commit batch.
        self.puts: tuple[list[tuple[bytes, bytes]], ...] = ([], [], [], [], [], [], [], [])
        self.deletes: tuple[list[bytes], ...] = ([], [], [], [], [], [], [], [])

    def put(self, table: int, key: bytes, value: bytes) -> None:
        self.puts[table].append((key, value))

    def delete(self, table: int, key: bytes) -> None:
        self.deletes[table].append(key)

    def __len__(self) -> int:
        return sum(map(len, self.puts)) + sum(map(len, self.deletes))


class KeyValue(Protocol):
    """Ordered byte tables. Reads may run in one thread while another writes."""

    def get(self, table: int, key: bytes) -> bytes | None: ...

    def multi_get(self, table: int, keys: list[bytes]) -> list[bytes | None]:
        """Values in the order of ``keys``; None where a key is absent."""
        ...

    def scan(self, table: int, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` pairs with ``start <= key < stop``, in key order."""
        ...

    def scan_reverse(self, table: int, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` pairs with ``start <= key < stop``, the last first (newest-first reads)."""
        ...

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        """Apply ``batch`` atomically; with ``sync`` it is on stable storage on return."""
        ...

    def disk_bytes(self) -> int:
        """Bytes the backend's files take on disk (0 for memory)."""
        ...

    def close(self) -> None:
        """Release files and locks; idempotent."""
        ...


SCAN_PAGE: Final = 4096
"""Rows per scan when walking a whole range (open, stats, checkpoint)."""


def scan_all(kv: KeyValue, table: int, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every pair with ``start <= key < stop``, in key order, read a page at a time."""
    while True:
        rows = kv.scan(table, start, stop, SCAN_PAGE)
        yield from rows
        if len(rows) < SCAN_PAGE:
            return
        start = rows[-1][0] + b"\x00"
