"""Opening the durable store: backend choice, refusal of broken stores, quarantine.

docs/architecture.md §1 invariant 8: a store that cannot be opened raises StoreOpenError (or,
with ``storeRecovery=quarantine``, is moved aside loudly); never a memory fallback.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Final, Literal

from edgehub.errors import StoreDamagedError, StoreOpenError
from edgehub.store.kv import SQLITE_FILE as DATABASE_FILE
from edgehub.store.kv import KeyValue, StoreCorruptError
from edgehub.store.message_store import MessageStore
from edgehub.store.verify import check_rocksdb_files

log = logging.getLogger(__name__)

Backend = Literal["auto", "rocksdb", "sqlite"]
Recovery = Literal["fail", "quarantine"]
QUARANTINE_MARK = ".corrupt-"
RECENT_MESSAGES: Final = 32768
"""Appended messages not yet delivered kept in memory, so pumps that keep up or lag by less read
and checkpoint them without a store lookup (not in low-memory mode; their bodies are bounded by
edgehub.store.message_store.RECENT_BYTES too)."""


def rocksdb_available() -> bool:
    """True where the rocksdict wheel is installed (not on 32-bit ARM, docs/architecture.md §3)."""
    return importlib.util.find_spec("rocksdict") is not None


def _found_backend(folder: Path) -> Literal["rocksdb", "sqlite"] | None:
    """The kind of store already in ``folder``; StoreCorruptError when only debris is left."""
    if (folder / "CURRENT").exists():
        return "rocksdb"
    if (folder / DATABASE_FILE).exists():
        return "sqlite"
    if not folder.is_dir():
        return None
    names = {entry.name for entry in folder.iterdir()}
    if any(name.startswith("MANIFEST-") or name.endswith(".sst") for name in names):
        raise StoreCorruptError(str(folder), "RocksDB files without CURRENT")
    if f"{DATABASE_FILE}-wal" in names:
        raise StoreCorruptError(str(folder), f"{DATABASE_FILE}-wal without {DATABASE_FILE}")
    return None


def choose_backend(
    folder: Path, backend: Backend, *, low_memory: bool = False,
) -> Literal["rocksdb", "sqlite"]:
    """The backend to open ``folder`` with: the kind already there, else the requested one. "auto"
    creates RocksDB where rocksdict imports, except in low-memory mode, which creates SQLite: it
    idles about 9 MiB smaller, RocksDB's library alone keeping about 8 MiB resident
    (docs/architecture.md §6)."""
    found = _found_backend(folder)
    if backend == "auto":
        chosen = found or ("rocksdb" if rocksdb_available() and not low_memory else "sqlite")
    elif found is not None and found != backend:
        raise StoreOpenError(
            str(folder),
            f"it holds a {found} store but storeBackend={backend}; set storeBackend={found} or auto",
        )
    else:
        chosen = backend
    if chosen == "rocksdb" and not rocksdb_available():
        raise StoreOpenError(str(folder), "it needs RocksDB but rocksdict is not installed on this machine")
    return chosen


def _open_kv(
    folder: Path, backend: Literal["rocksdb", "sqlite"], *, low_memory: bool, read_only: bool,
) -> KeyValue:
    if backend == "rocksdb":
        from edgehub.store.rocksdb import RocksKeyValue  # absent on 32-bit ARM

        if (folder / "CURRENT").exists() or any(folder.glob("MANIFEST-*")):
            check_rocksdb_files(folder)  # before RocksDB may delete files a damaged MANIFEST omits
        return RocksKeyValue(folder, low_memory=low_memory, read_only=read_only)
    from edgehub.store.sqlite import SqliteKeyValue  # sqlite3 only for an SQLite store

    return SqliteKeyValue(folder / DATABASE_FILE, low_memory=low_memory, read_only=read_only)


def _open(
    folder: Path, chosen: Literal["rocksdb", "sqlite"], *,
    sync: bool, low_memory: bool, max_size_bytes: int | None, read_only: bool,
) -> MessageStore:
    if read_only:
        if _found_backend(folder) is None:
            raise StoreOpenError(str(folder), "no store there")
    else:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreOpenError(str(folder), f"cannot create the folder: {exc.strerror}") from exc
    kv = _open_kv(folder, chosen, low_memory=low_memory, read_only=read_only)
    try:
        store = MessageStore(
            kv, max_size_bytes=max_size_bytes, sync=sync, read_only=read_only, location=str(folder),
            recent_messages=0 if low_memory or read_only else RECENT_MESSAGES,
        )
    except StoreDamagedError as exc:  # the index tables and bodies are read (checksums verified) here
        kv.close()
        raise StoreCorruptError(str(folder), f"{exc.table} table: {exc.reason}") from exc
    except BaseException:
        kv.close()
        raise
    log.info(
        "opened %s store at %s: %d messages, %d bytes, %d queues (sync=%s, low_memory=%s)",
        chosen, folder, store.message_count(), store.size_bytes(), len(store.queues()), sync, low_memory,
    )
    return store


def quarantine(folder: Path) -> Path:
    """Move a broken store's files aside to ``<folder>.corrupt-<UTC time>``; return where.

    Only files move: subfolders such as ``certs/`` (the StorageFolder is shared with
    the dev certificates) stay. When no sibling folder can take the files (``folder``
    is a mount point, as ``/data`` in a container) they go to
    ``<folder>/.corrupt-<UTC time>/`` instead.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    files = [entry for entry in folder.iterdir() if not entry.is_dir()]
    try:
        return _move_files(folder, files, _unused(folder.with_name(f"{folder.name}{QUARANTINE_MARK}{stamp}")))
    except OSError:  # no sibling folder can take them: a mount point, or another filesystem
        return _move_files(folder, files, _unused(folder / f"{QUARANTINE_MARK}{stamp}"))


