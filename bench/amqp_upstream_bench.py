"""The upstream link over AMQP (``Amqp``, ``AmqpWs``) against MQTT (``Mqtt``): same load, parent and run.

Real processes only: devices (bench.mqtt_loadgen, QoS 1) → child ``edgehub run`` → parent ``edgehub run``
over TLS (its MQTT head, its AMQP head, or AMQP over WebSocket on its HTTPS port). Delivered = what the
child's ``$upstream`` counted confirmed by the parent (PUBACK or AMQP ``accepted``). Prints a table and
returns its rows; never fails on a timing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.common import free_port, process_memory_mib
from bench.mqtt_loadgen import Credentials, run_load
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity
from edgehub.tls import ensure_dev_certificates

HUB_NAME: Final = "bench.example"
PUBLISHERS: Final = 4
WINDOW: Final = 100
PAYLOAD_BYTES: Final = 256
LIMIT_SECS: Final = 300.0
PROTOCOLS: Final = ("Mqtt", "Amqp", "AmqpWs")


@dataclass
class _Process:
    """``edgehub run`` with its output kept (a reader thread), stopped with SIGTERM."""

    proc: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)

    def pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def wait_line(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"edgehub printed no line with {needle!r}:\n{''.join(self.lines[-30:])}")


@contextlib.contextmanager
def _edgehub(folder: Path, config: dict[str, object], env: dict[str, str]) -> Iterator[_Process]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    full = {k: v for k, v in os.environ.items() if "__" not in k} | {
        "StorageFolder": str(folder / "data"), "PYTHONUNBUFFERED": "1", "IotHubHostName": HUB_NAME,
        "https_proxy": "", "HTTPS_PROXY": "", "no_proxy": "*",
        "mqttSettings__port": str(free_port()), "mqttSettings__plainPort": str(free_port()),
        "amqpSettings__enabled": "false", "httpSettings__enabled": "false",
    } | env
    proc = subprocess.Popen([sys.executable, "-m", "edgehub", "run", "--config", str(path)], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    hub = _Process(proc)
    reader = threading.Thread(target=hub.pump, daemon=True)
    reader.start()
    try:
        hub.wait_line("upstream:", 60)
        yield hub
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(10)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process used so far (/proc/{pid}/stat utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sent_upstream(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("edgehub_messages_sent_total{") and 'to="upstream"' in line)


def _wait_sent(metrics_port: int, count: float, limit: float) -> float:
    """When the child's confirmed count reached ``count`` (perf_counter); bounded by ``limit``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if _sent_upstream(metrics_port) >= count:
            return time.perf_counter()
        time.sleep(0.02)
    raise RuntimeError(f"only {_sent_upstream(metrics_port):.0f} of {count:.0f} confirmed within {limit} s")


@dataclass(frozen=True)
class _Fleet:
    key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    devices: tuple[Identity, ...] = tuple(Identity(f"bench{i}") for i in range(PUBLISHERS + 1))

    def credentials(self, identity: Identity) -> Credentials:
        token = make_sas_token(sas_resource(HUB_NAME, identity), self.key, int(time.time()) + 3600)
        return Credentials(identity.id, f"{HUB_NAME}/{identity.id}/?api-version=2021-04-12", token,
                           topic=f"devices/{identity.device_id}/messages/events/")


def _one(protocol: str, child: _Process, parent: _Process, plain_port: int, metrics_port: int,
         fleet: _Fleet, total: int) -> dict[str, object]:
    """Warm up (one message end to end), then ``total`` messages from PUBLISHERS devices, timed from the
    first publish to the child's last confirmed delivery."""
    probe = fleet.credentials(fleet.devices[PUBLISHERS])
    asyncio.run(run_load("127.0.0.1", plain_port, [probe], None, "", 1, 1))
    _wait_sent(metrics_port, 1, 60)
    publishers = [fleet.credentials(d) for d in fleet.devices[:PUBLISHERS]]
    started = time.perf_counter()
    cpu = _cpu_seconds(child.proc.pid), _cpu_seconds(parent.proc.pid)
    load = asyncio.run(run_load("127.0.0.1", plain_port, publishers, None, "", total // PUBLISHERS, 1,
                                window=WINDOW, payload_size=PAYLOAD_BYTES, limit_secs=LIMIT_SECS))
    finished = _wait_sent(metrics_port, 1 + load.acked, LIMIT_SECS)
    seconds = finished - started
    child_cpu, parent_cpu = _cpu_seconds(child.proc.pid) - cpu[0], _cpu_seconds(parent.proc.pid) - cpu[1]
    return {
        "protocol": protocol, "delivered": load.acked, "seconds": round(seconds, 2),
        "msg/s": round(load.acked / seconds) if seconds else 0,
        "ingest ack p99 ms": round(load.percentile(99) * 1000, 1),
        "child CPU ms/msg": round(child_cpu * 1000 / max(load.acked, 1), 3),
        "parent CPU ms/msg": round(parent_cpu * 1000 / max(load.acked, 1), 3),
        "child RSS MiB": round(process_memory_mib(child.proc.pid)[0], 1),
        "errors": "; ".join(load.errors),
    }


