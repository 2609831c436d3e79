"""The RocksDB backend against the store conformance suite, plus its low-memory options
(docs/architecture.md §6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgehub.store.kv import TABLE_NAMES
from edgehub.store.message_store import MessageStore
from edgehub.store.open import open_store
from edgehub.store.rocksdb import DEFAULT_TUNING, LOW_MEMORY_TUNING, RocksKeyValue, RocksTuning
from edgehub.testing.store_model import stateful_store_test
from edgehub.testing.store_suite import StoreConformance


def open_rocksdb(folder: Path, max_size_bytes: int | None) -> MessageStore:
    return open_store(folder, backend="rocksdb", max_size_bytes=max_size_bytes)


class TestRocksDBStore(StoreConformance):
    def open_at(self, folder: Path, max_size_bytes: int | None) -> MessageStore:
        return open_rocksdb(folder, max_size_bytes)


TestRocksDBStoreModel = stateful_store_test(open_rocksdb, max_examples=25)


def _options_sections(folder: Path) -> dict[str, dict[str, str]]:
    """The newest OPTIONS file RocksDB wrote, as section -> key -> value."""
    newest = max(folder.glob("OPTIONS-*"), key=lambda path: int(path.name.split("-")[1]))
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in newest.read_text().splitlines():
        header = re.match(r"\[(.+)\]", line.strip())
        if header:
            current = sections.setdefault(header.group(1), {})
        elif "=" in line:
            key, _, value = line.strip().partition("=")
            current[key] = value
    return sections


@pytest.mark.parametrize(("low_memory", "tuning"), [(True, LOW_MEMORY_TUNING), (False, DEFAULT_TUNING)])
def test_memory_options_apply_to_every_column_family(
    tmp_path: Path, low_memory: bool, tuning: RocksTuning,
) -> None:
    kv = RocksKeyValue(tmp_path, low_memory=low_memory)
    try:
        sections = _options_sections(tmp_path)
        assert kv.tuning == tuning
        for index, name in enumerate(("default", *TABLE_NAMES)):
            family = sections[f'CFOptions "{name}"']
            expected = kv.tuning.message_write_buffer_bytes if index == 1 else kv.tuning.write_buffer_bytes
            assert int(family["write_buffer_size"]) == expected, name
            assert int(family["max_write_buffer_number"]) == kv.tuning.max_write_buffers, name
        db = sections["DBOptions"]
        assert int(db["max_background_jobs"]) == kv.tuning.max_background_jobs
        assert int(db["max_open_files"]) == kv.tuning.max_open_files
        assert int(db["max_total_wal_size"]) == kv.tuning.max_total_wal_bytes
        assert int(db["db_write_buffer_size"]) == kv.tuning.total_write_buffer_bytes
        for table in range(len(TABLE_NAMES)):
            assert kv.property(table, "rocksdb.block-cache-capacity") == kv.tuning.block_cache_bytes
    finally:
        kv.close()


def test_low_memory_mode_is_small() -> None:
    assert LOW_MEMORY_TUNING.write_buffer_bytes <= 2 << 20
    assert LOW_MEMORY_TUNING.message_write_buffer_bytes <= 2 << 20
    assert LOW_MEMORY_TUNING.max_write_buffers <= 2
    assert LOW_MEMORY_TUNING.block_cache_bytes <= 8 << 20
    assert LOW_MEMORY_TUNING.max_background_jobs == 1


def test_open_store_passes_low_memory_through(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s", backend="rocksdb", low_memory=True)
    try:
        sections = _options_sections(tmp_path / "s")
        queues = sections['CFOptions "queues"']
        assert int(queues["write_buffer_size"]) == LOW_MEMORY_TUNING.write_buffer_bytes
    finally:
        store.close()


def test_second_open_of_the_same_folder_is_refused(tmp_path: Path) -> None:
    kv = RocksKeyValue(tmp_path, low_memory=True)
    try:
        with pytest.raises(Exception, match="lock"):
            RocksKeyValue(tmp_path, low_memory=True)
    finally:
        kv.close()
