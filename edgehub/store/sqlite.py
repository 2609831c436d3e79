"""The SQLite backend (stdlib sqlite3, WAL): one table per KeyValue table, one transaction per batch.

For 32-bit ARM and ``storeBackend=sqlite`` (docs/architecture.md §3); bytes only, no records.
Only edgehub.store.open (called by the hub) constructs it.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Final

from edgehub.errors import StoreDamagedError, StoreError, StoreOpenError
from edgehub.store.kv import MESSAGES, SQLITE_FILE, TABLE_NAMES, StoreCorruptError, WriteBatch

if sys.platform != "win32":
    import fcntl

DATABASE_FILE: Final = SQLITE_FILE
LOCK_FILE: Final = "store.lock"
DEFAULT_CACHE_KIB: Final = 65536
"""Page cache per connection (two: the writer and the reader) when OptimizeForPerformance."""
LOW_MEMORY_CACHE_KIB: Final = 2048
"""Page cache per connection in low-memory mode (docs/architecture.md §6)."""
_MAX_ID: Final = (1 << 63) - 1
_IN_CHUNK: Final = 500
"""Keys per ``IN (...)`` query, well under SQLITE_MAX_VARIABLE_NUMBER (999 on old builds)."""
_CORRUPT_CODES: Final = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def _schema(name: str) -> str:
    if name == TABLE_NAMES[MESSAGES]:
        # Bodies are large rows: a rowid table keyed by the id keeps them off the
        # key b-tree (SQLite advises WITHOUT ROWID only for small rows).
        return f"CREATE TABLE IF NOT EXISTS {name} (k INTEGER PRIMARY KEY, v BLOB NOT NULL)"
    return f"CREATE TABLE IF NOT EXISTS {name} (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"


def _id_bound(key: bytes) -> int:
    """A bytes bound of the messages table as the integer id it sorts with (ids are 8-byte BE)."""
    return min(int.from_bytes(key.ljust(8, b"\x00")[:8], "big"), _MAX_ID)


def _open_error(path: Path, exc: sqlite3.Error) -> StoreOpenError:
    name = getattr(exc, "sqlite_errorname", "")
    if name in _CORRUPT_CODES or (not isinstance(exc, sqlite3.OperationalError)
                                  and isinstance(exc, sqlite3.DatabaseError)):
        return StoreCorruptError(str(path), f"{exc} ({name})")
    if name in {"SQLITE_BUSY", "SQLITE_LOCKED"}:
        return StoreOpenError(str(path), f"locked by another process ({exc})")
    if name in {"SQLITE_PERM", "SQLITE_READONLY", "SQLITE_CANTOPEN"}:
        return StoreOpenError(str(path), f"cannot open the database file, check permissions ({exc})")
    return StoreOpenError(str(path), f"{exc} ({name})")


def _lock_folder(path: Path) -> int | None:
    """Hold an exclusive flock so a second hub on the same store fails at open
    (SQLite alone would let two writers share it)."""
    if sys.platform == "win32":  # no flock: one hub per folder is then the operator's job
        return None
    lock = path.parent / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreOpenError(str(path), f"cannot create {lock}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StoreOpenError(str(path), f"locked by another process ({lock} is held)") from exc
    return fd


class SqliteKeyValue:
    """KeyValue over one SQLite database in WAL mode.

    One connection writes (under a lock, from any thread); a second one reads, so
    readers see the last committed batch and never wait for a commit's fsync.
    """

    def __init__(self, path: Path, *, low_memory: bool, read_only: bool = False) -> None:
        self.path = path
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        cache_kib = LOW_MEMORY_CACHE_KIB if low_memory else DEFAULT_CACHE_KIB
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        if not read_only:
            self._lock_fd = _lock_folder(path)
        try:
            if not read_only:
                self._writer = self._connect(f"file:{path}", cache_kib)
                self._writer.execute("PRAGMA journal_mode=WAL").fetchall()
                self._writer.execute("PRAGMA synchronous=NORMAL")
                for name in TABLE_NAMES:
                    self._writer.execute(_schema(name))
            self._reader = self._connect(f"file:{path}?mode=ro", cache_kib)
            self._reader.execute("PRAGMA query_only=1")
            self._reader.execute(f"SELECT count(*) FROM {TABLE_NAMES[0]}").fetchall()
            # Every page, index and record format checked (not index-to-table content, which
            # integrity_check adds at several times the cost); damage of any kind refuses the open.
            problems = [row[0] for row in self._reader.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                found = "; ".join(map(str, problems))
                raise StoreCorruptError(str(path), f"quick_check found damage: {found}")
            # Read-only on a store written before a table existed (twins): read it as empty.
            tables = self._reader.execute("SELECT name FROM sqlite_master WHERE type='table'")
            present = {row[0] for row in tables}
        except sqlite3.Error as exc:
            self.close()
            raise _open_error(path, exc) from exc
        except StoreCorruptError:
            self.close()
            raise
        self._absent = frozenset(table for table, name in enumerate(TABLE_NAMES) if name not in present)
        self._synchronous = "NORMAL"
        self._get = tuple(f"SELECT v FROM {name} WHERE k = ?" for name in TABLE_NAMES)
        self._scan = tuple(
            f"SELECT k, v FROM {name} WHERE k >= ? AND k < ? ORDER BY k LIMIT ?" for name in TABLE_NAMES
        )
        self._scan_reverse = tuple(
            f"SELECT k, v FROM {name} WHERE k >= ? AND k < ? ORDER BY k DESC LIMIT ?" for name in TABLE_NAMES
        )
        self._put = tuple(f"INSERT OR REPLACE INTO {name} (k, v) VALUES (?, ?)" for name in TABLE_NAMES)
        self._delete = tuple(f"DELETE FROM {name} WHERE k = ?" for name in TABLE_NAMES)

    @staticmethod
    def _connect(uri: str, cache_kib: int) -> sqlite3.Connection:
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA cache_size=-{cache_kib}")
        # No memory-mapped reads in either mode: through mmap a disk read error is a SIGBUS that
        # kills the hub, where read() gives an error the store reports (SQLITE_IOERR).
        connection.execute("PRAGMA mmap_size=0")
        connection.execute("PRAGMA busy_timeout=0")
        return connection

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreError(f"store at {self.path} is closed")
        return self._reader

    def _read_error(self, table: int, exc: sqlite3.Error) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "")
        if name in _CORRUPT_CODES or (not isinstance(exc, sqlite3.OperationalError)
                                      and isinstance(exc, sqlite3.DatabaseError)):
            return StoreDamagedError(str(self.path), TABLE_NAMES[table], f"{exc} ({name})")
        return StoreError(f"read of {TABLE_NAMES[table]} in {self.path} failed: {exc} ({name})")

    def get(self, table: int, key: bytes) -> bytes | None:
        if table in self._absent:
            return None
        arg: bytes | int = int.from_bytes(key, "big") if table == MESSAGES else key
        with self._read_lock:
            try:
                row = self._read().execute(self._get[table], (arg,)).fetchone()
            except sqlite3.Error as exc:
                raise self._read_error(table, exc) from exc
        return None if row is None else bytes(row[0])

    def multi_get(self, table: int, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        if table in self._absent:
            return [None] * len(keys)
        args: list[bytes] | list[int] = keys
        if table == MESSAGES:
            args = [int.from_bytes(key, "big") for key in keys]
        found: dict[bytes | int, bytes] = {}
        select = f"SELECT k, v FROM {TABLE_NAMES[table]} WHERE k IN "
        with self._read_lock:
            reader = self._read()
            for first in range(0, len(args), _IN_CHUNK):
                chunk = args[first:first + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                try:
                    found.update(reader.execute(f"{select}({marks})", chunk).fetchall())
                except sqlite3.Error as exc:
                    raise self._read_error(table, exc) from exc
        return [found.get(arg) for arg in args]

    def scan(self, table: int, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        return self._select(self._scan[table], table, start, stop, limit)

    def scan_reverse(self, table: int, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        return self._select(self._scan_reverse[table], table, start, stop, limit)

    def _select(
        self, query: str, table: int, start: bytes, stop: bytes, limit: int,
    ) -> list[tuple[bytes, bytes]]:
        if table in self._absent:
            return []
        try:
            if table == MESSAGES:
                with self._read_lock:
                    rows = self._read().execute(query, (_id_bound(start), _id_bound(stop), limit)).fetchall()
                return [(key.to_bytes(8, "big"), value) for key, value in rows]
            with self._read_lock:
                found: list[tuple[bytes, bytes]] = self._read().execute(
                    query, (start, stop, limit)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(table, exc) from exc
        return found

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        with self._write_lock:
            writer = self._writer
            if writer is None:
                raise StoreError(f"store at {self.path} is closed or read-only")
            try:
                synchronous = "FULL" if sync else "NORMAL"
                if synchronous != self._synchronous:  # FULL: the WAL is fsynced at this commit
                    writer.execute(f"PRAGMA synchronous={synchronous}")
                    self._synchronous = synchronous
                writer.execute("BEGIN")
                for table, deletes in enumerate(batch.deletes):
                    if deletes:
                        keys = [(int.from_bytes(k, "big"),) for k in deletes] if table == MESSAGES else [
                            (k,) for k in deletes
                        ]
                        writer.executemany(self._delete[table], keys)
                for table, puts in enumerate(batch.puts):
                    if puts:
                        rows = [(int.from_bytes(k, "big"), v) for k, v in puts] if table == MESSAGES else puts
                        writer.executemany(self._put[table], rows)
                writer.execute("COMMIT")
            except sqlite3.Error as exc:
                if writer.in_transaction:
                    writer.execute("ROLLBACK")
                if getattr(exc, "sqlite_errorname", "") in _CORRUPT_CODES:
                    raise StoreDamagedError(str(self.path), "", str(exc)) from exc
                raise StoreError(f"write to {self.path} failed: {exc}") from exc

    def pragma(self, name: str) -> object:
        """A PRAGMA's value on the writing connection (journal_mode, synchronous, cache_size)."""
        with self._write_lock:
            connection = self._writer or self._read()
            value: object = connection.execute(f"PRAGMA {name}").fetchone()[0]
            return value

    def disk_bytes(self) -> int:
        folder = self.path.parent
        return sum(
            file.stat().st_size for file in folder.glob(f"{self.path.name}*") if file.is_file()
        )

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            for connection in (self._reader, self._writer):
                if connection is not None:
                    connection.close()
            self._reader = self._writer = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None
