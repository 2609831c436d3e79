"""The KeyValue contract, checked the same way against every backend (memory, RocksDB, SQLite)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgehub.store.kv import CHECKPOINTS, EXPIRY, MESSAGES, META, QUEUES, TABLE_NAMES, KeyValue, WriteBatch
from edgehub.store.memory import MemoryKeyValue
from edgehub.store.rocksdb import RocksKeyValue
from edgehub.store.sqlite import DATABASE_FILE, SqliteKeyValue

OPENERS: dict[str, Callable[[Path], KeyValue]] = {
    "memory": lambda _: MemoryKeyValue(),
    "rocksdb": lambda folder: RocksKeyValue(folder, low_memory=True),
    "sqlite": lambda folder: SqliteKeyValue(folder / DATABASE_FILE, low_memory=True),
}


@pytest.fixture(params=sorted(OPENERS))
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValue]:
    opened = OPENERS[request.param](tmp_path)
    yield opened
    opened.close()


def _ids(*numbers: int) -> list[bytes]:
    return [number.to_bytes(8, "big") for number in numbers]


def test_tables_are_separate(kv: KeyValue) -> None:
    batch = WriteBatch()
    for table in (QUEUES, CHECKPOINTS, EXPIRY, META):
        batch.put(table, b"k", TABLE_NAMES[table].encode())
    kv.write(batch, sync=False)
    assert [kv.get(table, b"k") for table in (QUEUES, CHECKPOINTS, EXPIRY, META)] == [
        b"queues", b"checkpoints", b"expiry", b"meta",
    ]


def test_scan_is_ordered_bounded_and_limited(kv: KeyValue) -> None:
    batch = WriteBatch()
    for key in (b"b\x00\x02", b"a", b"b", b"b\x00\x01", b"c"):
        batch.put(QUEUES, key, key.upper())
    kv.write(batch, sync=False)
    assert [key for key, _ in kv.scan(QUEUES, b"", b"\xff", 10)] == [
        b"a", b"b", b"b\x00\x01", b"b\x00\x02", b"c",
    ]
    assert kv.scan(QUEUES, b"b", b"c", 10) == [
        (b"b", b"B"), (b"b\x00\x01", b"B\x00\x01"), (b"b\x00\x02", b"B\x00\x02"),
    ]
    assert kv.scan(QUEUES, b"b\x00", b"c", 1) == [(b"b\x00\x01", b"B\x00\x01")]
    assert kv.scan(QUEUES, b"d", b"\xff", 10) == []


def test_message_keys_scan_as_numbers(kv: KeyValue) -> None:
    batch = WriteBatch()
    for key in _ids(300, 2, 1 << 40):
        batch.put(MESSAGES, key, b"body")
    kv.write(batch, sync=True)
    assert [key for key, _ in kv.scan(MESSAGES, b"", b"\xff", 10)] == _ids(2, 300, 1 << 40)
    assert [key for key, _ in kv.scan(MESSAGES, _ids(3)[0], _ids(1 << 40)[0], 10)] == _ids(300)
    assert kv.multi_get(MESSAGES, _ids(300, 5, 2)) == [b"body", None, b"body"]
    assert kv.multi_get(MESSAGES, []) == []


def test_write_applies_deletes_then_puts_atomically(kv: KeyValue) -> None:
    first = WriteBatch()
    first.put(EXPIRY, b"old", b"1")
    first.put(EXPIRY, b"kept", b"2")
    kv.write(first, sync=False)
    second = WriteBatch()
    second.delete(EXPIRY, b"old")
    second.delete(EXPIRY, b"never-there")
    second.put(EXPIRY, b"new", b"3")
    second.put(EXPIRY, b"kept", b"4")
    assert len(second) == 4
    kv.write(second, sync=True)
    assert kv.scan(EXPIRY, b"", b"\xff", 10) == [(b"kept", b"4"), (b"new", b"3")]


def test_multi_get_handles_more_keys_than_one_query_takes(kv: KeyValue) -> None:
    batch = WriteBatch()
    keys = [n.to_bytes(4, "big") for n in range(1200)]
    for key in keys[::2]:
        batch.put(QUEUES, key, key)
    kv.write(batch, sync=False)
    assert kv.multi_get(QUEUES, keys) == [key if n % 2 == 0 else None for n, key in enumerate(keys)]


def test_close_is_idempotent(kv: KeyValue) -> None:
    kv.close()
    kv.close()
    assert kv.disk_bytes() >= 0