def measure(root: Path, total: int) -> list[dict[str, object]]:
    """One parent serving MQTT (TLS), AMQP (TLS) and AMQP over WebSocket; a fresh child per protocol."""
    fleet = _Fleet()
    child_key = base64.b64encode(secrets.token_bytes(32)).decode()
    route = {"schemaVersion": "1.1", "routes": {"up": "FROM /messages/* INTO $upstream"}}
    certs = ensure_dev_certificates(root / "parent" / "data" / "certs", ["localhost", HUB_NAME])
    ports = {protocol: free_port() for protocol in PROTOCOLS}
    parent_env = {
        "mqttSettings__port": str(ports["Mqtt"]), "amqpSettings__enabled": "true",
        "amqpSettings__port": str(ports["Amqp"]), "httpSettings__enabled": "true",
        "httpSettings__port": str(ports["AmqpWs"]), "Metrics__Listener__Port": str(free_port()),
    }
    parent_identities = [{"deviceId": "child", "moduleId": "$edgeHub", "primaryKey": child_key}]
    child_identities = [{"deviceId": d.device_id, "primaryKey": fleet.key} for d in fleet.devices]
    rows: list[dict[str, object]] = []
    with _edgehub(root / "parent", route | {"identities": parent_identities}, parent_env) as parent:
        for protocol in PROTOCOLS:
            metrics_port, plain_port = free_port(), free_port()
            env = {
                "UpstreamProtocol": protocol, "UpstreamCaFile": str(certs.ca_file),
                "Metrics__Listener__Port": str(metrics_port), "mqttSettings__plainPort": str(plain_port),
                "EdgeHubConnectionString": (
                    f"HostName=localhost:{ports[protocol]};DeviceId=child;ModuleId=$edgeHub;"
                    f"SharedAccessKey={child_key}"),
            }
            with _edgehub(root / protocol, route | {"identities": child_identities}, env) as child:
                rows.append(_one(protocol, child, parent, plain_port, metrics_port, fleet, total))
    mqtt = next((r for r in rows if r["protocol"] == "Mqtt"), None)
    baseline = float(str(mqtt["msg/s"])) if mqtt else 0.0
    for row in rows:
        row["ratio vs Mqtt"] = round(float(str(row["msg/s"])) / baseline, 2) if baseline else None
    return rows


def _print(rows: list[dict[str, object]], total: int) -> None:
    print(f"\n## Upstream protocol: {total} msgs of {PAYLOAD_BYTES} bytes → child edgehub → parent edgehub, "
          "Mqtt vs Amqp vs AmqpWs, TLS, same parent, same run\n")
    print(f"{PUBLISHERS} publishers, window {WINDOW}, QoS 1 (bench.mqtt_loadgen) into the child's MQTT head; "
          "timed from the first publish to the child's last delivery confirmed by the parent (PUBACK / "
          "AMQP accepted after its durable write).\n")
    columns = ["protocol", "delivered", "seconds", "msg/s", "ratio vs Mqtt", "ingest ack p99 ms",
               "child CPU ms/msg", "parent CPU ms/msg", "child RSS MiB"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        errors = f" ({row['errors']})" if row["errors"] else ""
        print("| " + " | ".join(str(row[c]) + (errors if c == "protocol" else "") for c in columns) + " |")


def run(quick: bool = False) -> list[dict[str, object]]:
    total = 4_000 if quick else 40_000
    root = Path(tempfile.mkdtemp(prefix="edgehub-amqp-upstream-bench-"))
    try:
        rows = measure(root, total)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print(rows, total)
    return rows


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
