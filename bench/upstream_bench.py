"""Store and forward to an upstream broker: offline ingest then drain; steady state beside a mosquitto bridge;
the upstream link over MQTT (``Mqtt``) against MQTT over WebSocket (``MqttWs``), same load, same run.

Real processes only (``edgehub run``, mosquitto), loaded by bench.mqtt_loadgen over loopback; a raw
MQTT sink on the upstream mosquitto counts what arrives. Prints tables; never fails on a timing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.common import free_port, process_memory_mib, wait_listening
from bench.mqtt_loadgen import Credentials, LoadResult, PacketReader, run_load, subscribe_packet
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity

HOST: Final = "localhost"
PUBLISHERS: Final = 4
WINDOW: Final = 100
PAYLOAD_BYTES: Final = 256
SINK_FILTER: Final = "devices/#"
LIMIT_SECS: Final = 600.0
MOSQUITTO: Final = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")


# --- processes ------------------------------------------------------------------------------------


def _mosquitto_config(folder: Path, name: str, port: int, extra: Sequence[str] = ()) -> Path:
    """A mosquitto config: persistence in ``folder``, queues for offline sessions practically unbounded."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {folder}/",
        "max_inflight_messages 0",
        "max_queued_messages 10000000",
        *extra,
    ]
    if os.geteuid() == 0:
        lines.insert(0, "user root")  # as root mosquitto would drop to a user that cannot read the folder
    path = folder / f"{name}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def _mosquitto(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A running mosquitto; SIGTERM on exit (it saves its persistent sessions then)."""
    assert MOSQUITTO is not None
    proc = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class _Hub:
    """``edgehub run`` with its output lines timestamped (perf_counter) as they appear."""

    proc: subprocess.Popen[bytes]
    plain_port: int
    started_at: float
    lines: queue.Queue[tuple[float, str]] = field(default_factory=queue.Queue)

    def pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put((time.perf_counter(), raw.decode(errors="replace")))

    def wait_line(self, needle: str, timeout: float) -> float:
        """When a line containing ``needle`` appeared (bounded wait; earlier lines are consumed)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(queue.Empty):
                at, line = self.lines.get(timeout=left)
                if needle in line:
                    return at
        raise RuntimeError(f"edgehub printed no line with {needle!r} within {timeout} s")


@dataclass(frozen=True)
class _Fleet:
    """The devices of a run: their hub config entries and load-generator credentials."""

    key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    devices: tuple[Identity, ...] = tuple(Identity(f"bench{i}") for i in range(PUBLISHERS + 1))

    def credentials(self, identity: Identity) -> Credentials:
        token = make_sas_token(sas_resource(HOST, identity), self.key, int(time.time()) + 3600)
        return Credentials(identity.id, f"{HOST}/{identity.id}/?api-version=2021-04-12", token,
                           topic=f"devices/{identity.device_id}/messages/events/")

    @property
    def publishers(self) -> list[Credentials]:
        return [self.credentials(d) for d in self.devices[:PUBLISHERS]]

    @property
    def probe(self) -> Credentials:
        return self.credentials(self.devices[PUBLISHERS])


@contextlib.contextmanager
def _edgehub(folder: Path, fleet: _Fleet, upstream_port: int, protocol: str = "Mqtt") -> Iterator[_Hub]:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.json"
    config.write_text(json.dumps({
        "schemaVersion": "1.1",
        "routes": {"upstream": "FROM /messages/* INTO $upstream"},
        "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
        "identities": [{"deviceId": d.device_id, "primaryKey": fleet.key} for d in fleet.devices],
    }))
    plain_port = free_port()
    env = {k: v for k, v in os.environ.items() if "__" not in k}
    env.update({
        "StorageFolder": str(folder / "data"), "mqttSettings__plainPort": str(plain_port),
        "mqttSettings__port": str(free_port()), "Metrics__Listener__Port": "0",
        "amqpSettings__enabled": "false", "httpSettings__enabled": "false", "PYTHONUNBUFFERED": "1",
        "UpstreamProtocol": protocol, "UpstreamTls": "false",
        "https_proxy": "", "HTTPS_PROXY": "",
        "EdgeHubConnectionString": (
            f"HostName=127.0.0.1:{upstream_port};DeviceId=edge;ModuleId=$edgeHub;SharedAccessKey={fleet.key}"
        ),
    })
    proc = subprocess.Popen([sys.executable, "-m", "edgehub", "run", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    hub = _Hub(proc, plain_port, time.perf_counter())
    reader = threading.Thread(target=hub.pump, daemon=True)
    reader.start()
    try:
        hub.wait_line("upstream:", 60)
        yield hub
    finally:
        _stop(proc)
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()


# --- the sink on the upstream broker --------------------------------------------------------------


def _connect_packet(client_id: str, clean: bool) -> bytes:
    """MQTT 3.1.1 CONNECT, no credentials; ``clean=False`` keeps the session (and what queued for it)."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04" + bytes([0x02 if clean else 0x00]) + struct.pack("!H", 60)
    body += struct.pack("!H", len(cid)) + cid
    return b"\x10" + bytes([len(body)]) + body


