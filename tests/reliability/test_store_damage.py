"""Each kind of store damage of issue 15, done to real store files: what open and the running hub do.

docs/architecture.md §1 invariant 8: a damaged MANIFEST, CURRENT, WAL or SST (and a garbled SQLite
file) is refused at open (exit 3 from the CLI) or, with ``storeRecovery=quarantine``, moved aside
with the hub starting empty; damage found while running drops only what it names, loudly.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgehub.config_file import HubConfig, default_config
from edgehub.endpoints.pump import EndpointPump
from edgehub.errors import StoreDamagedError
from edgehub.hub import Hub
from edgehub.store.base import QueuedMessage, QueueKey
from edgehub.store.kv import StoreCorruptError
from edgehub.store.memory import MemoryStore
from edgehub.store.open import open_store
from edgehub.store.records import U64
from edgehub.store.verify import CLEAN_CLOSE_FILE
from edgehub.testing.clock import FakeClock
from tests.endpoints.fakes import FakeEndpoint, enqueue

pytest.importorskip("rocksdict")

COUNT = 3000
QUEUE = QueueKey("/modules/m/inputs/in1")
OTHER = QueueKey("/modules/n/inputs/in1")


def fill(folder: Path, backend: str = "rocksdb", *, close: bool = True) -> None:
    """COUNT messages for QUEUE (half of them for OTHER too), in a child process, closed cleanly
    or (``close`` False) left by ``os._exit`` so that they are only in the write-ahead log."""
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from edgehub.message import Message
        from edgehub.store.base import Delivery, IngestItem, QueueKey
        from edgehub.store.open import open_store
        store = open_store(Path({str(folder)!r}), backend={backend!r})
        now = int(time.time() * 1000)
        one, two = QueueKey({QUEUE.endpoint!r}), QueueKey({OTHER.endpoint!r})
        for first in range(0, {COUNT}, 100):
            store.append([IngestItem(Message(b"%06d" % n * 40), (Delivery(one, now + 3_600_000),)
                          + ((Delivery(two, now + 3_600_000),) if n % 2 else ()))
                          for n in range(first, first + 100)])
        if {close!r}:
            store.close()
        else:
            os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean") / "store"
    fill(folder)
    return folder


@pytest.fixture
def store_copy(clean_store: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    for entry in clean_store.iterdir():
        (folder / entry.name).write_bytes(entry.read_bytes())
    return folder


def flip(path: Path, at: tuple[float, ...] = (0.3, 0.5, 0.7)) -> None:
    """Three flipped bytes, as in the issue."""
    data = bytearray(path.read_bytes())
    for fraction in at:
        data[int(len(data) * fraction)] ^= 0xFF
    path.write_bytes(bytes(data))


def sst_of(folder: Path, table: str) -> Path:
    """The SST file of ``table`` in a store ``fill`` wrote (one file per table after its close)."""
    from edgehub.store.rocksdb import RocksKeyValue

    kv = RocksKeyValue(folder, low_memory=True, read_only=True)
    try:
        files = kv._db.live_files() if kv._db is not None else []
    finally:
        kv.close()

    def kind(start: bytes, entries: int) -> str:
        if start in (b"expired_upto", b"format", b"next_id"):
            return "meta"
        if start.startswith(b"/modules"):
            return "queues" if entries > 2 else "checkpoints"
        if start == U64.pack(1):
            return "messages"
        return "expiry" if len(start) == 16 else "?"

    for info in files:
        if kind(bytes(info["start_key"]), info["num_entries"]) == table:
            return folder / str(info["name"]).lstrip("/")
    raise AssertionError(f"no SST of {table} in {[f['name'] for f in files]}")


def refused(folder: Path, backend: str = "rocksdb") -> str:
    with pytest.raises(StoreCorruptError) as raised:
        open_store(folder, backend=backend)  # type: ignore[arg-type]
    return raised.value.reason


def quarantined(folder: Path, damaged: str, backend: str = "rocksdb") -> None:
    """With storeRecovery=quarantine the hub starts empty and the damaged file is kept aside."""
    store = open_store(folder, backend=backend, recovery="quarantine")  # type: ignore[arg-type]
    try:
        assert store.message_count() == 0
    finally:
        store.close()
    asides = [p for p in folder.parent.iterdir() if ".corrupt-" in p.name]
    assert len(asides) == 1
    assert (asides[0] / damaged).exists()


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.75, 0.9])
def test_truncated_manifest_is_refused_before_rocksdb_drops_the_data_files(
    store_copy: Path, fraction: float,
) -> None:
    manifest = next(store_copy.glob("MANIFEST-*"))
    os.truncate(manifest, int(manifest.stat().st_size * fraction))
    ssts = sorted(p.name for p in store_copy.glob("*.sst"))
    assert "is truncated" in refused(store_copy)
    assert sorted(p.name for p in store_copy.glob("*.sst")) == ssts  # nothing deleted
    quarantined(store_copy, manifest.name)


def test_truncated_manifest_without_clean_close_record_is_caught_by_the_consistency_check(
    store_copy: Path,
) -> None:
    """A store last closed by a hub before the witness file (or killed): RocksDB reads the
    MANIFEST's prefix; the queues table went with the lost tail, the check sees it."""
    (store_copy / CLEAN_CLOSE_FILE).unlink()
    manifest = next(store_copy.glob("MANIFEST-*"))
    os.truncate(manifest, int(manifest.stat().st_size * 0.85))
    try:
        store = open_store(store_copy, backend="rocksdb")
    except StoreCorruptError as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        assert "waiting refs" in reason or "Corruption" in reason or "bodies" in reason
        return
    count = store.message_count()  # what RocksDB kept must at least agree with itself
    lengths = store.queue_lengths()
    store.close()
    assert count == 0 or lengths.get(QUEUE, 0) == COUNT


