"""The memory tables of docs/operations.md ("Memory"): RSS import by import in a fresh
interpreter, and a real hub's idle RSS by mode, heads and store. Figures, never a verdict.

``python -m tests.memory.footprint`` prints both as Markdown (about a minute: it starts each hub
twice, so the second start reuses the dev certificates, as every start after the first does),
edgehub's bytecode compiled first, as an installed hub has it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from tests.memory.hubmem import compile_bytecode, idle_hub, settled_rss_kib

IMPORT_STEPS: Final = (
    "asyncio", "ssl", "edgehub.settings", "edgehub.tls", "edgehub.metrics", "edgehub.store.open",
    "rocksdict", "edgehub.store.rocksdb", "edgehub.routing.router", "edgehub.endpoints.pump",
    "edgehub.hub", "edgehub.assembly", "edgehub.heads.mqtt.head", "edgehub.cli", "edgehub.logs",
)
"""The low-memory, MQTT-only, standalone hub's imports, heaviest first where the order is free."""
OPTIONAL_STEPS: Final = (
    "cryptography.x509", "uvloop", "aiohttp", "proton", "sqlite3", "edgehub.upstream.factory",
    "edgehub.heads.mqtt.generic", "edgehub.routing.condition", "argparse",
)
"""Imported only on demand: dev certificate issue, default mode, HTTP head, AMQP, SQLite store,
an upstream link, generic topics, a route with a WHERE clause, a command other than ``run``."""

_PROBE: Final = """
import importlib, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
print('(interpreter)', rss())
for name in sys.argv[1:]:
    importlib.import_module(name)
    print(name, rss())
"""


def import_steps(modules: tuple[str, ...]) -> list[tuple[str, float, float]]:
    """(module, RSS delta MiB, RSS MiB) after importing each of ``modules`` in turn, fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    rows: list[tuple[str, float, float]] = []
    previous = 0
    for line in out.splitlines():
        name, kib = line.rsplit(" ", 1)
        rows.append((name, (int(kib) - previous) / 1024 if previous else 0.0, int(kib) / 1024))
        previous = int(kib)
    return rows


def idle_rss_mib(env: dict[str, str]) -> float:
    """Settled RSS of a hub's second start on a fresh folder, in MiB."""
    with tempfile.TemporaryDirectory() as folder:
        with idle_hub(Path(folder), env):
            pass
        with idle_hub(Path(folder), env) as hub:
            return settled_rss_kib(hub.pid) / 1024


def idle_matrix() -> list[tuple[str, str, str, float]]:
    rows = []
    for mode, optimize in (("default", "true"), ("low-memory", "false")):
        for heads, enabled in (("MQTT only", "false"), ("MQTT + AMQP + HTTP", "true")):
            for store in ("rocksdb", "sqlite"):
                env = {"OptimizeForPerformance": optimize, "amqpSettings__enabled": enabled,
                       "httpSettings__enabled": enabled, "storeBackend": store}
                rows.append((mode, heads, store, idle_rss_mib(env)))
    return rows


def main() -> None:
    compile_bytecode()
    print("| import (in this order) | RSS delta MiB | RSS MiB |\n|---|---:|---:|")
    for name, delta, total in import_steps(IMPORT_STEPS):
        print(f"| {name} | {delta:+.1f} | {total:.1f} |")
    print("\n| on demand, after the above | RSS delta MiB |\n|---|---:|")
    for name in OPTIONAL_STEPS:
        *_, (_, delta, _) = import_steps((*IMPORT_STEPS, name))
        print(f"| {name} | {delta:+.1f} |")
    print("\n| mode | heads | store | idle RSS MiB |\n|---|---|---|---:|")
    for mode, heads, store, rss in idle_matrix():
        print(f"| {mode} | {heads} | {store} | {rss:.1f} |")


if __name__ == "__main__":
    main()
