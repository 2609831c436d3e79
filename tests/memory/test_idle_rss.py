"""The idle bound of issue #11: a low-memory hub (``OptimizeForPerformance=false``) with only the
MQTT head, standalone, idles within 30 MiB RSS on SQLite. On RocksDB, within 36 MiB where the
hub can page out rocksdict's shared object (edgehub.resident: a file its user may write, mapped
by no other process, this one included), else within 40 MiB, about 8 MiB of it rocksdict's
file-backed pages.

Each hub is started twice on one folder (the second start reuses the dev certificates, as every
start after the first does) with edgehub's bytecode compiled as an installed hub has it; the
second start's RSS, once settled, is the figure. This test process maps libpython, OpenSSL and
SQLite too, so the kernel keeps those pages in the hub (a hub alone on its machine or in its
container idles lower). A module loaded where it need not be, a cache sized for speed in
low-memory mode, a page-out that stopped working, breaks these bounds.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Final

import pytest

from tests.memory.hubmem import LOW_MEMORY_MQTT_ONLY, compile_bytecode, idle_hub, settled_rss_kib

SQLITE_IDLE_MIB: Final = 30.0
ROCKSDB_PAGED_OUT_IDLE_MIB: Final = 36.0
ROCKSDB_IDLE_MIB: Final = 40.0


def report(name: str, **figures: object) -> None:
    print(f"[memory] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def second_start_idle_mib(folder: Path, store: str) -> float:
    compile_bytecode()
    env = {**LOW_MEMORY_MQTT_ONLY, "storeBackend": store}
    with idle_hub(folder, env):
        pass
    with idle_hub(folder, env) as hub:
        return settled_rss_kib(hub.pid) / 1024


def test_low_memory_mqtt_only_hub_on_sqlite_idles_within_30_mib(tmp_path: Path) -> None:
    rss = second_start_idle_mib(tmp_path, "sqlite")

    report("idle, low-memory, MQTT only, sqlite", rss_mib=round(rss, 1))
    assert rss <= SQLITE_IDLE_MIB


def test_low_memory_mqtt_only_hub_on_rocksdb_idles_within_36_mib_paged_out_else_40(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("rocksdict")  # not imported: its pages here would stay in the hub
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("no RocksDB wheel for this machine (32-bit ARM)")
    shared_objects = list(Path(spec.submodule_search_locations[0]).glob("*.so"))
    mapped_here = Path("/proc/self/maps").read_text()  # other tests of this session may use RocksDB
    paged_out = bool(shared_objects) and all(
        os.access(path, os.W_OK) and str(path) not in mapped_here for path in shared_objects)
    rss = second_start_idle_mib(tmp_path, "rocksdb")

    report("idle, low-memory, MQTT only, rocksdb", rss_mib=round(rss, 1), paged_out=paged_out)
    assert rss <= (ROCKSDB_PAGED_OUT_IDLE_MIB if paged_out else ROCKSDB_IDLE_MIB)
