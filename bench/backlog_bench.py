"""(c) A backlog buffered while the upstream is down, then drained; (h) bytes written to disk per stored
message (``write_bytes`` of /proc/PID/io: SD cards wear out, edgeHub #1181). edgehub against a mosquitto
bridge with persistence on (its default autosave, and saving every second), same load, same run.

The upstream mosquitto keeps a persistent session for the sink, so nothing forwarded before the sink is
back is lost. Prints tables; asserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import timeline
from bench.common import free_port, process_memory_mib, wait_listening
from bench.loadgen_processes import run_load_processes
from bench.mqtt_loadgen import LoadResult
from bench.peers import MOSQUITTO, bridge_extra, mosquitto_config
from bench.upstream_bench import (
    _close,
    _disk_usage,
    _edgehub,
    _Fleet,
    _mosquitto,
    _mosquitto_config,
    _prime_session,
    _stop,
    _with_sink,
)

PUBLISHERS = 4
LIMIT_SECS = 600.0


def written_bytes(pid: int) -> int:
    """Bytes this process caused to be written to storage (``write_bytes`` in /proc/PID/io); readable
    until the process is reaped, so a zombie still tells what its exit wrote."""
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError(f"no write_bytes for {pid}")


def stop_reading_writes(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM, wait (bounded) until it exited but before reaping it; its final write_bytes."""
    proc.terminate()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    total = written_bytes(proc.pid)
    _stop(proc)
    return total


@dataclass
class Backlog:
    peer: str
    ingest: LoadResult
    written_ingest: int
    """write_bytes from before the load to its last ack."""
    written_total: int
    """… to after the drain and the peer's exit (compaction, checkpoints, a final save)."""
    disk_bytes: int
    rss_mib: float
    to_first: float
    drain_seconds: float
    delivered: int


async def _drain(upstream_config: Path, upstream_port: int, total: int) -> tuple[float, float, int]:
    """Start the upstream broker; (its start → first arrival, first → last, arrived)."""
    started = time.perf_counter()
    with _mosquitto(upstream_config, upstream_port):
        sink, task = await _with_sink(upstream_port, "upstream-sink", clean=False)
        sink.expect(total)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sink.arrived.wait(), LIMIT_SECS)
        await _close(task)
    return sink.first_at - started if sink.count else 0.0, sink.last_at - sink.first_at, sink.count


@contextlib.contextmanager
def _bridge(
    folder: Path, upstream_port: int, autosave: int | None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    assert MOSQUITTO is not None
    folder.mkdir(parents=True)
    port = free_port()
    extra = bridge_extra(upstream_port) + ([f"autosave_interval {autosave}"] if autosave else [])
    config = mosquitto_config(folder, port, persistence=True, extra=extra, name="bridge")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port)
        yield proc, port
    finally:
        if proc.poll() is None:
            _stop(proc)


def _measure(peer: str, root: Path, total: int, autosave: int | None = None) -> Backlog:
    root.mkdir(parents=True)
    fleet = _Fleet()
    upstream_port = free_port()
    upstream_config = _mosquitto_config(root, "upstream", upstream_port)
    with _mosquitto(upstream_config, upstream_port):
        asyncio.run(_prime_session(upstream_port))
    if peer == "edgehub":
        entry: contextlib.AbstractContextManager[tuple[subprocess.Popen[bytes], int]] = _hub(
            root, fleet, upstream_port
        )
    else:
        entry = _bridge(root / "bridge", upstream_port, autosave)
    with entry as (proc, port), timeline.watch_rss(proc.pid, peer):
        before = written_bytes(proc.pid)
        ingest = run_load_processes(
            "127.0.0.1",
            port,
            fleet.publishers,
            None,
            "",
            total // PUBLISHERS,
            1,
            window=100,
            limit_secs=LIMIT_SECS,
            label=f"{peer} ingest",
        )
        written_ingest = written_bytes(proc.pid) - before
        disk = _disk_usage(root / ("edgehub" if peer == "edgehub" else "bridge"))
        rss = process_memory_mib(proc.pid)[0]
        to_first, drain_seconds, delivered = asyncio.run(_drain(upstream_config, upstream_port, ingest.acked))
        written_total = stop_reading_writes(proc) - before
    print(
        f"  {peer}: {written_ingest / max(ingest.acked, 1):,.0f} bytes written per message",
        file=sys.stderr,
        flush=True,
    )
    return Backlog(peer, ingest, written_ingest, written_total, disk, rss, to_first, drain_seconds, delivered)


@contextlib.contextmanager
def _hub(root: Path, fleet: _Fleet, upstream_port: int) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    with _edgehub(root / "edgehub", fleet, upstream_port) as hub:
        yield hub.proc, hub.plain_port


def run(quick: bool = False) -> None:
    if MOSQUITTO is None:
        print("\n## Backlog: skipped (no mosquitto; make system-deps)")
        return
    total = 20_000 if quick else 100_000
    root = Path(tempfile.mkdtemp(prefix="edgehub-backlog-bench-"))
    try:
        results = [
            _measure("edgehub", root / "edgehub", total),
            _measure("mosquitto bridge (autosave default 1800 s)", root / "bridge-default", total),
            _measure("mosquitto bridge (autosave_interval 1)", root / "bridge-1s", total, autosave=1),
        ]
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    _print(results, total)


def _print(results: list[Backlog], total: int) -> None:
    print(f"\n## Backlog: {total:,} msgs of 256 bytes buffered while the upstream is down, then drained\n")
    print(
        f"{PUBLISHERS} publishers, QoS 1, window 100 → peer → (down) upstream mosquitto; then the upstream "
        "starts and a persistent sink counts arrivals. edgehub: `FROM /messages/* INTO $upstream`, "
        "storeSyncWrites=false, RocksDB.\n"
    )
    base = next((r for r in results if r.peer.startswith("mosquitto bridge (autosave default")), None)
    print(
        "| peer | acked | ingest msg/s | vs bridge | upstream start → first arrival s | drain msg/s | "
        "vs bridge | arrived | RSS MiB | on disk MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ingest = r.ingest.acked / r.ingest.seconds if r.ingest.seconds else 0.0
        drain = r.delivered / r.drain_seconds if r.drain_seconds else 0.0
        base_ingest = base.ingest.acked / base.ingest.seconds if base and base.ingest.seconds else 0.0
        base_drain = base.delivered / base.drain_seconds if base and base.drain_seconds else 0.0
        print(
            f"| {r.peer} | {r.ingest.acked} | {ingest:,.0f} | {_ratio(ingest, base_ingest)} "
            f"| {r.to_first:.2f} "
            f"| {drain:,.0f} | {_ratio(drain, base_drain)} | {r.delivered} | {r.rss_mib:.1f} "
            f"| {r.disk_bytes / 2**20:.1f} |"
        )
    print("\n## Bytes written to disk per stored message (/proc/PID/io write_bytes)\n")
    print(
        "'during ingest': from the first publish to the last PUBACK, i.e. what acknowledging a message "
        "costs the card. 'total': through the drain and the peer's exit (compaction, deletes, final save). "
        "mosquitto writes its whole database at each autosave and at exit, nothing per message.\n"
    )
    print("| peer | during ingest, bytes/msg | total, bytes/msg | total MiB |")
    print("|---|---|---|---|")
    for r in results:
        acked = max(r.ingest.acked, 1)
        print(
            f"| {r.peer} | {r.written_ingest / acked:,.0f} | {r.written_total / acked:,.0f} | "
            f"{r.written_total / 2**20:.1f} |"
        )


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "-"


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
