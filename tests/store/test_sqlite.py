"""The SQLite backend against the store conformance suite, plus its WAL, sync and locking rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgehub.errors import StoreError, StoreOpenError
from edgehub.store.kv import META, WriteBatch
from edgehub.store.message_store import MessageStore
from edgehub.store.open import open_store
from edgehub.store.sqlite import DATABASE_FILE, SqliteKeyValue
from edgehub.testing.store_model import stateful_store_test
from edgehub.testing.store_suite import UPSTREAM, StoreConformance, item, to


def open_sqlite(folder: Path, max_size_bytes: int | None) -> MessageStore:
    return open_store(folder, backend="sqlite", max_size_bytes=max_size_bytes)


class TestSqliteStore(StoreConformance):
    def open_at(self, folder: Path, max_size_bytes: int | None) -> MessageStore:
        return open_sqlite(folder, max_size_bytes)


TestSqliteStoreModel = stateful_store_test(open_sqlite, max_examples=25)


def _batch(key: bytes, value: bytes) -> WriteBatch:
    batch = WriteBatch()
    batch.put(META, key, value)
    return batch


def test_database_runs_in_wal_mode_and_fsyncs_only_sync_batches(tmp_path: Path) -> None:
    kv = SqliteKeyValue(tmp_path / DATABASE_FILE, low_memory=False)
    try:
        assert kv.pragma("journal_mode") == "wal"
        kv.write(_batch(b"a", b"1"), sync=True)
        assert kv.pragma("synchronous") == 2  # FULL: the WAL is fsynced at commit
        kv.write(_batch(b"b", b"2"), sync=False)
        assert kv.pragma("synchronous") == 1  # NORMAL: durable across a process crash
        assert kv.multi_get(META, [b"a", b"b", b"c"]) == [b"1", b"2", None]
    finally:
        kv.close()


@pytest.mark.parametrize(("low_memory", "cache_kib"), [(True, 2048), (False, 65536)])
def test_page_cache_follows_low_memory_mode(tmp_path: Path, low_memory: bool, cache_kib: int) -> None:
    kv = SqliteKeyValue(tmp_path / DATABASE_FILE, low_memory=low_memory)
    try:
        assert kv.pragma("cache_size") == -cache_kib
    finally:
        kv.close()


def test_second_writer_on_the_same_folder_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    kv = SqliteKeyValue(tmp_path / DATABASE_FILE, low_memory=True)
    with pytest.raises(StoreOpenError, match="locked by another process"):
        SqliteKeyValue(tmp_path / DATABASE_FILE, low_memory=True)
    kv.close()
    SqliteKeyValue(tmp_path / DATABASE_FILE, low_memory=True).close()


def test_read_only_connection_reads_and_refuses_writes(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path, None)
    store.append([item(b"a", to(UPSTREAM))])
    store.close()
    kv = SqliteKeyValue(tmp_path / DATABASE_FILE, low_memory=True, read_only=True)
    try:
        assert kv.scan(META, b"", b"\xff", 10)
        with pytest.raises(StoreError, match="read-only"):
            kv.write(_batch(b"x", b"y"), sync=False)
    finally:
        kv.close()


def test_closed_backend_refuses_reads(tmp_path: Path) -> None:
    kv = SqliteKeyValue(tmp_path / DATABASE_FILE, low_memory=True)
    kv.close()
    kv.close()
    with pytest.raises(StoreError, match="closed"):
        kv.get(META, b"a")