@dataclass
class _Sink:
    """Counts QoS 1 messages on the upstream broker and notes when the first and the last arrived."""

    count: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 1

    def expect(self, count: int) -> None:
        self.count, self.first_at, self.last_at, self.expected = 0, 0.0, 0.0, count
        self.arrived.clear()

    async def run(self, port: int, client_id: str, clean: bool, ready: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_connect_packet(client_id, clean) + subscribe_packet(SINK_FILTER, 1))
            parser = PacketReader()
            while data := await reader.read(262_144):
                now = time.perf_counter()
                acks = bytearray()
                for first, body in parser.feed(data):
                    if first >> 4 == 9:  # SUBACK
                        ready.set()
                    elif first >> 4 == 3:  # PUBLISH
                        self._arrived(now)
                        if first & 0x06:
                            topic_len = struct.unpack_from("!H", body)[0]
                            acks += b"\x40\x02" + body[2 + topic_len:4 + topic_len]
                writer.write(bytes(acks))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _arrived(self, now: float) -> None:
        if not self.count:
            self.first_at = now
        self.count += 1
        self.last_at = now
        if self.count >= self.expected:
            self.arrived.set()


async def _with_sink(port: int, client_id: str, clean: bool) -> tuple[_Sink, asyncio.Task[None]]:
    sink = _Sink()
    ready = asyncio.Event()
    task = asyncio.create_task(sink.run(port, client_id, clean, ready))
    done, _ = await asyncio.wait({task, asyncio.ensure_future(ready.wait())}, timeout=10,
                                 return_when=asyncio.FIRST_COMPLETED)
    if task in done or not ready.is_set():
        task.cancel()
        raise RuntimeError(f"the sink could not subscribe on port {port}")
    return sink, task