def _move_files(folder: Path, files: list[Path], aside: Path) -> Path:
    """Move ``files`` into the new folder ``aside``, all or (putting them back) none."""
    aside.mkdir()
    try:
        for entry in files:
            os.replace(entry, aside / entry.name)
    except OSError:
        for moved in aside.iterdir():
            os.replace(moved, folder / moved.name)
        aside.rmdir()
        raise
    return aside


def _unused(path: Path) -> Path:
    """``path``, or ``path-1``, ``path-2``... whichever does not exist yet."""
    candidate = path
    suffix = 0
    while candidate.exists():
        suffix += 1
        candidate = path.with_name(f"{path.name}-{suffix}")
    return candidate


def open_store(
    folder: Path,
    *,
    backend: Backend = "auto",
    sync: bool = False,
    low_memory: bool = False,
    max_size_bytes: int | None = None,
    recovery: Recovery = "fail",
    read_only: bool = False,
) -> MessageStore:
    """Open (or create) the store in ``folder``, a folder the store owns alone.

    ``backend`` "auto" keeps the kind of store already there, else RocksDB when
    rocksdict imports and ``low_memory`` is off, else SQLite. Raises StoreOpenError when the store is corrupt,
    locked by another process, of a newer format, or not accessible; with
    ``recovery="quarantine"`` a corrupt one (only) is moved aside with a warning
    and an empty store opened. ``read_only`` is for ``edgehub stats`` on a store
    no hub holds; it never creates or repairs anything.
    """
    chosen: Literal["rocksdb", "sqlite"] | None = None
    try:
        chosen = choose_backend(folder, backend, low_memory=low_memory)
        return _open(
            folder, chosen,
            sync=sync, low_memory=low_memory, max_size_bytes=max_size_bytes, read_only=read_only,
        )
    except StoreCorruptError as exc:
        if recovery != "quarantine" or read_only:
            raise
        aside = quarantine(folder)
        log.warning(
            "store at %s is corrupt (%s); moved it to %s and starting with an empty store",
            folder, exc.reason, aside,
        )
        # Same kind as before, so a quarantined SQLite store is not replaced by RocksDB.
        return _open(
            folder, chosen or choose_backend(folder, backend, low_memory=low_memory),
            sync=sync, low_memory=low_memory, max_size_bytes=max_size_bytes, read_only=False,
        )