def test_damaged_current_is_refused(store_copy: Path) -> None:
    (store_copy / "CURRENT").write_bytes(b"MANIFEST-00000X\n")
    assert "CURRENT" in refused(store_copy)
    quarantined(store_copy, "CURRENT")


def test_missing_manifest_is_refused(store_copy: Path) -> None:
    next(store_copy.glob("MANIFEST-*")).unlink()
    assert "missing" in refused(store_copy)


@pytest.mark.parametrize("table", ["messages", "expiry", "queues", "checkpoints", "meta"])
def test_flipped_bytes_in_any_table_are_refused_at_open(store_copy: Path, table: str) -> None:
    sst = sst_of(store_copy, table)
    flip(sst)
    reason = refused(store_copy)
    assert "Corruption" in reason or "damaged" in reason
    quarantined(store_copy, sst.name)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_flipped_bytes_in_the_write_ahead_log_are_refused(tmp_path: Path, fraction: float) -> None:
    folder = tmp_path / "store"
    fill(folder, close=False)
    wal = max(folder.glob("*.log"), key=lambda p: p.stat().st_size)
    flip(wal, (fraction, fraction + 0.001))
    assert "Corruption" in refused(folder)


def test_torn_last_write_ahead_log_record_is_tolerated(tmp_path: Path) -> None:
    """What a crash or power cut leaves: the last record cut short. Only that batch is missing."""
    folder = tmp_path / "store"
    fill(folder, close=False)
    wal = max(folder.glob("*.log"), key=lambda p: p.stat().st_size)
    os.truncate(wal, wal.stat().st_size - 50)
    store = open_store(folder, backend="rocksdb")
    try:
        assert COUNT - 100 <= store.queue_lengths()[QUEUE] < COUNT
    finally:
        store.close()


def garble_pages(path: Path, fraction: float, page: int = 4096) -> None:
    """Three flipped bytes in the b-tree page header of the page at ``fraction`` of the file. SQLite
    keeps no checksums: a flip inside a message body is not detectable by it (see the README)."""
    data = bytearray(path.read_bytes())
    start = int(len(data) // page * fraction) * page
    for offset in (0, 3, 5):
        data[start + offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9])
def test_garbled_sqlite_store_is_refused(tmp_path: Path, fraction: float) -> None:
    folder = tmp_path / "store"
    fill(folder, "sqlite")
    garble_pages(folder / "store.sqlite3", fraction)
    refused(folder, "sqlite")
    quarantined(folder, "store.sqlite3", "sqlite")


def run_hub(storage: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if "__" not in k}
    environment.update({"StorageFolder": str(storage), "mqttSettings__enabled": "false",
                        "httpSettings__enabled": "false", "amqpSettings__enabled": "false",
                        "Metrics__Listener__Port": "0", **env})
    return subprocess.run([sys.executable, "-m", "edgehub", "run"], env=environment, capture_output=True,
                          text=True, timeout=60, check=False)


