"""(e) Resident memory: idle and with 100 connected devices, default vs low-memory mode
(``OptimizeForPerformance=false``), every head on vs the MQTT head only; mosquitto and amqtt beside it.
The store is the default one (RocksDB where rocksdict imports, else SQLite); where both exist, the MQTT-only
rows are repeated with ``storeBackend=sqlite``.

Each device connects, sends 10 QoS 1 messages (stored for an offline module) and stays connected
while RSS is read from /proc. edgehub's bytecode is compiled first, as an installed hub has it (a
hub compiling its sources at every start, PYTHONDONTWRITEBYTECODE=1 in a source checkout, idles
about 2 MiB higher). Prints a table; asserts nothing.
"""

from __future__ import annotations

import asyncio
import compileall
import importlib.util
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path

from bench.common import free_port, process_memory_mib
from bench.fleet import MQTT_ONLY, Fleet, edgehub, every_head, low_memory
from bench.mqtt_loadgen import Credentials, PacketReader, _open, publish_packet
from bench.peers import MOSQUITTO, amqtt, have_amqtt, mosquitto

CLIENTS = 100
PER_CLIENT = 10
ROUTES = {"toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'}


def settled_rss(pid: int, limit_secs: float = 15.0) -> float:
    """RSS once two readings 0.5 s apart differ by less than 0.25 MiB (bounded by ``limit_secs``)."""
    deadline = time.monotonic() + limit_secs
    last = process_memory_mib(pid)[0]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = process_memory_mib(pid)[0]
        if abs(now - last) < 0.25:
            return now
        last = now
    return last


async def _hold_clients(
    port: int, clients: list[Credentials], read_rss: Callable[[], float]
) -> tuple[float, int]:
    """Connect every client, send PER_CLIENT QoS 1 messages each, wait for their acks, read RSS while all
    are still connected; (RSS MiB, acked)."""
    connections = await asyncio.gather(*(_open("127.0.0.1", port, c) for c in clients))
    acked = 0
    for (_, writer), creds in zip(connections, clients, strict=True):
        writer.write(b"".join(publish_packet(creds.topic, b"m" * 256, 1, i + 1) for i in range(PER_CLIENT)))
    for reader, _ in connections:
        parser, got = PacketReader(), 0
        while got < PER_CLIENT:
            data = await asyncio.wait_for(reader.read(65536), 30)
            if not data:
                break
            got += sum(1 for first, _ in parser.feed(data) if first == 0x40)
        acked += got
    await asyncio.sleep(0.5)  # let the hub settle after the last ack before the reading
    rss = read_rss()
    for _, writer in connections:
        writer.close()
    return rss, acked


Server = Callable[[], AbstractContextManager[tuple[int, int]]]
"""Starts a server; yields (pid, plain MQTT port)."""


def _measure(
    name: str, start: Server, clients: list[Credentials], rows: list[tuple[str, float, float, float, int]]
) -> None:
    with start() as (pid, port):
        idle = settled_rss(pid)
        loaded, acked = asyncio.run(_hold_clients(port, clients, lambda: process_memory_mib(pid)[0]))
        peak = process_memory_mib(pid)[1]
    rows.append((name, idle, loaded, peak, acked))
    print(f"  {name}: idle {idle:.1f} MiB, {CLIENTS} clients {loaded:.1f} MiB", file=sys.stderr, flush=True)


@contextmanager
def _hub(fleet: Fleet, folder: Path, settings: dict[str, str], label: str) -> Iterator[tuple[int, int]]:
    with edgehub(fleet, folder, ROUTES, settings, label=label) as hub:
        yield hub.pid, hub.port


@contextmanager
def _broker(kind: str, folder: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    with mosquitto(folder, port) if kind == "mosquitto" else amqtt(folder, port) as pid:
        yield pid, port


def run(quick: bool = False) -> None:
    import edgehub

    compileall.compile_dir(Path(edgehub.__file__).parent, quiet=1)
    root = Path(tempfile.mkdtemp(prefix="edgehub-memory-bench-"))
    fleet = Fleet(devices=CLIENTS)
    rows: list[tuple[str, float, float, float, int]] = []
    rocksdb = importlib.util.find_spec("rocksdict") is not None  # no armhf wheel: SQLite only there
    # RocksDB named, since low-memory mode's auto would create SQLite; the SQLite rows follow.
    store = {"storeBackend": "rocksdb"} if rocksdb else {}
    try:
        for low in (False, True):
            for heads_name, heads in (("every head", every_head()), ("MQTT only", dict(MQTT_ONLY))):
                name = f"edgehub {'low-memory' if low else 'default'}, {heads_name}"
                folder = root / f"hub{len(rows)}"
                _measure(
                    name,
                    partial(_hub, fleet, folder, heads | low_memory(low) | store, name),
                    fleet.device_credentials(CLIENTS),
                    rows,
                )
        if rocksdb:  # the same hub on SQLite, as a device without the RocksDB wheel runs it
            for low in (False, True):
                name = f"edgehub {'low-memory' if low else 'default'}, MQTT only, sqlite"
                settings = dict(MQTT_ONLY) | low_memory(low) | {"storeBackend": "sqlite"}
                _measure(name, partial(_hub, fleet, root / f"hub{len(rows)}", settings, name),
                         fleet.device_credentials(CLIENTS), rows)
        broker_clients = [Credentials(f"c{i}", topic=f"bench/{i}") for i in range(CLIENTS)]
        if MOSQUITTO:
            _measure("mosquitto", partial(_broker, "mosquitto", root / "mosquitto"), broker_clients, rows)
        if have_amqtt():
            _measure("amqtt broker", partial(_broker, "amqtt", root / "amqtt"), broker_clients, rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print(rows, "rocksdb" if rocksdb else "sqlite")


def _print(rows: list[tuple[str, float, float, float, int]], store: str) -> None:
    print(
        f"\n## Resident memory: idle, and with {CLIENTS} connected devices ({PER_CLIENT} QoS 1 msgs each, "
        "stored for an offline module)\n"
    )
    print(
        "Idle: RSS once stable after start-up. 'every head' = MQTT, AMQP and HTTPS listeners and the metrics "
        "port; 'MQTT only' = the others off. low-memory = `OptimizeForPerformance=false`. "
        f"Store: {store} unless the row says sqlite.\n"
    )
    base = next((r[2] for r in rows if r[0] == "mosquitto"), None)
    print(
        f"| server | RSS idle MiB | RSS with {CLIENTS} clients MiB | peak RSS MiB | acked | "
        "with clients vs mosquitto |"
    )
    print("|---|---|---|---|---|---|")
    for name, idle, loaded, peak, acked in rows:
        ratio = f"{loaded / base:.1f}x" if base else "-"
        print(f"| {name} | {idle:.1f} | {loaded:.1f} | {peak:.1f} | {acked} | {ratio} |")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
