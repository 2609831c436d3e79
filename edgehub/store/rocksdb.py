"""The RocksDB backend (rocksdict): one column family per table, low-memory options (docs/architecture.md §6).

Bytes in, bytes out behind the KeyValue contract; it knows nothing of records.
Only edgehub.store.open (called by the hub) constructs it.

Integrity (docs/architecture.md §1 invariant 8): paranoid checks, checksums verified on every
read, a WAL that tolerates only the torn last record a crash leaves, and every read error
(RocksDB's ``Corruption: ...`` status, also from an iterator, which rocksdict would otherwise
end silently) raised as StoreDamagedError naming the table. A clean close records the
MANIFEST's name and size (edgehub.store.verify) so that a truncated MANIFEST is refused at the
next open instead of RocksDB deleting the data files it no longer lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteOptions,
)
from rocksdict import WriteBatch as RocksWriteBatch

from edgehub.errors import StoreDamagedError, StoreError, StoreOpenError
from edgehub.store.kv import MESSAGES, TABLE_NAMES, StoreCorruptError, WriteBatch
from edgehub.store.verify import record_clean_close

MIB: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class RocksTuning:
    """Memory-relevant RocksDB options; applied to the DB and to EVERY column family.

    edgeHub applies its small-memory options to the DB only, so each column family
    keeps 64 MiB write buffers on 64-bit (docs/architecture.md §6); here both get them.
    """

    write_buffer_bytes: int
    message_write_buffer_bytes: int
    max_write_buffers: int
    total_write_buffer_bytes: int
    block_cache_bytes: int
    max_open_files: int
    max_background_jobs: int
    max_total_wal_bytes: int


DEFAULT_TUNING: Final = RocksTuning(
    write_buffer_bytes=16 * MIB,
    message_write_buffer_bytes=64 * MIB,
    max_write_buffers=3,
    total_write_buffer_bytes=256 * MIB,
    block_cache_bytes=64 * MIB,
    max_open_files=512,
    max_background_jobs=min(4, os.cpu_count() or 1),
    max_total_wal_bytes=256 * MIB,
)
LOW_MEMORY_TUNING: Final = RocksTuning(
    write_buffer_bytes=1 * MIB,
    message_write_buffer_bytes=2 * MIB,
    max_write_buffers=2,
    total_write_buffer_bytes=8 * MIB,
    block_cache_bytes=4 * MIB,
    max_open_files=32,
    max_background_jobs=1,
    max_total_wal_bytes=16 * MIB,
)


def _table_options(tuning: RocksTuning, cache: Cache, write_buffer_bytes: int) -> Options:
    options = Options(raw_mode=True)
    options.set_write_buffer_size(write_buffer_bytes)
    options.set_max_write_buffer_number(tuning.max_write_buffers)
    options.set_compression_type(DBCompressionType.lz4())
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_bloom_filter(10, False)
    table.set_cache_index_and_filter_blocks(True)  # index and filters count against the cache
    options.set_block_based_table_factory(table)
    return options


def _db_options(tuning: RocksTuning, cache: Cache, *, create: bool) -> Options:
    options = _table_options(tuning, cache, tuning.write_buffer_bytes)  # also the default family's
    options.create_if_missing(create)
    options.create_missing_column_families(create)
    options.set_db_write_buffer_size(tuning.total_write_buffer_bytes)
    options.set_max_open_files(tuning.max_open_files)
    options.set_max_background_jobs(tuning.max_background_jobs)
    options.set_max_total_wal_size(tuning.max_total_wal_bytes)
    options.set_keep_log_file_num(2)
    options.set_max_log_file_size(MIB)
    # A crash or power cut tears at most the last WAL record (and leaves zeroed preallocated
    # bytes): tolerated. Any other WAL damage refuses the open (StoreCorruptError) instead of
    # replaying up to it and dropping every acknowledged write after it, as point-in-time
    # recovery would without a word; skip-any-corrupted would drop them anywhere.
    options.set_wal_recovery_mode(DBRecoveryMode.tolerate_corrupted_tail_records())
    # A missing or wrong-sized SST, a bad MANIFEST record, a background read error: all fail
    # (the default, stated because the store's promise rests on it).
    options.set_paranoid_checks(True)
    return options


def _is_corruption(text: str) -> bool:
    return "Corruption" in text or ("MANIFEST" in text and "No such file" in text)


def _open_error(path: Path, exc: Exception) -> StoreOpenError:
    text = str(exc)
    if _is_corruption(text):
        return StoreCorruptError(str(path), text)
    if "lock" in text.lower():
        return StoreOpenError(str(path), f"locked by another process or hub ({text})")
    if "Permission denied" in text:
        return StoreOpenError(str(path), f"permission denied ({text})")
    return StoreOpenError(str(path), text)


class RocksKeyValue:
    """KeyValue over one RocksDB database with a column family per table."""

    def __init__(self, path: Path, *, low_memory: bool, read_only: bool = False, create: bool = True) -> None:
        self.path = path
        self.tuning = LOW_MEMORY_TUNING if low_memory else DEFAULT_TUNING
        tuning = self.tuning
        cache = Cache(tuning.block_cache_bytes)  # one cache shared by every family
        families = {
            name: _table_options(
                tuning, cache,
                tuning.message_write_buffer_bytes if index == MESSAGES else tuning.write_buffer_bytes,
            )
            for index, name in enumerate(TABLE_NAMES)
        }
        access = AccessType.read_only(False) if read_only else AccessType.read_write()
        try:
            if read_only:
                # A store written before a table existed (twins) lacks its family; read-only
                # opens what is there and reads the missing table as empty. Read-write
                # creates missing families (create_missing_column_families).
                present = set(Rdict.list_cf(str(path), Options(raw_mode=True)))
                families = {name: options for name, options in families.items() if name in present}
            self._db: Rdict | None = Rdict(
                str(path), _db_options(self.tuning, cache, create=create and not read_only),
                column_families=families, access_type=access,
            )
            db = self._db
            self._tables = tuple(
                db.get_column_family(name) if name in families else None for name in TABLE_NAMES
            )
            self._handles = tuple(
                db.get_column_family_handle(name) if name in families else None for name in TABLE_NAMES
            )
        except Exception as exc:  # rocksdict raises bare Exception with RocksDB's status text
            raise _open_error(path, exc) from exc
        self._sync_write = WriteOptions()
        self._sync_write.sync = True
        self._async_write = WriteOptions()
        self._read_only = read_only

    def _read_error(self, table: int, exc: Exception) -> StoreError:
        text = str(exc)
        if _is_corruption(text):
            return StoreDamagedError(str(self.path), TABLE_NAMES[table], text)
        return StoreError(f"read of {TABLE_NAMES[table]} in {self.path} failed: {text}")

    def get(self, table: int, key: bytes) -> bytes | None:
        family = self._tables[table]
        if family is None:
            return None
        try:
            value: bytes | None = family.get(key)
        except Exception as exc:  # rocksdict raises bare Exception with RocksDB's status text
            del family  # the traceback keeps this frame: a live family handle keeps the DB open
            raise self._read_error(table, exc) from exc
        return value

    def multi_get(self, table: int, keys: list[bytes]) -> list[bytes | None]:
        family = self._tables[table]
        if not keys:
            return []
        if family is None:
            return [None] * len(keys)
        try:
            values = family.get(keys)  # type: ignore[arg-type]  # stub's key list is invariant
        except Exception as exc:  # rocksdict raises bare Exception with RocksDB's status text
            del family  # see get
            raise self._read_error(table, exc) from exc
        return cast("list[bytes | None]", values)

    def scan(self, table: int, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        family = self._tables[table]
        if family is None:
            return []
        bounds = ReadOptions()
        bounds.set_iterate_upper_bound(stop)
        rows = family.iter(bounds)
        found: list[tuple[bytes, bytes]] = []
        try:
            rows.seek(start)
            while rows.valid() and len(found) < limit:
                found.append((rows.key(), rows.value()))
                rows.next()
            # An iterator that hits a damaged block just turns invalid: only its status tells
            # a short read from the end of the range (issue 15: a damaged queues SST read as
            # half the queue, silently).
            rows.status()
        except Exception as exc:  # rocksdict raises bare Exception with RocksDB's status text
            del rows, family  # see get: an iterator keeps the DB open too
            raise self._read_error(table, exc) from exc
        return found

    def scan_reverse(self, table: int, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        family = self._tables[table]
        if family is None or limit <= 0 or start >= stop:
            return []
        # rocksdict ignores iterate_lower_bound, and a backward iterator that runs out of keys
        # in [start, stop) walks on through every tombstone below start (a queue drained newest
        # first leaves runs of them). So a forward read first: fewer than limit keys are the
        # answer; else the backward read finds limit keys without ever passing start.
        forward = self.scan(table, start, stop, limit)
        if len(forward) < limit:
            forward.reverse()
            return forward
        rows = family.iter()
        found: list[tuple[bytes, bytes]] = []
        try:
            rows.seek_for_prev(stop)  # the last key <= stop; stop itself is excluded below
            while rows.valid() and len(found) < limit:
                key: bytes = rows.key()
                if key < start:
                    break
                if key < stop:
                    found.append((key, rows.value()))
                rows.prev()
            rows.status()
        except Exception as exc:  # rocksdict raises bare Exception with RocksDB's status text
            del rows, family  # see get
            raise self._read_error(table, exc) from exc
        return found

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        rocks = RocksWriteBatch(raw_mode=True)
        handles = self._handles
        if self._db is None or None in handles:  # closed, or read-only without every family
            raise StoreError(f"store at {self.path} is closed or read-only")
        for table, deletes in enumerate(batch.deletes):
            handle = handles[table]
            for key in deletes:
                rocks.delete(key, handle)
        for table, puts in enumerate(batch.puts):
            handle = handles[table]
            for key, value in puts:
                rocks.put(key, value, handle)
        try:
            self._db.write(rocks, self._sync_write if sync else self._async_write)
        except Exception as exc:  # rocksdict raises bare Exception with RocksDB's status text
            if _is_corruption(str(exc)):  # a background read hit damage: RocksDB refuses writes now
                raise StoreDamagedError(str(self.path), "", str(exc)) from exc
            raise StoreError(f"write to {self.path} failed: {exc}") from exc

    def property(self, table: int, name: str) -> int | None:
        """A RocksDB integer property of one family (e.g. ``rocksdb.block-cache-capacity``)."""
        family = self._tables[table]
        return None if family is None else family.property_int_value(name)

    def disk_bytes(self) -> int:
        return sum(entry.stat().st_size for entry in os.scandir(self.path) if entry.is_file())

    def close(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        # Family handles keep the database open: drop them before closing it.
        self._tables = ()
        self._handles = ()
        try:
            db.close()  # flushes the memtables: may fail on a full disk
        except Exception as exc:  # rocksdict raises bare Exception with RocksDB's status text
            raise StoreError(f"closing the store at {self.path} failed: {exc}") from exc
        if not self._read_only:
            record_clean_close(self.path)
