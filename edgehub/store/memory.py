"""The in-memory backend: sorted dict tables behind the KeyValue contract, and MemoryStore.

For tests and fakes only; it is never durable and the hub never falls back to it
(docs/architecture.md §1 invariant 8).
"""

from __future__ import annotations

import bisect
import threading

from edgehub.store.kv import TABLE_NAMES, WriteBatch
from edgehub.store.message_store import MessageStore


class MemoryKeyValue:
    """KeyValue over one dict and one sorted key list per table.

    It outlives the MessageStore over it, so tests can "reopen" a store by
    building a new MessageStore on the same instance.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[dict[bytes, bytes], ...] = tuple({} for _ in TABLE_NAMES)
        self._keys: tuple[list[bytes], ...] = tuple([] for _ in TABLE_NAMES)
        self.writes = 0
        """How many batches were written (group-commit tests count them)."""

    def get(self, table: int, key: bytes) -> bytes | None:
        return self._values[table].get(key)

    def multi_get(self, table: int, keys: list[bytes]) -> list[bytes | None]:
        values = self._values[table]
        return [values.get(key) for key in keys]

    def scan(self, table: int, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        with self._lock:
            keys = self._keys[table]
            values = self._values[table]
            low = bisect.bisect_left(keys, start)
            high = min(bisect.bisect_left(keys, stop, low), low + limit)
            return [(key, values[key]) for key in keys[low:high]]

    def scan_reverse(self, table: int, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        with self._lock:
            keys = self._keys[table]
            values = self._values[table]
            high = bisect.bisect_left(keys, stop)
            low = max(bisect.bisect_left(keys, start, 0, high), high - limit)
            return [(key, values[key]) for key in reversed(keys[low:high])]

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        with self._lock:
            for table, deletes in enumerate(batch.deletes):
                values, keys = self._values[table], self._keys[table]
                for key in deletes:
                    if values.pop(key, None) is not None:
                        del keys[bisect.bisect_left(keys, key)]
            for table, puts in enumerate(batch.puts):
                values, keys = self._values[table], self._keys[table]
                for key, value in puts:
                    if key not in values:
                        if not keys or key > keys[-1]:
                            keys.append(key)
                        else:
                            bisect.insort(keys, key)
                    values[key] = value
            self.writes += 1

    def disk_bytes(self) -> int:
        return 0

    def close(self) -> None:
        return None


class MemoryStore(MessageStore):
    """A MessageStore in memory: ``MemoryStore()`` for tests of pumps, heads and the hub."""

    def __init__(
        self, *, max_size_bytes: int | None = None, kv: MemoryKeyValue | None = None,
    ) -> None:
        self._memory = kv if kv is not None else MemoryKeyValue()
        super().__init__(self._memory, max_size_bytes=max_size_bytes)

    @property
    def kv(self) -> MemoryKeyValue:
        return self._memory
