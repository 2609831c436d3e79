"""Module to module over MQTT: N modules publish on an output → broker/hub → 1 module's input, QoS 0 and 1,
256-byte payloads; RocksDB against SQLite (``storeBackend``).

edgehub persists each message, routes it (``FROM /messages/modules/* INTO BrokeredEndpoint``) and
delivers it to the subscribed module; mosquitto and amqtt's broker do plain pub/sub of the same load
(same load generator, same run). Prints a table with ratios; asserts nothing.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import free_port, hub_command, process_memory_mib, server_process
from bench.loadgen_processes import run_load_processes
from bench.mqtt_loadgen import Credentials, LoadResult
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity

HOST = "localhost"
EDGE = "edge"
SINK = Identity(EDGE, "sink")


@dataclass
class Peer:
    name: str
    start: Callable[[Path, int], AbstractContextManager[int]]
    """Starts the server on a port inside a scratch folder; yields its pid."""
    publishers: Callable[[int], list[Credentials]]
    subscriber: Credentials
    topic_filter: str


@dataclass
class Measurement:
    peer: str
    qos: int
    result: LoadResult
    rss_mib: float
    peak_rss_mib: float

    @property
    def rate(self) -> float:
        return self.result.received / self.result.seconds if self.result.seconds else 0.0


def _token(key: str, identity: Identity) -> str:
    return make_sas_token(sas_resource(HOST, identity), key, int(time.time()) + 3600)


def _edgehub_peer(sync: bool, backend: str = "rocksdb", low_memory: bool = False) -> Peer:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    modules = [Identity(EDGE, f"source{i}") for i in range(64)]

    def creds(identity: Identity) -> Credentials:
        user = f"{HOST}/{identity.id}/?api-version=2021-04-12"
        topic = f"devices/{identity.device_id}/modules/{identity.module_id}/messages/events/$.on=out"
        return Credentials(identity.id, user, _token(key, identity), topic=topic)

    @contextmanager
    def start(folder: Path, port: int) -> Iterator[int]:
        config = folder / "config.json"
        identities = [{"deviceId": EDGE, "moduleId": m.module_id, "primaryKey": key} for m in modules]
        identities.append({"deviceId": EDGE, "moduleId": "sink", "primaryKey": key})
        config.write_text(json.dumps({
            "schemaVersion": "1.1",
            "routes": {"toSink": 'FROM /messages/modules/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'},
            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
            "identities": identities,
        }))
        env = {k: v for k, v in os.environ.items() if "__" not in k}
        env.update({
            "StorageFolder": str(folder / "data"), "mqttSettings__plainPort": str(port),
            "mqttSettings__port": str(free_port()), "Metrics__Listener__Port": "0",
            "amqpSettings__enabled": "false", "httpSettings__enabled": "false",
            "storeSyncWrites": "true" if sync else "false", "RuntimeLogLevel": "warning",
            "storeBackend": backend, "IotHubHostName": HOST, "EdgeDeviceId": EDGE,
            "OptimizeForPerformance": "false" if low_memory else "true",
        })
        with server_process(hub_command("run", "--config", str(config)), port, env, label=name) as p:
            yield p.pid

    name = (f"edgehub {backend}" + (" (storeSyncWrites=true)" if sync else "")
            + (" (OptimizeForPerformance=false)" if low_memory else ""))
    return Peer(name, start, lambda n: [creds(m) for m in modules[:n]], creds(SINK),
                f"devices/{EDGE}/modules/sink/inputs/#")


def _broker_publishers(n: int) -> list[Credentials]:
    return [Credentials(f"bench{i}", topic=f"bench/{i}/telemetry") for i in range(n)]


def _mosquitto_peer() -> Peer | None:
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if binary is None:
        return None

    @contextmanager
    def start(folder: Path, port: int) -> Iterator[int]:
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n"
                        "max_queued_messages 0\n")
        with server_process([binary, "-c", str(conf)], port, label="mosquitto") as p:
            yield p.pid

    return Peer("mosquitto", start, _broker_publishers, Credentials("sub"), "bench/#")


def _amqtt_peer() -> Peer | None:
    binary = Path(sys.executable).parent / "amqtt"
    if not binary.exists():
        return None

    @contextmanager
    def start(folder: Path, port: int) -> Iterator[int]:
        conf = folder / "amqtt.yaml"
        conf.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\nplugins:\n"
                        "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
        with server_process([str(binary), "-c", str(conf)], port, label="amqtt broker") as p:
            yield p.pid

    return Peer("amqtt broker", start, _broker_publishers, Credentials("sub"), "bench/#")


def _measure(peer: Peer, qos: int, publishers: int, total: int, root: Path) -> Measurement:
    folder = Path(tempfile.mkdtemp(dir=root))
    port = free_port()
    with peer.start(folder, port) as pid:
        result = run_load_processes("127.0.0.1", port, peer.publishers(publishers), peer.subscriber,
                                    peer.topic_filter, total // publishers, qos, window=100, limit_secs=300,
                                    label=f"{peer.name} QoS {qos}")
        rss, peak = process_memory_mib(pid)
    return Measurement(peer.name, qos, result, rss, peak)


def _print(measurements: list[Measurement], publishers: int, total: int) -> None:
    print(f"\n## Module → module: {publishers} modules → 1 module, {total} msgs of 256 bytes, "
          "window 100 (bench.mqtt_loadgen over worker processes)\n")
    print("edgehub: persisted (storeBackend rocksdb or sqlite), routed through BrokeredEndpoint to a module "
          "input, delivered QoS 1 to the module.\npeers: plain pub/sub, same load generator, same run.\n")
    print("| peer | QoS | delivered | msg/s | vs mosquitto | vs amqtt | ack p50 ms | ack p99 ms | RSS MiB | "
          "peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    by = {(m.peer, m.qos): m.rate for m in measurements}
    for m in measurements:
        mosq, amqtt = by.get(("mosquitto", m.qos)), by.get(("amqtt broker", m.qos))
        vs_mosq = f"{m.rate / mosq:.2f}" if mosq else "-"
        vs_amqtt = f"{m.rate / amqtt:.2f}" if amqtt else "-"
        p50 = f"{m.result.percentile(50) * 1000:.1f}" if m.qos else "-"
        p99 = f"{m.result.percentile(99) * 1000:.1f}" if m.qos else "-"
        note = f" ({'; '.join(m.result.errors)})" if m.result.errors else ""
        print(f"| {m.peer}{note} | {m.qos} | {m.result.received} | {m.rate:,.0f} | {vs_mosq} | {vs_amqtt} | "
              f"{p50} | {p99} | {m.rss_mib:.1f} | {m.peak_rss_mib:.1f} |")


def run(quick: bool = False) -> None:
    publishers = 4
    total = 8_000 if quick else 100_000
    rocksdb = importlib.util.find_spec("rocksdict") is not None  # no armhf wheel: SQLite only there
    hubs = [_edgehub_peer(False), _edgehub_peer(False, "sqlite"), _edgehub_peer(True)] if rocksdb else [
        _edgehub_peer(False, "sqlite"), _edgehub_peer(True, "sqlite")]
    peers = [p for p in (*hubs, _mosquitto_peer(), _amqtt_peer()) if p]
    root = Path(tempfile.mkdtemp(prefix="edgehub-mqtt-bench-"))
    measurements: list[Measurement] = []
    try:
        for qos in (0, 1):
            for peer in peers:
                if "storeSyncWrites" in peer.name and qos == 0:
                    continue
                count = min(total, 30_000) if peer.name == "amqtt broker" else total
                measurements.append(_measure(peer, qos, publishers, count, root))
                m = measurements[-1]
                print(f"  {m.peer} QoS {qos}: {m.rate:,.0f} msg/s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print(measurements, publishers, total)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