async def _close(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# --- 1. offline ingest, then drain ------------------------------------------------------------


@dataclass
class OfflineResult:
    ingest: LoadResult
    store_bytes: int
    rss_mib: float
    outage: float
    """The hub's start to the broker's start: how long the link has been backing off."""
    broker_to_reconnect: float | None
    broker_to_first: float
    drain_seconds: float
    delivered: int


def _disk_usage(folder: Path) -> int:
    """Bytes allocated on disk under ``folder``, as ``du`` counts them."""
    return sum(
        os.lstat(Path(root) / name).st_blocks * 512
        for root, _, files in os.walk(folder) for name in files
    )


async def _prime_session(port: int) -> None:
    """Subscribe once with a persistent session: from its next start the broker queues all for the sink."""
    _, task = await _with_sink(port, "upstream-sink", clean=False)
    await _close(task)


async def _drain(
    broker_config: Path, port: int, hub: _Hub, total: int
) -> tuple[float, float | None, float, float, int]:
    """Start the broker; (outage, its start → the hub's reconnect line, → first delivery, first → last,
    delivered)."""
    started = time.perf_counter()
    with _mosquitto(broker_config, port):
        sink, task = await _with_sink(port, "upstream-sink", clean=False)
        sink.expect(total)
        try:
            await asyncio.wait_for(sink.arrived.wait(), LIMIT_SECS)
        except TimeoutError:
            print(f"  drain: only {sink.count} of {total} arrived within {LIMIT_SECS} s", file=sys.stderr)
        finally:
            await _close(task)
    try:
        reconnected: float | None = hub.wait_line("upstream connected to", 0.1) - started
    except RuntimeError:
        reconnected = None
    outage = started - hub.started_at
    return outage, reconnected, sink.first_at - started, sink.last_at - sink.first_at, sink.count


def measure_offline(root: Path, total: int) -> OfflineResult:
    fleet = _Fleet()
    root.mkdir(parents=True)
    broker_port = free_port()
    broker_config = _mosquitto_config(root, "upstream", broker_port)
    with _mosquitto(broker_config, broker_port):
        asyncio.run(_prime_session(broker_port))
    with _edgehub(root / "edgehub", fleet, broker_port) as hub:
        ingest = asyncio.run(run_load("127.0.0.1", hub.plain_port, fleet.publishers, None, "",
                                      total // PUBLISHERS, 1, window=WINDOW, payload_size=PAYLOAD_BYTES,
                                      limit_secs=LIMIT_SECS))
        store_bytes = _disk_usage(root / "edgehub" / "data")
        rss, _ = process_memory_mib(hub.proc.pid)
        drained = asyncio.run(_drain(broker_config, broker_port, hub, ingest.acked))
    return OfflineResult(ingest, store_bytes, rss, *drained)


def _print_offline(r: OfflineResult, total: int) -> None:
    acked = r.ingest.acked
    print(f"\n## Upstream down: ingest {total} msgs of {PAYLOAD_BYTES} bytes, then drain to mosquitto\n")
    print(f"{PUBLISHERS} publishers, window {WINDOW}, QoS 1 (bench.mqtt_loadgen) → edgehub MQTT head, "
          "route FROM /messages/* INTO $upstream; storeSyncWrites=false.\n")
    reconnected = r.broker_to_reconnect
    reconnect = f"{reconnected:.2f} s" if reconnected is not None else "not observed"
    to_first = f"{r.broker_to_first - reconnected:.2f} s" if reconnected is not None else "not observed"
    drain_rate = r.delivered / r.drain_seconds if r.drain_seconds else 0.0
    rows = [
        ("ingest (acked while upstream down)", f"{acked} msgs, {acked / r.ingest.seconds:,.0f} msg/s"),
        ("ingest ack latency p50 / p99", f"{r.ingest.percentile(50) * 1000:.1f} / "
                                         f"{r.ingest.percentile(99) * 1000:.1f} ms"),
        ("StorageFolder on disk (du)", f"{r.store_bytes / 2**20:.1f} MiB"),
        ("disk bytes per stored message", f"{r.store_bytes / max(acked, 1):,.0f}"),
        ("hub RSS (VmRSS) after ingest", f"{r.rss_mib:.1f} MiB"),
        ("upstream outage (hub start → broker start)", f"{r.outage:.1f} s"),
        ("broker start → hub reconnect (its log line)", reconnect),
        ("broker start → first delivery", f"{r.broker_to_first:.2f} s"),
        ("hub reconnect → first delivery", to_first),
        ("drain (first → last delivery)",
         f"{r.delivered} msgs in {r.drain_seconds:.2f} s, {drain_rate:,.0f} msg/s"),
    ]
    print(f"| {'measure':<44} | value")
    print(f"|{'-' * 46}|------")
    for name, value in rows:
        print(f"| {name:<44} | {value}")
    if r.ingest.errors:
        print(f"\nerrors: {'; '.join(r.ingest.errors)}")


# --- 2. steady state: edgehub vs a mosquitto bridge ----------------------------------------------


@dataclass
class SteadyResult:
    peer: str
    load: LoadResult
    delivered: int
    seconds: float
    """First publish to the last arrival upstream."""
    rss_mib: float

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    @property
    def ack_rate(self) -> float:
        return self.load.acked / self.load.seconds if self.load.seconds else 0.0


async def _steady_load(upstream_port: int, entry_port: int, fleet: _Fleet, total: int,
                       sink_id: str) -> tuple[LoadResult, int, float]:
    """Warm up (one probe end to end), then the measured load into ``entry_port``, counted upstream."""
    sink, task = await _with_sink(upstream_port, sink_id, clean=True)
    try:
        sink.expect(1)
        await run_load("127.0.0.1", entry_port, [fleet.probe], None, "", 1, 1)
        await asyncio.wait_for(sink.arrived.wait(), 30)
        sink.expect(total)
        started = time.perf_counter()
        load = await run_load("127.0.0.1", entry_port, fleet.publishers, None, "", total // PUBLISHERS, 1,
                              window=WINDOW, payload_size=PAYLOAD_BYTES, limit_secs=LIMIT_SECS)
        try:
            await asyncio.wait_for(sink.arrived.wait(), LIMIT_SECS)
        except TimeoutError:
            load.errors.append(f"{sink.count} of {total} arrived upstream within {LIMIT_SECS} s")
        return load, sink.count, sink.last_at - started
    finally:
        await _close(task)


def measure_steady(root: Path, total: int) -> list[SteadyResult]:
    fleet = _Fleet()
    root.mkdir(parents=True)
    upstream_port = free_port()
    results: list[SteadyResult] = []
    upstream_config = _mosquitto_config(root, "steady-upstream", upstream_port)
    with _mosquitto(upstream_config, upstream_port):
        with _edgehub(root / "steady-edgehub", fleet, upstream_port) as hub:
            load, delivered, seconds = asyncio.run(
                _steady_load(upstream_port, hub.plain_port, fleet, total, "sink-edgehub"))
            results.append(SteadyResult("edgehub", load, delivered, seconds,
                                        process_memory_mib(hub.proc.pid)[0]))
        bridge_port = free_port()
        bridge_folder = root / "bridge"
        bridge_folder.mkdir()
        bridge_config = _mosquitto_config(bridge_folder, "bridge", bridge_port, [
            "connection upstream",
            f"address 127.0.0.1:{upstream_port}",
            "topic # out 1",
            "cleansession false",
            "clientid edge-bridge",
            "bridge_protocol_version mqttv311",
        ])
        with _mosquitto(bridge_config, bridge_port) as bridge:
            load, delivered, seconds = asyncio.run(
                _steady_load(upstream_port, bridge_port, fleet, total, "sink-bridge"))
            results.append(SteadyResult("mosquitto bridge", load, delivered, seconds,
                                        process_memory_mib(bridge.pid)[0]))
    return results


def _print_steady(results: list[SteadyResult], total: int) -> None:
    print(f"\n## Steady state: {total} msgs of {PAYLOAD_BYTES} bytes → store-and-forward peer → upstream "
          "mosquitto, QoS 1 all the way\n")
    print(f"{PUBLISHERS} publishers, window {WINDOW} (bench.mqtt_loadgen), one sink on the upstream broker; "
          "same load, same run. Bridge: mosquitto, persistence true, `topic # out 1`, cleansession false.\n")
    bridge = next((r for r in results if r.peer == "mosquitto bridge"), None)
    print("| peer | delivered | end-to-end msg/s | ratio vs bridge | acked msg/s | ack p50 ms | ack p99 ms | "
          "RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r.rate / bridge.rate:.2f}" if bridge and bridge.rate else "-"
        errors = f" ({'; '.join(r.load.errors)})" if r.load.errors else ""
        print(f"| {r.peer}{errors} | {r.delivered} | {r.rate:,.0f} | {ratio} | {r.ack_rate:,.0f} | "
              f"{r.load.percentile(50) * 1000:.1f} | {r.load.percentile(99) * 1000:.1f} | {r.rss_mib:.1f} |")


# --- 3. the upstream transport: MQTT over TCP against MQTT over WebSocket --------------------------


def measure_transports(root: Path, total: int) -> list[SteadyResult]:
    """The same steady load through edgehub with ``UpstreamProtocol=Mqtt`` then ``MqttWs``, to one upstream
    mosquitto listening for both (plain TCP, and ``protocol websockets`` at any path)."""
    fleet = _Fleet()
    root.mkdir(parents=True)
    tcp_port, ws_port = free_port(), free_port()
    config = _mosquitto_config(root, "transports", tcp_port,
                               [f"listener {ws_port} 127.0.0.1", "protocol websockets"])
    results: list[SteadyResult] = []
    with _mosquitto(config, tcp_port):
        wait_listening(ws_port)
        for protocol, port in (("Mqtt", tcp_port), ("MqttWs", ws_port)):
            with _edgehub(root / protocol, fleet, port, protocol) as hub:
                load, delivered, seconds = asyncio.run(
                    _steady_load(tcp_port, hub.plain_port, fleet, total, f"sink-{protocol}"))
                results.append(SteadyResult(protocol, load, delivered, seconds,
                                            process_memory_mib(hub.proc.pid)[0]))
    return results


def _print_transports(results: list[SteadyResult], total: int) -> None:
    print(f"\n## Upstream transport: {total} msgs of {PAYLOAD_BYTES} bytes → edgehub → upstream mosquitto "
          "over MQTT (TCP) and over MQTT over WebSocket, QoS 1 all the way\n")
    print(f"{PUBLISHERS} publishers, window {WINDOW}; the same upstream client (edgehub.mqtt.client on "
          "asyncio), plain TCP vs RFC 6455 binary frames; one sink on the upstream broker's TCP listener; "
          "same run.\n")
    tcp = next((r for r in results if r.peer == "Mqtt"), None)
    print("| UpstreamProtocol | delivered | end-to-end msg/s | ratio vs Mqtt | acked msg/s | ack p99 ms "
          "| RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r.rate / tcp.rate:.2f}" if tcp and tcp.rate else "-"
        errors = f" ({'; '.join(r.load.errors)})" if r.load.errors else ""
        print(f"| {r.peer}{errors} | {r.delivered} | {r.rate:,.0f} | {ratio} | {r.ack_rate:,.0f} | "
              f"{r.load.percentile(99) * 1000:.1f} | {r.rss_mib:.1f} |")


def run(quick: bool = False) -> None:
    if MOSQUITTO is None:
        print("\n## Upstream: skipped (no mosquitto; install Debian's mosquitto)")
        return
    offline_total = 8_000 if quick else 100_000
    steady_total = 8_000 if quick else 100_000
    root = Path(tempfile.mkdtemp(prefix="edgehub-upstream-bench-"))
    try:
        offline = measure_offline(root / "offline", offline_total)
        steady = measure_steady(root / "steady", steady_total)
        transports = measure_transports(root / "transports", steady_total)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print_offline(offline, offline_total)
    _print_steady(steady, steady_total)
    _print_transports(transports, steady_total)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
