"""The sessions table joins stores written before it existed: read-write adds it, read-only reads it empty."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

import pytest
from rocksdict import Options, Rdict

from edgehub.store.kv import SESSIONS, TABLE_NAMES
from edgehub.store.open import open_store
from edgehub.store.sqlite import DATABASE_FILE
from edgehub.testing.store_suite import UPSTREAM, bodies, item, to

BackendName = Literal["rocksdb", "sqlite"]


def _store_from_before_sessions(folder: Path, backend: BackendName) -> None:
    """A store with one message and a twin but no sessions table, as a hub before sessions left it."""
    store = open_store(folder, backend=backend)
    store.append([item(b"old", to(UPSTREAM))])
    store.put_twin("edge/filter", b"{}")
    store.close()
    name = TABLE_NAMES[SESSIONS]
    if backend == "sqlite":
        with sqlite3.connect(folder / DATABASE_FILE) as connection:
            connection.execute(f"DROP TABLE {name}")
        return
    families = {family: Options(raw_mode=True) for family in TABLE_NAMES}
    db = Rdict(str(folder), Options(raw_mode=True), column_families=families)
    db.drop_column_family(name)
    db.close()
    assert name not in Rdict.list_cf(str(folder), Options(raw_mode=True))


@pytest.mark.parametrize("backend", ["rocksdb", "sqlite"])
def test_store_without_sessions_table_opens_read_only_with_no_sessions(
    tmp_path: Path, backend: BackendName,
) -> None:
    folder = tmp_path / "s"
    _store_from_before_sessions(folder, backend)
    store = open_store(folder, backend=backend, read_only=True)
    try:
        assert store.get_session("edge/filter") is None
        assert store.session_keys() == []
        assert store.get_twin("edge/filter") == b"{}"
        assert bodies(store, UPSTREAM) == [b"old"]
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["rocksdb", "sqlite"])
def test_store_without_sessions_table_gets_it_when_opened_to_write(
    tmp_path: Path, backend: BackendName,
) -> None:
    folder = tmp_path / "s"
    _store_from_before_sessions(folder, backend)
    store = open_store(folder, backend=backend)
    try:
        assert bodies(store, UPSTREAM) == [b"old"]
        store.put_session("edge/filter", b"{}")
    finally:
        store.close()
    store = open_store(folder, backend=backend, read_only=True)
    try:
        assert store.get_session("edge/filter") == b"{}"
    finally:
        store.close()
