"""Many senders up: per-identity upstream connections vs the single multiplexed link vs a mosquitto bridge.

Real processes only (``edgehub run`` twice, mosquitto), loaded over loopback by bench.mqtt_loadgen with
one connection per device; a raw sink on the upstream mosquitto counts what arrives. Prints a table;
never fails on a timing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.common import free_port, process_memory_mib
from bench.mqtt_loadgen import Credentials, LoadResult, run_load
from bench.upstream_bench import MOSQUITTO, _close, _mosquitto, _mosquitto_config, _stop, _with_sink
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity

HOST: Final = "localhost"
WINDOW: Final = 20
PAYLOAD_BYTES: Final = 256
LIMIT_SECS: Final = 600.0


@dataclass(frozen=True)
class _Devices:
    count: int
    key: str

    @property
    def identities(self) -> list[Identity]:
        return [Identity(f"dev{i:03d}") for i in range(self.count)]

    def credentials(self) -> list[Credentials]:
        expiry = int(time.time()) + 3600
        return [
            Credentials(d.id, f"{HOST}/{d.id}/?api-version=2021-04-12",
                        make_sas_token(sas_resource(HOST, d), self.key, expiry),
                        topic=f"devices/{d.id}/messages/events/")
            for d in self.identities
        ]


@dataclass
class Result:
    peer: str
    delivered: int
    seconds: float
    connections: int
    rss_mib: float
    errors: list[str]

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


class _Lines:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def wait(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            time.sleep(0.05)  # polling a child's output (a bench, not a test)
        raise RuntimeError(f"edgehub printed no {needle!r}:\n{''.join(self.lines[-20:])}")

    def close(self) -> None:
        self._thread.join(10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


@contextlib.contextmanager
def _edgehub(
    folder: Path, devices: _Devices, upstream_port: int, mode: str,
) -> Iterator[tuple[int, int, _Lines]]:
    folder.mkdir(parents=True)
    config = folder / "config.json"
    config.write_text(json.dumps({
        "schemaVersion": "1.1", "routes": {"up": "FROM /messages/* INTO $upstream"},
        "identities": [{"deviceId": d.id, "primaryKey": devices.key} for d in devices.identities],
    }))
    plain = free_port()
    env = {k: v for k, v in os.environ.items() if "__" not in k}
    env.update({
        "StorageFolder": str(folder / "data"), "mqttSettings__plainPort": str(plain),
        "mqttSettings__port": str(free_port()), "Metrics__Listener__Port": "0",
        "amqpSettings__enabled": "false", "httpSettings__enabled": "false", "PYTHONUNBUFFERED": "1",
        "UpstreamProtocol": "Mqtt", "UpstreamTls": "false", "IotHubHostName": HOST,
        "UpstreamIdentityMode": mode,
        "EdgeHubConnectionString": (
            f"HostName=127.0.0.1:{upstream_port};DeviceId=edge;ModuleId=$edgeHub;SharedAccessKey={devices.key}"
        ),
    })
    proc = subprocess.Popen([sys.executable, "-m", "edgehub", "run", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = _Lines(proc)
    try:
        lines.wait("upstream:", 60)
        yield plain, proc.pid, lines
    finally:
        _stop(proc)
        lines.close()


async def _load(upstream_port: int, entry_port: int, devices: _Devices, per_device: int,
                sink_id: str) -> tuple[LoadResult, int, float]:
    sink, task = await _with_sink(upstream_port, sink_id, clean=True)
    try:
        total = devices.count * per_device
        sink.expect(total)
        started = time.perf_counter()
        load = await run_load("127.0.0.1", entry_port, devices.credentials(), None, "", per_device, 1,
                              window=WINDOW, payload_size=PAYLOAD_BYTES, limit_secs=LIMIT_SECS)
        try:
            await asyncio.wait_for(sink.arrived.wait(), LIMIT_SECS)
        except TimeoutError:
            load.errors.append(f"{sink.count} of {total} arrived upstream within {LIMIT_SECS} s")
        return load, sink.count, sink.last_at - started
    finally:
        await _close(task)


def measure(root: Path, device_count: int, per_device: int) -> list[Result]:
    devices = _Devices(device_count, base64.b64encode(secrets.token_bytes(32)).decode())
    upstream_port = free_port()
    results: list[Result] = []
    with _mosquitto(_mosquitto_config(root, "upstream", upstream_port), upstream_port):
        for mode in ("perIdentity", "multiplexed"):
            with _edgehub(root / mode, devices, upstream_port, mode) as (plain, pid, lines):
                load, delivered, seconds = asyncio.run(_load(upstream_port, plain, devices, per_device,
                                                             f"sink-{mode}"))
                rss = process_memory_mib(pid)[0]
                opened = sum("opening a connection as" in line for line in lines.lines)
            results.append(Result(f"edgehub {mode}", delivered, seconds, 1 + opened, rss, load.errors))
        bridge_port = free_port()
        bridge_folder = root / "bridge"
        bridge_folder.mkdir()
        bridge = _mosquitto_config(bridge_folder, "bridge", bridge_port, [
            "connection upstream", f"address 127.0.0.1:{upstream_port}", "topic # out 1",
            "cleansession false", "clientid edge-bridge", "bridge_protocol_version mqttv311",
        ])
        with _mosquitto(bridge, bridge_port) as proc:
            load, delivered, seconds = asyncio.run(_load(upstream_port, bridge_port, devices, per_device,
                                                         "sink-bridge"))
            results.append(Result("mosquitto bridge", delivered, seconds, 1, process_memory_mib(proc.pid)[0],
                                  load.errors))
    return results


def _print(results: list[Result], device_count: int, per_device: int) -> None:
    print(f"\n## Many senders up: {device_count} devices x {per_device} msgs of {PAYLOAD_BYTES} bytes → "
          "peer → upstream mosquitto, QoS 1\n")
    print(f"one load-generator connection per device, window {WINDOW}; same load, same run.\n")
    bridge = next((r for r in results if r.peer == "mosquitto bridge"), None)
    print("| peer | delivered | msg/s | ratio vs bridge | upstream connections | RSS MiB |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r.rate / bridge.rate:.2f}" if bridge and bridge.rate else "-"
        errors = f" ({'; '.join(r.errors)})" if r.errors else ""
        print(f"| {r.peer}{errors} | {r.delivered} | {r.rate:,.0f} | {ratio} | {r.connections} | "
              f"{r.rss_mib:.1f} |")


def run(quick: bool = False) -> None:
    if MOSQUITTO is None:
        print("\n## Many senders up: skipped (no mosquitto; install Debian's mosquitto)")
        return
    device_count, per_device = (20, 100) if quick else (100, 1000)
    root = Path(tempfile.mkdtemp(prefix="edgehub-identity-bench-"))
    try:
        results = measure(root, device_count, per_device)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print(results, device_count, per_device)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
