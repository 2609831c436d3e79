"""The functional smoke on a device (or under qemu): connect, publish, store, restart, deliver, TTL.

A device sends messages for an offline module on two routes, one with a 2 s TTL; the hub stops and
starts again on the same store; the module then connects and must get every message of the long-lived
route and none of the expired one. It runs once per store backend the interpreter has (``storeBackend``
rocksdb where rocksdict imports, as on arm64; sqlite always), prints a table for each and exits non-zero
when a check fails.

    python -m bench.arm32.smoke
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import platform
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.fleet import Fleet, edgehub
from bench.mqtt_loadgen import PacketReader, _open, run_load, subscribe_packet
from edgehub.store.kv import SQLITE_FILE

COUNT = 10
TTL_SECS = 2
ROUTES = {
    "keep": {
        "route": "FROM /messages/* WHERE kind = 'keep' INTO BrokeredEndpoint(\"/modules/sink/inputs/keep\")",
        "timeToLiveSecs": 7200,
    },
    "brief": {
        "route": "FROM /messages/* WHERE kind = 'brief' "
        "INTO BrokeredEndpoint(\"/modules/sink/inputs/brief\")",
        "timeToLiveSecs": TTL_SECS,
    },
}
SETTINGS = {"OptimizeForPerformance": "false", "MessageCleanupIntervalSecs": "1"}


@dataclass
class Checks:
    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.rows.append((name, ok, detail))
        print(f"  smoke {name}: {'OK' if ok else 'FAIL'} ({detail})", file=sys.stderr, flush=True)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(ok for _, ok, _ in self.rows)


async def _publish(port: int, fleet: Fleet) -> int:
    acked = 0
    for kind in ("keep", "brief"):
        creds = fleet.credentials(fleet.device(0), props=f"kind={kind}")
        result = await run_load("127.0.0.1", port, [creds], None, "", COUNT, 1, window=COUNT, limit_secs=120)
        acked += result.acked
    return acked


async def _collect(port: int, fleet: Fleet, wait_secs: float, quiet_secs: float) -> dict[str, int]:
    """Input name → messages the module got: until COUNT arrived on ``keep`` (bounded), then
    ``quiet_secs`` more."""
    reader, writer = await _open("127.0.0.1", port, fleet.credentials(fleet.module("sink")))
    writer.write(subscribe_packet(fleet.input_filter("sink"), 1))
    parser, got = PacketReader(), {"keep": 0, "brief": 0}
    deadline = time.monotonic() + wait_secs
    quiet_until: float | None = None
    try:
        while (until := quiet_until or deadline) > time.monotonic():
            try:
                data = await asyncio.wait_for(reader.read(65536), until - time.monotonic())
            except TimeoutError:
                break
            if not data:
                break
            for first, body in parser.feed(data):
                if first >> 4 != 3:
                    continue
                topic_len = struct.unpack_from("!H", body)[0]
                topic = body[2 : 2 + topic_len].decode()
                name = topic.split("/inputs/", 1)[1].split("/", 1)[0]
                got[name] = got.get(name, 0) + 1
                if (first >> 1) & 3:
                    writer.write(b"\x40\x02" + body[2 + topic_len : 4 + topic_len])
            if got["keep"] >= COUNT and quiet_until is None:
                quiet_until = time.monotonic() + quiet_secs
    finally:
        writer.close()
    return got


def _store_files(data: Path) -> int:
    return sum(f.stat().st_size for f in data.rglob("*") if f.is_file() and "certs" not in f.parts)


def _store_kind(data: Path) -> str:
    """The backend whose files the hub left: RocksDB's CURRENT or the SQLite database file."""
    if any(data.rglob("CURRENT")):
        return "rocksdb"
    return "sqlite" if any(data.rglob(SQLITE_FILE)) else "none"


def backends() -> tuple[str, ...]:
    """The store backends to smoke: rocksdb where rocksdict imports (no armhf wheel exists), sqlite always."""
    return ("rocksdb", "sqlite") if importlib.util.find_spec("rocksdict") else ("sqlite",)


def run_smoke(root: Path, backend: str) -> Checks:
    checks = Checks()
    fleet = Fleet(devices=1)
    folder = root / "hub"
    settings = SETTINGS | {"storeBackend": backend}
    started = time.monotonic()
    with edgehub(fleet, folder, ROUTES, settings) as hub:
        checks.add("connect", True, f"hub listening after {time.monotonic() - started:.1f} s")
        sent_at = time.monotonic()
        acked = asyncio.run(_publish(hub.port, fleet))
        checks.add(
            "publish",
            acked == 2 * COUNT,
            f"{acked} of {2 * COUNT} QoS 1 acked in {time.monotonic() - sent_at:.1f} s",
        )
    stored, kind = _store_files(folder / "data"), _store_kind(folder / "data")
    detail = f"{kind}, {stored} bytes on disk after the hub stopped"
    checks.add("store", stored > 0 and kind == backend, detail)
    restarted = time.monotonic()
    with edgehub(fleet, folder, ROUTES, settings) as hub:
        checks.add("restart", True, f"same store, listening after {time.monotonic() - restarted:.1f} s")
        expired_at = sent_at + TTL_SECS + 2  # TTL, and a cleanup round (1 s) to spare
        if (left := expired_at - time.monotonic()) > 0:
            time.sleep(left)  # the TTL is wall time: waiting for it to pass is what is under test
        got = asyncio.run(_collect(hub.port, fleet, wait_secs=120, quiet_secs=3))
    checks.add("deliver", got["keep"] == COUNT, f"{got['keep']} of {COUNT} stored messages after the restart")
    checks.add("TTL", got["brief"] == 0, f"{got['brief']} of {COUNT} expired messages delivered (must be 0)")
    return checks


def run(quick: bool = False) -> None:
    """The suite's ``smoke`` scenario: the table, and an error when a check failed."""
    if main() != 0:
        raise RuntimeError("the functional smoke failed (see its table)")


def main() -> int:
    where = os.environ.get("EDGEHUB_BENCH_PLATFORM", "native")
    failed = 0
    for backend in backends():
        print(f"  smoke on {backend}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="edgehub-smoke-") as root:
            started = time.monotonic()
            checks = run_smoke(Path(root), backend)
            seconds = time.monotonic() - started
        print(
            f"\n## Functional smoke on {platform.machine()} ({where}), Python {platform.python_version()}, "
            f"storeBackend={backend}\n"
        )
        print("| check | outcome | detail |")
        print("|---|---|---|")
        for name, ok, detail in checks.rows:
            print(f"| {name} | {'OK' if ok else 'FAIL'} | {detail} |")
        print(
            f"\n{'passed' if checks.passed else 'FAILED'} in {seconds:.1f} s"
            f"{' (emulated: times are not the device)' if where.startswith('emulated') else ''}"
        )
        failed += not checks.passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
