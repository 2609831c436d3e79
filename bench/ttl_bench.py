"""(d) TTL expiry and disk reclaim: messages queued for an offline module expire (route ``timeToLiveSecs``);
how long until the store's files shrink back, and that none of them is delivered afterwards. RocksDB and
SQLite (``storeBackend``), cleanup every second (``MessageCleanupIntervalSecs``; edgeHub's is 1800 s).

mosquitto and amqtt have no per-message expiry for MQTT 3.1.1 publishers (only MQTT 5's message expiry
interval), so there is no peer ratio here. Prints a table; asserts nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.fleet import Fleet, edgehub
from bench.loadgen_processes import run_load_processes
from bench.mqtt_loadgen import LoadResult, _subscriber
from bench.upstream_bench import _disk_usage

PUBLISHERS = 4


@dataclass
class Reclaim:
    backend: str
    ingest: LoadResult
    ttl_secs: int
    baseline: int
    peak: int
    final: int
    half_secs: float | None
    """Seconds after the TTL ran out until half of what the backlog added to the disk was gone."""
    most_secs: float | None
    """… until 90 % was gone."""
    delivered_after: int


async def _count_deliveries(port: int, fleet: Fleet, window: float) -> int:
    """How many messages the module gets within ``window`` seconds once it connects (expired ones: none)."""
    result = LoadResult()
    ready = asyncio.Event()
    task = asyncio.create_task(
        _subscriber(
            "127.0.0.1",
            port,
            fleet.credentials(fleet.module("sink")),
            fleet.input_filter("sink"),
            10**9,
            result,
            ready,
            time.perf_counter,
        )
    )
    await asyncio.wait({task}, timeout=window)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return result.received


def _measure(backend: str, root: Path, total: int, ttl: int, watch_secs: float) -> Reclaim:
    fleet = Fleet(devices=PUBLISHERS)
    routes = {
        "toSink": {
            "route": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")',
            "timeToLiveSecs": ttl,
        }
    }
    settings = {"storeBackend": backend, "MessageCleanupIntervalSecs": "1"}
    with edgehub(fleet, root / backend, routes, settings, label=f"edgehub {backend}") as hub:
        baseline = _disk_usage(hub.data)
        ingest = run_load_processes(
            "127.0.0.1",
            hub.port,
            fleet.device_credentials(PUBLISHERS),
            None,
            "",
            total // PUBLISHERS,
            1,
            window=100,
            limit_secs=300,
            label=f"{backend} ingest",
        )
        expires_at = time.monotonic() + ttl  # the last message's TTL (the first ones expire earlier)
        peak = _disk_usage(hub.data)
        half = most = None
        added = max(peak - baseline, 1)
        deadline = expires_at + watch_secs
        now = time.monotonic()
        while now < deadline:
            gone = (peak - _disk_usage(hub.data)) / added
            if half is None and gone >= 0.5:
                half = max(now - expires_at, 0.0)
            if most is None and gone >= 0.9:
                most = max(now - expires_at, 0.0)
                if now >= expires_at:
                    break
            time.sleep(0.25)
            now = time.monotonic()
        final = _disk_usage(hub.data)
        delivered = asyncio.run(_count_deliveries(hub.port, fleet, 2.0))
    print(
        f"  {backend}: 90% reclaimed " + (f"after {most:.1f} s" if most is not None else "not in time"),
        file=sys.stderr,
        flush=True,
    )
    return Reclaim(backend, ingest, ttl, baseline, peak, final, half, most, delivered)


def run(quick: bool = False) -> None:
    total, ttl, watch = (20_000, 3, 10.0) if quick else (100_000, 10, 120.0)
    root = Path(tempfile.mkdtemp(prefix="edgehub-ttl-bench-"))
    try:
        results = [_measure(backend, root, total, ttl, watch) for backend in ("rocksdb", "sqlite")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n## TTL expiry and disk reclaim: {total:,} msgs of 256 bytes for an offline module, route "
        f"timeToLiveSecs={ttl}, MessageCleanupIntervalSecs=1\n"
    )
    print(
        f"Disk = the StorageFolder as du counts it; times from the last message's expiry; watched for "
        f"{watch:.0f} s. 'delivered after' = what the module got when it connected afterwards "
        "(should be 0).\n"
    )
    print(
        "| storeBackend | acked | disk before MiB | with backlog MiB | at the end MiB "
        "| 50 % reclaimed after s "
        "| 90 % reclaimed after s | delivered after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        half = f"{r.half_secs:.1f}" if r.half_secs is not None else f"> {watch:.0f}"
        most = f"{r.most_secs:.1f}" if r.most_secs is not None else f"> {watch:.0f}"
        print(
            f"| {r.backend} | {r.ingest.acked} | {r.baseline / 2**20:.1f} | {r.peak / 2**20:.1f} | "
            f"{r.final / 2**20:.1f} | {half} | {most} | {r.delivered_after} |"
        )
    print("\nNo peer: mosquitto and amqtt expire nothing an MQTT 3.1.1 client sends.")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