def test_hub_exits_3_naming_the_damage(store_copy: Path) -> None:
    storage = store_copy.parent / "data"
    storage.mkdir()
    store_copy.rename(storage / "store")
    manifest = next((storage / "store").glob("MANIFEST-*"))
    os.truncate(manifest, manifest.stat().st_size // 2)
    done = run_hub(storage)
    assert done.returncode == 3, done.stderr
    assert "is truncated" in done.stderr
    assert "Traceback" not in done.stderr


def test_hub_exits_3_on_a_garbled_sqlite_store(tmp_path: Path) -> None:
    fill(tmp_path / "data" / "store", "sqlite")
    garble_pages(tmp_path / "data" / "store" / "store.sqlite3", 0.5)
    done = run_hub(tmp_path / "data", storeBackend="sqlite")
    assert done.returncode == 3, done.stderr
    assert "malformed" in done.stderr or "quick_check" in done.stderr
    assert "Traceback" not in done.stderr


def test_body_damaged_after_open_drops_only_those_messages_loudly(
    store_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A store too large to read every body at open (simulated): the pump's read meets the damaged
    block, those messages leave every queue with an error line each, all others are delivered."""
    import edgehub.store.inventory

    flip(sst_of(store_copy, "messages"))
    monkeypatch.setattr(edgehub.store.inventory, "verify_bodies", lambda *args: None)
    store = open_store(store_copy, backend="rocksdb")
    delivered: dict[QueueKey, int] = {}
    with caplog.at_level(logging.ERROR, "edgehub.store.damage"):
        for queue in (QUEUE, OTHER):
            after = -1
            while batch := store.read(queue, after, 500, int(time.time() * 1000)):
                delivered[queue] = delivered.get(queue, 0) + len(batch)
                after = batch[-1].id
                store.checkpoint(queue, after)
    dropped = [r for r in caplog.records if "is unreadable" in r.getMessage()]
    assert dropped
    assert delivered[QUEUE] + len(dropped) == COUNT
    assert store.queue_lengths() == {QUEUE: 0, OTHER: 0}
    assert store.message_count() == 0
    store.close()
    open_store(store_copy, backend="rocksdb").close()  # and the store stays consistent


def test_damaged_queue_index_read_while_running_is_an_error_not_a_short_queue(store_copy: Path) -> None:
    from edgehub.store.kv import QUEUES
    from edgehub.store.rocksdb import RocksKeyValue

    flip(sst_of(store_copy, "queues"))
    kv = RocksKeyValue(store_copy, low_memory=True, read_only=True)
    try:
        with pytest.raises(StoreDamagedError) as raised:
            kv.scan(QUEUES, b"", b"\xff", 10_000)
        assert raised.value.table == "queues"
    finally:
        kv.close()



class _DamagedQueueStore(MemoryStore):
    """A store whose queue index of one endpoint is unreadable (damage it cannot pin on messages)."""

    def __init__(self, damaged: str) -> None:
        super().__init__()
        self.damaged = damaged

    def read(self, queue: QueueKey, after: int, limit: int, now_ms: int) -> list[QueuedMessage]:
        if queue.endpoint == self.damaged:
            raise StoreDamagedError("/store", "queues", "Corruption: block checksum mismatch")
        return super().read(queue, after, limit, now_ms)


async def test_damage_a_pump_cannot_route_around_is_reported_and_other_endpoints_keep_delivering() -> None:
    clock = FakeClock()
    store = _DamagedQueueStore("$upstream")
    broken, healthy = FakeEndpoint(clock, "$upstream"), FakeEndpoint(clock, "/modules/m/inputs/in1")
    failures: list[tuple[str, BaseException]] = []
    ids = enqueue(store, "/modules/m/inputs/in1", [b"a", b"b"])
    enqueue(store, "$upstream", [b"c"])
    pumps = [EndpointPump(store, endpoint, clock, on_failure=lambda name, exc: failures.append((name, exc)))
             for endpoint in (broken, healthy)]
    for pump in pumps:
        pump.start()
    await clock.advance(1)
    assert [name for name, _ in failures][:1] == ["$upstream"]
    assert isinstance(failures[0][1], StoreDamagedError)
    assert healthy.delivered_ids == ids
    for pump in pumps:
        await pump.stop(grace=0)  # no traceback: the pump reported, it did not die


async def test_hub_stops_with_a_store_failure_when_a_pump_reports_damage(
    make_hub: Callable[[HubConfig], Hub],
) -> None:
    hub = make_hub(default_config())
    await hub.start()
    hub._pump_failed("$upstream", StoreDamagedError("/store", "queues", "Corruption: checksum mismatch"))
    assert hub.failed.is_set()
    assert hub.store_failure is not None
    assert hub.store_failure.table == "queues"
