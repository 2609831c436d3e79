"""Scaling curves over MQTT QoS 1, edgehub beside mosquitto in the same run: msg/s, p99 ack latency and
server CPU per message against publishers, payload size and fan-out.

Three sweeps, each from one base point (4 publishers, 256-byte payloads, one subscriber):
publishers 1/4/16/64/256, payload 64 B/1 KiB/16 KiB/256 KiB, fan-out 1 → 10 (edgehub: routes to
that many module inputs, each a subscribed module; mosquitto: that many subscribers of the topic).
edgehub persists every message (RocksDB) and delivers it QoS 1 to each module; mosquitto does plain
pub/sub. "CPU µs/msg" is the server process's user + system CPU time over the messages delivered
(read from /proc), the figure that must stay flat as a sweep grows: other load on the machine
does not inflate it the way it inflates rates. ``--quick`` runs the ends of each sweep with few
messages. Prints tables; asserts nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import free_port, server_process
from bench.mqtt_loadgen import Credentials, LoadResult, _subscriber, run_load
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity

HOST = "localhost"
EDGE = "edge"
WINDOW = 100
"""Unacknowledged QoS 1 publishes per publisher (bench.mqtt_loadgen)."""
BASE_PUBLISHERS = 4
BASE_PAYLOAD = 256
MAX_BYTES_PER_POINT = 64 << 20
"""Payload bytes one point publishes at most: large payloads get fewer messages."""


@dataclass(frozen=True)
class Point:
    publishers: int
    payload: int
    fan_out: int

    def label(self) -> str:
        return f"{self.publishers} pub, {_size(self.payload)}, fan-out {self.fan_out}"


@dataclass
class Outcome:
    server: str
    point: Point
    delivered: int
    seconds: float
    p99_ms: float
    cpu_us_per_msg: float
    errors: list[str]

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


def _size(payload: int) -> str:
    return f"{payload // 1024} KiB" if payload >= 1024 else f"{payload} B"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/{pid}/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _EdgehubServer:
    """The hub as bench.mqtt_bench starts it, with ``fan_out`` routes to as many module inputs."""

    name = "edgehub"

    def __init__(self, max_publishers: int, fan_out: int) -> None:
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.devices = [Identity(f"scale{i}") for i in range(max_publishers)]
        self.sinks = [f"sink{i}" for i in range(fan_out)]

    def _creds(self, identity: Identity) -> Credentials:
        user = f"{HOST}/{identity.id}/?api-version=2021-04-12"
        token = make_sas_token(sas_resource(HOST, identity), self.key, int(time.time()) + 3600)
        return Credentials(identity.id, user, token, topic=f"devices/{identity.device_id}/messages/events/")

    def publishers(self, count: int) -> list[Credentials]:
        return [self._creds(d) for d in self.devices[:count]]

    def subscribers(self) -> list[tuple[Credentials, str]]:
        return [(self._creds(Identity(EDGE, s)), f"devices/{EDGE}/modules/{s}/inputs/#") for s in self.sinks]

    @contextmanager
    def start(self, folder: Path, port: int) -> Iterator[int]:
        config = folder / "config.json"
        identities = [{"deviceId": d.device_id, "primaryKey": self.key} for d in self.devices]
        identities += [{"deviceId": EDGE, "moduleId": s, "primaryKey": self.key} for s in self.sinks]
        routes = {
            f"to{s}": f'FROM /messages/* INTO BrokeredEndpoint("/modules/{s}/inputs/in")'
            for s in self.sinks
        }
        config.write_text(json.dumps({
            "schemaVersion": "1.1", "routes": routes,
            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}, "identities": identities,
        }))
        env = {k: v for k, v in os.environ.items() if "__" not in k}
        env.update({
            "StorageFolder": str(folder / "data"), "mqttSettings__plainPort": str(port),
            "mqttSettings__port": str(free_port()), "Metrics__Listener__Port": "0",
            "amqpSettings__enabled": "false", "httpSettings__enabled": "false",
            "RuntimeLogLevel": "warning", "maxMessageSizeBytes": str(300 * 1024),
            "MaxConnectedClients": str(len(self.devices) + len(self.sinks) + 16),
        })
        command = [sys.executable, "-m", "edgehub", "run", "--config", str(config)]
        with server_process(command, port, env) as process:
            yield process.pid


class _MosquittoServer:
    name = "mosquitto"

    def __init__(self, binary: str, fan_out: int) -> None:
        self.binary = binary
        self.fan_out = fan_out

    def publishers(self, count: int) -> list[Credentials]:
        return [Credentials(f"scale{i}", topic=f"scale/{i}/telemetry") for i in range(count)]

    def subscribers(self) -> list[tuple[Credentials, str]]:
        return [(Credentials(f"sub{i}"), "scale/#") for i in range(self.fan_out)]

    @contextmanager
    def start(self, folder: Path, port: int) -> Iterator[int]:
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n"
                        "max_queued_messages 0\n")
        with server_process([self.binary, "-c", str(conf)], port) as process:
            yield process.pid


Server = _EdgehubServer | _MosquittoServer


async def _load(port: int, server: Server, point: Point, total: int) -> tuple[LoadResult, int, float]:
    """Publish ``total`` messages: (publisher result, deliveries to all subscribers, seconds to the last)."""
    per_publisher = max(1, total // point.publishers)
    expected = per_publisher * point.publishers
    subscribed: list[LoadResult] = []
    tasks = []
    started = [0.0]
    for creds, topic_filter in server.subscribers():
        result, ready = LoadResult(), asyncio.Event()
        subscribed.append(result)
        tasks.append(asyncio.create_task(
            _subscriber("127.0.0.1", port, creds, topic_filter, expected, result, ready, lambda: started[0])))
        await asyncio.wait_for(ready.wait(), 20)
    started[0] = time.perf_counter()
    published = await run_load("127.0.0.1", port, server.publishers(point.publishers), None, "",
                               per_publisher, 1, window=WINDOW, payload_size=point.payload, limit_secs=300)
    done, pending = await asyncio.wait(tasks, timeout=300)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            published.errors.append(f"subscriber: {task.exception()}")
    if pending:
        published.errors.append(f"{len(pending)} subscribers short of {expected} within 300 s")
    seconds = time.perf_counter() - started[0]
    return published, sum(r.received for r in subscribed), seconds


def _measure(server: Server, point: Point, total: int, root: Path) -> Outcome:
    folder = Path(tempfile.mkdtemp(dir=root))
    port = free_port()
    with server.start(folder, port) as pid:
        cpu = _cpu_seconds(pid)
        published, delivered, seconds = asyncio.run(_load(port, server, point, total))
        cpu = _cpu_seconds(pid) - cpu
    p99 = published.percentile(99) * 1000
    cpu_per_message = cpu / max(delivered, 1) * 1e6
    return Outcome(server.name, point, delivered, seconds, p99, cpu_per_message, published.errors)


def _points(quick: bool) -> list[tuple[str, list[Point]]]:
    publishers = (1, 256) if quick else (1, 4, 16, 64, 256)
    payloads = (64, 256 << 10) if quick else (64, 1 << 10, 16 << 10, 256 << 10)
    fan_outs = (1, 10) if quick else (1, 2, 5, 10)
    return [
        ("publishers", [Point(n, BASE_PAYLOAD, 1) for n in publishers]),
        ("payload", [Point(BASE_PUBLISHERS, size, 1) for size in payloads]),
        ("fan-out", [Point(BASE_PUBLISHERS, BASE_PAYLOAD, n) for n in fan_outs]),
    ]


def _print(sweep: str, outcomes: list[Outcome]) -> None:
    print(f"\n## Scaling: {sweep} (QoS 1, window {WINDOW} per publisher)\n")
    print("| point | server | delivered | msg/s | vs mosquitto | p99 ack ms | server CPU µs/msg | note |")
    print("|---|---|---|---|---|---|---|---|")
    mosquitto = {o.point: o.rate for o in outcomes if o.server == "mosquitto"}
    for o in outcomes:
        base = mosquitto.get(o.point)
        ratio = f"{o.rate / base:.2f}" if base and o.server != "mosquitto" else "-"
        print(f"| {o.point.label()} | {o.server} | {o.delivered} | {o.rate:,.0f} | {ratio} | "
              f"{o.p99_ms:.1f} | {o.cpu_us_per_msg:.1f} | {'; '.join(o.errors)} |", flush=True)


def run(quick: bool = False) -> None:
    messages = 4_000 if quick else 40_000
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    root = Path(tempfile.mkdtemp(prefix="edgehub-scaling-bench-"))
    try:
        for sweep, points in _points(quick):
            outcomes: list[Outcome] = []
            for point in points:
                total = min(messages, max(200, MAX_BYTES_PER_POINT // point.payload))
                servers: list[Server] = [_EdgehubServer(max(p.publishers for p in points), point.fan_out)]
                if binary is not None:
                    servers.append(_MosquittoServer(binary, point.fan_out))
                for server in servers:
                    outcomes.append(_measure(server, point, total, root))
                    o = outcomes[-1]
                    print(f"  {o.server} {point.label()}: {o.rate:,.0f} msg/s", file=sys.stderr, flush=True)
            _print(sweep, outcomes)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
