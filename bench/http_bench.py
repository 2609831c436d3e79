"""The HTTP head: MQTT over WebSocket (TLS) against MQTT over TLS, same hub, same load, same run;
and the hub's RSS with every head on (MQTT, HTTP, metrics) against MQTT only.

4 publishers → hub (persist, route to a module input) → 1 subscribed module, QoS 1, 256-byte
payloads, window 100 (bench.mqtt_loadgen over bench.ws_stream). Prints tables; asserts nothing.
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

from bench.common import free_port, process_memory_mib, server_process
from bench.mqtt_loadgen import Connector, Credentials, LoadResult, run_load
from bench.ws_stream import tls_connector, websocket_connector
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity

HOST = "localhost"
EDGE = "edge"
SINK = Identity(EDGE, "sink")
PUBLISHERS = 4


@dataclass
class Hub:
    folder: Path
    key: str
    pid: int
    mqtt_port: int
    https_port: int

    @property
    def ca_file(self) -> str:
        return str(self.folder / "data" / "certs" / "dev-ca.pem")


def _credentials(key: str, identity: Identity, connect: Connector) -> Credentials:
    topic = (f"devices/{identity.device_id}/messages/events/" if identity.module_id is None
             else f"devices/{identity.device_id}/modules/{identity.module_id}/messages/events/")
    token = make_sas_token(sas_resource(HOST, identity), key, int(time.time()) + 3600)
    return Credentials(identity.id, f"{HOST}/{identity.id}/?api-version=2021-04-12", token, topic, connect)


@contextmanager
def _hub(root: Path, *, http: bool) -> Iterator[Hub]:
    folder = Path(tempfile.mkdtemp(dir=root))
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    identities = [{"deviceId": f"bench{i}", "primaryKey": key} for i in range(PUBLISHERS)]
    identities.append({"deviceId": EDGE, "moduleId": "sink", "primaryKey": key})
    config = folder / "config.json"
    config.write_text(json.dumps({
        "schemaVersion": "1.1",
        "routes": {"toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'},
        "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}, "identities": identities,
    }))
    mqtt_port, https_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if "__" not in k} | {
        "StorageFolder": str(folder / "data"), "mqttSettings__port": str(mqtt_port),
        "httpSettings__enabled": "true" if http else "false", "httpSettings__port": str(https_port),
        "Metrics__Listener__Port": str(free_port()) if http else "0",
        "amqpSettings__enabled": "false", "RuntimeLogLevel": "warning",
        "IotHubHostName": HOST, "EdgeHubHostName": HOST, "EdgeDeviceId": EDGE,
    }
    command = [sys.executable, "-m", "edgehub", "run", "--config", str(config)]
    with server_process(command, mqtt_port, env) as process:
        yield Hub(folder, key, process.pid, mqtt_port, https_port)


def _load(hub: Hub, *, websocket: bool, total: int) -> LoadResult:
    connect = websocket_connector(hub.ca_file) if websocket else tls_connector(hub.ca_file)
    port = hub.https_port if websocket else hub.mqtt_port
    publishers = [_credentials(hub.key, Identity(f"bench{i}"), connect) for i in range(PUBLISHERS)]
    return asyncio.run(run_load("127.0.0.1", port, publishers, _credentials(hub.key, SINK, connect),
                                f"devices/{EDGE}/modules/sink/inputs/#", total // PUBLISHERS, 1,
                                window=100, limit_secs=300))


def _rate(result: LoadResult) -> float:
    return result.received / result.seconds if result.seconds else 0.0


def run(quick: bool = False) -> None:
    total = 8_000 if quick else 40_000
    root = Path(tempfile.mkdtemp(prefix="edgehub-http-bench-"))
    rows: list[tuple[str, LoadResult, float]] = []
    memory: list[tuple[str, float, float, float]] = []
    try:
        with _hub(root, http=True) as hub:
            time.sleep(0.5)  # let start-up settle before the idle reading
            idle = process_memory_mib(hub.pid)[0]
            for websocket in (False, True, False, True):
                result = _load(hub, websocket=websocket, total=total)
                rows.append(("MQTT over WebSocket (TLS)" if websocket else "MQTT over TLS", result,
                             process_memory_mib(hub.pid)[0]))
                print(f"  {rows[-1][0]}: {_rate(result):,.0f} msg/s", file=sys.stderr, flush=True)
            memory.append(("every head on (MQTT, HTTP + WebSocket, metrics)", idle,
                           *process_memory_mib(hub.pid)))
        with _hub(root, http=False) as hub:
            time.sleep(0.5)
            idle = process_memory_mib(hub.pid)[0]
            for _ in range(2):
                _load(hub, websocket=False, total=total)
            memory.append(("MQTT only (HTTP head and metrics off)", idle, *process_memory_mib(hub.pid)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print(rows, memory, total)


def _print(rows: list[tuple[str, LoadResult, float]], memory: list[tuple[str, float, float, float]],
           total: int) -> None:
    print(f"\n## MQTT over WebSocket vs over TLS: {PUBLISHERS} publishers → 1 module, {total} msgs "
          "of 256 bytes, QoS 1, window 100, one hub, alternating runs\n")
    print("| transport | delivered | msg/s | ack p50 ms | ack p99 ms | hub RSS MiB after |")
    print("|---|---|---|---|---|---|")
    for name, result, rss in rows:
        note = f" ({'; '.join(result.errors)})" if result.errors else ""
        p50, p99 = result.percentile(50) * 1000, result.percentile(99) * 1000
        rate = _rate(result)
        print(f"| {name}{note} | {result.received} | {rate:,.0f} | {p50:.1f} | {p99:.1f} | {rss:.1f} |")
    tcp = [_rate(r) for n, r, _ in rows if n == "MQTT over TLS"]
    ws = [_rate(r) for n, r, _ in rows if n != "MQTT over TLS"]
    if tcp and ws and sum(tcp):
        ratio = (sum(ws) / len(ws)) / (sum(tcp) / len(tcp))
        print(f"\nWebSocket / TCP throughput ratio (mean of runs): {ratio:.2f}")
    print("\n## Hub RSS: every head on vs MQTT only (same load over MQTT/TLS, 2 runs)\n")
    print("| configuration | RSS idle MiB | RSS after load MiB | peak RSS MiB |")
    print("|---|---|---|---|")
    for name, idle, rss, peak in memory:
        print(f"| {name} | {idle:.1f} | {rss:.1f} | {peak:.1f} |")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
