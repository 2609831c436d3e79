"""open_store: backend choice, loud refusal of broken stores, quarantine
(docs/architecture.md §1 invariant 8)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Literal

import pytest

from edgehub.errors import StoreError, StoreOpenError
from edgehub.store import open as store_open
from edgehub.store.kv import META, StoreCorruptError, WriteBatch
from edgehub.store.open import choose_backend, open_store, quarantine
from edgehub.store.records import FORMAT_VERSION, META_FORMAT, U32
from edgehub.store.sqlite import DATABASE_FILE
from edgehub.testing.store_suite import UPSTREAM, bodies, item, to

BackendName = Literal["rocksdb", "sqlite"]
BACKENDS: tuple[BackendName, ...] = ("rocksdb", "sqlite")


def _filled(folder: Path, backend: BackendName) -> None:
    store = open_store(folder, backend=backend)
    store.append([item(b"before", to(UPSTREAM))])
    store.close()


def _corrupt(folder: Path, backend: BackendName) -> None:
    if backend == "rocksdb":
        for table in folder.glob("*.sst"):
            table.write_bytes(os.urandom(table.stat().st_size))
        (folder / "CURRENT").write_bytes(b"\x00not a manifest name")
    else:
        database = folder / DATABASE_FILE
        database.write_bytes(os.urandom(database.stat().st_size))


def test_auto_picks_rocksdb_where_rocksdict_imports(tmp_path: Path) -> None:
    assert store_open.rocksdb_available()
    assert choose_backend(tmp_path / "new", "auto") == "rocksdb"


def test_auto_creates_sqlite_in_low_memory_mode_and_keeps_an_existing_rocksdb_store(tmp_path: Path) -> None:
    assert choose_backend(tmp_path / "new", "auto", low_memory=True) == "sqlite"
    existing = tmp_path / "existing"
    open_store(existing, backend="rocksdb").close()
    assert choose_backend(existing, "auto", low_memory=True) == "rocksdb"
    store = open_store(existing, low_memory=True)
    store.close()
    assert (existing / "CURRENT").exists()
    assert choose_backend(tmp_path / "new", "rocksdb", low_memory=True) == "rocksdb"


def test_auto_picks_sqlite_without_rocksdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_open, "rocksdb_available", lambda: False)
    store = open_store(tmp_path / "s")
    store.close()
    assert (tmp_path / "s" / DATABASE_FILE).exists()


def test_auto_keeps_the_kind_of_store_already_there(tmp_path: Path) -> None:
    _filled(tmp_path / "s", "sqlite")
    store = open_store(tmp_path / "s", backend="auto")
    try:
        assert bodies(store, UPSTREAM) == [b"before"]
    finally:
        store.close()


def test_a_store_of_the_other_kind_is_refused_not_shadowed(tmp_path: Path) -> None:
    _filled(tmp_path / "s", "sqlite")
    with pytest.raises(StoreOpenError, match="storeBackend=sqlite"):
        open_store(tmp_path / "s", backend="rocksdb")


def test_rocksdb_store_without_rocksdict_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _filled(tmp_path / "s", "rocksdb")
    monkeypatch.setattr(store_open, "rocksdb_available", lambda: False)
    with pytest.raises(StoreOpenError, match="rocksdict is not installed"):
        open_store(tmp_path / "s")


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_store_raises_store_open_error(tmp_path: Path, backend: BackendName) -> None:
    _filled(tmp_path / "s", backend)
    _corrupt(tmp_path / "s", backend)
    with pytest.raises(StoreCorruptError) as raised:
        open_store(tmp_path / "s", backend=backend)
    assert isinstance(raised.value, StoreOpenError)
    assert str(tmp_path / "s") in str(raised.value)


def test_rocksdb_files_without_current_are_corrupt_not_a_new_store(tmp_path: Path) -> None:
    _filled(tmp_path / "s", "rocksdb")
    (tmp_path / "s" / "CURRENT").unlink()
    with pytest.raises(StoreCorruptError, match="without CURRENT"):
        open_store(tmp_path / "s")


@pytest.mark.parametrize("backend", BACKENDS)
def test_quarantine_moves_a_corrupt_store_aside_and_starts_empty(
    tmp_path: Path, backend: BackendName, caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "s"
    _filled(folder, backend)
    _corrupt(folder, backend)
    (folder / "certs").mkdir()  # the StorageFolder also holds the dev certificates
    (folder / "certs" / "dev-ca.pem").write_text("ca")
    with caplog.at_level(logging.WARNING, logger="edgehub.store.open"):
        store = open_store(folder, backend="auto", recovery="quarantine")
    try:
        [aside] = tmp_path.glob("s.corrupt-*")
        assert any(aside.iterdir())
        assert store.queues() == []
        assert store.message_count() == 0
        store.append([item(b"after", to(UPSTREAM))])
        assert bodies(store, UPSTREAM) == [b"after"]
        assert choose_backend(folder, "auto") == backend
        assert (folder / "certs" / "dev-ca.pem").read_text() == "ca"
    finally:
        store.close()
    [record] = caplog.records
    assert str(folder) in record.getMessage()
    assert str(aside) in record.getMessage()


def test_quarantine_uses_a_folder_inside_when_no_sibling_can_take_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "s"
    _filled(folder, "sqlite")
    real_replace = os.replace

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        if not Path(target).is_relative_to(folder):
            raise OSError(errno.EXDEV, "Invalid cross-device link")  # a mount point, as /data
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    aside = quarantine(folder)
    assert aside.parent == folder
    assert (aside / DATABASE_FILE).exists()
    assert not (folder / DATABASE_FILE).exists()
    assert not list(tmp_path.glob("s.corrupt-*"))
    assert quarantine(folder) != aside  # a second quarantine leaves the first in place
    assert (aside / DATABASE_FILE).exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_newer_format_is_refused_and_never_quarantined(tmp_path: Path, backend: BackendName) -> None:
    folder = tmp_path / "s"
    store = open_store(folder, backend=backend)
    batch = WriteBatch()
    batch.put(META, META_FORMAT, U32.pack(FORMAT_VERSION + 1))
    store.kv.write(batch, sync=True)
    store.close()
    with pytest.raises(StoreOpenError, match="newer"):
        open_store(folder, backend=backend, recovery="quarantine")
    assert not list(tmp_path.glob("s.corrupt-*"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_held_by_another_hub_is_refused_and_never_quarantined(
    tmp_path: Path, backend: BackendName,
) -> None:
    folder = tmp_path / "s"
    held = open_store(folder, backend=backend)
    try:
        with pytest.raises(StoreOpenError, match="lock") as raised:
            open_store(folder, backend=backend, recovery="quarantine")
        assert not isinstance(raised.value, StoreCorruptError)
        assert not list(tmp_path.glob("s.corrupt-*"))
    finally:
        held.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unreadable_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir(mode=0o000)
    try:
        with pytest.raises(StoreOpenError):
            open_store(folder / "store", backend="sqlite")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_only_reads_a_store_and_refuses_writes(tmp_path: Path, backend: BackendName) -> None:
    folder = tmp_path / "s"
    _filled(folder, backend)
    store = open_store(folder, read_only=True)
    try:
        assert bodies(store, UPSTREAM) == [b"before"]
        assert store.stats().message_count == 1
        with pytest.raises(StoreError, match="read-only"):
            store.append([item(b"x", to(UPSTREAM))])
    finally:
        store.close()


def test_read_only_never_creates_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreOpenError, match="no store"):
        open_store(tmp_path / "missing", read_only=True)
    assert not (tmp_path / "missing").exists()


def test_read_only_never_quarantines(tmp_path: Path) -> None:
    _filled(tmp_path / "s", "sqlite")
    _corrupt(tmp_path / "s", "sqlite")
    with pytest.raises(StoreCorruptError):
        open_store(tmp_path / "s", read_only=True, recovery="quarantine")
    assert not list(tmp_path.glob("s.corrupt-*"))
