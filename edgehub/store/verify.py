"""Store integrity checks at open: the RocksDB files before RocksDB sees them, the bodies after.

Reads and stats files and tables, never repairs or deletes anything (docs/architecture.md §1
invariant 8); the consistency of the index tables is checked where they are read, in
edgehub.store.inventory.count_live.

Why a witness file: RocksDB reads a truncated MANIFEST as a shorter history without an error,
then deletes every data file that history does not list (issue 15: 20,000 queued messages
became an empty store). RocksDB syncs the MANIFEST at every change and a clean close changes
nothing after it, so its size at a clean close is a lower bound for as long as it is CURRENT.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Final

from edgehub.store.kv import MESSAGES, SCAN_PAGE, KeyValue, StoreCorruptError

log = logging.getLogger(__name__)

CLEAN_CLOSE_FILE: Final = "EDGEHUB-CLEAN-CLOSE"
"""JSON ``{"manifest": name, "bytes": size}``, written after each clean close of a RocksDB store."""
_MANIFEST_NAME: Final = re.compile(r"MANIFEST-[0-9]+")
VERIFY_BODIES_UP_TO_BYTES: Final = 64 << 20
"""Live record bytes up to which open reads every body (checksums verified, count compared);
a larger store has a sample read instead, and damage found later is handled at run time."""
BODY_SAMPLE: Final = 256
"""Bodies read at open in a store above VERIFY_BODIES_UP_TO_BYTES: evenly spread over the ids."""


def record_clean_close(folder: Path) -> None:
    """Write the CURRENT MANIFEST's name and size beside it (after RocksDB closed). Best
    effort: a failure only leaves the next open without this check, said in the log."""
    try:
        name = (folder / "CURRENT").read_text().strip()
        size = (folder / name).stat().st_size
        temporary = folder / f"{CLEAN_CLOSE_FILE}.tmp"
        with open(temporary, "w") as out:
            json.dump({"manifest": name, "bytes": size}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, folder / CLEAN_CLOSE_FILE)
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        log.warning("store at %s: cannot record the clean close (%s); the next open skips the MANIFEST check",
                    folder, exc)


def check_rocksdb_files(folder: Path) -> None:
    """Refuse (StoreCorruptError) a RocksDB store whose CURRENT is unreadable, names a missing
    MANIFEST, or whose MANIFEST is shorter than at the last clean close. Call before opening."""
    location = str(folder)
    try:
        current = (folder / "CURRENT").read_bytes()
    except OSError as exc:
        raise StoreCorruptError(location, f"CURRENT unreadable: {exc.strerror}") from exc
    name = current.decode("ascii", "replace").strip()
    if not current.endswith(b"\n") or not _MANIFEST_NAME.fullmatch(name):
        raise StoreCorruptError(location, f"CURRENT is damaged (holds {current[:40]!r})")
    manifest = folder / name
    if not manifest.is_file():
        raise StoreCorruptError(location, f"CURRENT names {name}, which is missing")
    witness = _clean_close_record(folder)
    if witness is None or witness[0] != name:
        return  # no clean close since this MANIFEST was started: nothing to compare with
    size = manifest.stat().st_size
    if size < witness[1]:
        raise StoreCorruptError(
            location,
            f"{name} is truncated: {size} bytes, {witness[1]} at the last clean close "
            "(opening it would drop the data files it no longer lists)",
        )


def _clean_close_record(folder: Path) -> tuple[str, int] | None:
    try:
        document = json.loads((folder / CLEAN_CLOSE_FILE).read_text())
        name, size = document["manifest"], document["bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent (a store from before this check) or torn: no lower bound known
    if not isinstance(name, str) or not isinstance(size, int):
        return None
    return name, size


def verify_bodies(kv: KeyValue, location: str, live_count: int, live_bytes: int, ids: list[int]) -> None:
    """Read the bodies (RocksDB verifies each block's checksum): every one when the live records
    take at most VERIFY_BODIES_UP_TO_BYTES, their count compared with the index's; else the
    ``ids`` sample (live ids from the index), each of which must be there. StoreCorruptError."""
    if live_bytes <= VERIFY_BODIES_UP_TO_BYTES:
        found = 0
        start = b""
        while True:
            rows = kv.scan(MESSAGES, start, b"\xff" * 9, SCAN_PAGE)
            found += len(rows)
            if len(rows) < SCAN_PAGE:
                break
            # The next id, not ``key + 0x00``: SQLite compares message keys as integers.
            start = (int.from_bytes(rows[-1][0], "big") + 1).to_bytes(8, "big")
        if found != live_count:
            raise StoreCorruptError(
                location,
                f"the messages table holds {found} bodies, the queue and expiry index "
                f"{live_count} live messages",
            )
        return
    keys = [message_id.to_bytes(8, "big") for message_id in ids]
    bodies = kv.multi_get(MESSAGES, keys)
    missing = [int.from_bytes(key, "big") for key, body in zip(keys, bodies, strict=True) if body is None]
    if missing:
        raise StoreCorruptError(
            location,
            f"{len(missing)} of {len(keys)} sampled live messages have no body (first: {missing[0]})",
        )
