"""The low-memory promise (docs/architecture.md §6): a hub in low-memory mode with only the MQTT
head, inside a 64 MiB memory cgroup, takes 100 connected devices and 100,000 QoS 1 messages
queued for an offline module, is never killed, and then delivers every message it acked.

The hub's pages are charged to a cgroup v1 child made for the test (skipped with the reason where
none can be made); devices publish from four processes (tests.memory.flood) through edgehub's own
codec. Peak usage, the hub's peak RSS and the drain time are reported, never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, Final

import pytest

from edgehub.message import Identity
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import MQTT_311, ConnAck, Connect, PubAck, Publish, SubAck, Subscribe, Subscription
from tests.conformance.deployment import Deployment, events_topic, inputs_topic, module, random_key
from tests.hubproc import free_port, write_config
from tests.memory.hubmem import (
    LOW_MEMORY_MQTT_ONLY,
    MIB,
    CgroupHubProcess,
    MemoryCgroup,
    memory_cgroup,
    status_kib,
    writable_cgroup_parent,
)
from tests.reliability.netkit import RawClient

LIMIT_BYTES: Final = 64 * MIB
DEVICES: Final = [Identity(f"sensor{n:03d}") for n in range(100)]
SINK: Final = module("sink")
MESSAGES_PER_DEVICE: Final = 1000
BODY_BYTES: Final = 64
PUBLISHERS: Final = 4
ROUTES: Final = {"toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/telemetry")'}
STORE: Final = "rocksdb" if importlib.util.find_spec("rocksdict") else "sqlite"
"""What ``storeBackend=auto`` picks here (SQLite on 32-bit ARM, where rocksdict has no wheel)."""
DRAIN_TIMEOUT_SECS: Final = 120.0


def report(name: str, **figures: object) -> None:
    print(f"[memory] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture
def cgroup() -> Iterator[MemoryCgroup]:
    parent, reason = writable_cgroup_parent()
    if parent is None:
        pytest.skip(reason)
    with memory_cgroup(parent, LIMIT_BYTES) as made:
        yield made


@contextmanager
def hub_in(cgroup: MemoryCgroup, folder: Path) -> Iterator[tuple[Deployment, int]]:
    """The hub (started inside ``cgroup``) and its plaintext port; it must exit 0 when stopped."""
    keys = {identity: random_key() for identity in [*DEVICES, SINK]}
    identities = [{"deviceId": i.device_id, "primaryKey": k}
                  | ({"moduleId": i.module_id} if i.module_id else {}) for i, k in keys.items()]
    config = write_config(folder / "config.json", ROUTES, identities)
    plain = free_port()
    env = LOW_MEMORY_MQTT_ONLY | {
        "mqttSettings__port": "0", "mqttSettings__plainPort": str(plain), "storeBackend": STORE,
        "EdgeDeviceId": "edge", "IotHubHostName": "localhost", "EdgeHubHostName": "localhost",
        "MaxConnectedClients": "1000", "RuntimeLogLevel": "warning",
    }
    hub = CgroupHubProcess(folder, config, env, cgroup)
    hub.start()
    try:
        yield Deployment(hub, folder / "data" / "certs" / "dev-ca.pem", 0, keys), plain
    finally:
        alive = hub.process is not None and hub.process.poll() is None
        code = hub.stop()
        assert alive, f"the hub died (exit {code}):\n{hub.output[-3000:]}"
        assert code == 0, f"hub exited with {code}:\n{hub.output[-3000:]}"


def start_publishers(deployment: Deployment, port: int, stack: ExitStack) -> list[subprocess.Popen[str]]:
    """PUBLISHERS processes, each with its share of DEVICES connected and publishing."""
    processes = []
    for share in range(PUBLISHERS):
        devices = [
            {"client_id": d.id, "username": deployment.username(d), "password": deployment.password(d),
             "topic": events_topic(d), "first_seq": DEVICES.index(d) * MESSAGES_PER_DEVICE}
            for d in DEVICES[share::PUBLISHERS]
        ]
        process = subprocess.Popen([sys.executable, "-m", "tests.memory.flood"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        stack.callback(_close, process)
        assert process.stdin is not None
        process.stdin.write(json.dumps({"port": port, "count": MESSAGES_PER_DEVICE, "size": BODY_BYTES,
                                        "devices": devices}) + "\n")
        process.stdin.flush()
        processes.append(process)
    return processes


def _close(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def read_json_line(stream: IO[str] | None, key: str) -> Any:
    assert stream is not None
    line = stream.readline()
    assert line, f"a publisher ended without {key!r}"
    return json.loads(line)[key]


@contextmanager
def anonymous_peak(cgroup: MemoryCgroup) -> Iterator[list[int]]:
    """The largest anonymous (non-reclaimable: no swap) usage of ``cgroup`` seen, sampled every
    0.1 s while the block runs (memory.stat ``rss``; the kernel keeps no peak of it)."""
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], cgroup.rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join(5)


def drain(deployment: Deployment, port: int, expected: int) -> set[int]:
    """Connect the sink module, take and PUBACK its input messages until ``expected`` distinct
    ones arrived or DRAIN_TIMEOUT_SECS passed; the sequence numbers received."""
    client = RawClient.open(port)
    client.send(encode(Connect(MQTT_311, SINK.id, True, 60, deployment.username(SINK),
                               deployment.password(SINK).encode())))
    assert isinstance(client.read(), ConnAck)
    client.send(encode(Subscribe(1, (Subscription(inputs_topic(SINK) + "#", 1),))))
    received: set[int] = set()
    decoder = Decoder(version=MQTT_311)
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECS
    try:
        while len(received) < expected and time.monotonic() < deadline:
            client.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = client.sock.recv(1 << 20)
            assert data, "the hub closed the module's connection"
            acks = []
            for packet in decoder.feed(data):
                if isinstance(packet, Publish):
                    received.add(int(packet.payload[:10]))
                    if packet.qos:
                        acks.append(encode(PubAck(packet.packet_id)))
                else:
                    assert isinstance(packet, SubAck), packet
            client.send(b"".join(acks))
    finally:
        client.close()
    return received


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_low_memory_hub_in_64_mib_queues_100k_messages_from_100_devices_and_delivers_them_all(
    cgroup: MemoryCgroup, tmp_path: Path,
) -> None:
    with hub_in(cgroup, tmp_path) as (deployment, port), ExitStack() as publishers, \
            anonymous_peak(cgroup) as anonymous:
        pid = deployment.hub.process.pid if deployment.hub.process else 0
        started = time.monotonic()
        processes = start_publishers(deployment, port, publishers)
        assert sum(read_json_line(p.stdout, "connected") for p in processes) == len(DEVICES)
        acked: set[int] = set()
        for process in processes:
            acked.update(read_json_line(process.stdout, "acked"))
        published_secs = time.monotonic() - started
        queued_peak = cgroup.peak_bytes
        drain_started = time.monotonic()
        delivered = drain(deployment, port, len(acked))
        drained_secs = time.monotonic() - drain_started
        hub_hwm_kib = status_kib(pid, "VmHWM")
        report(f"64 MiB cgroup, low-memory, MQTT only, {STORE}",
               acked=len(acked), delivered=len(delivered & acked), publish_s=round(published_secs, 1),
               drain_s=round(drained_secs, 1), peak_usage_mib=round(cgroup.peak_bytes / MIB, 1),
               peak_while_queued_mib=round(queued_peak / MIB, 1), hub_vmhwm_mib=round(hub_hwm_kib / 1024, 1),
               peak_anonymous_mib=round(anonymous[0] / MIB, 1),
               failcnt=cgroup.failcnt, oom_kills=cgroup.oom_kills)
        assert cgroup.oom_kills == 0
        assert len(acked) == len(DEVICES) * MESSAGES_PER_DEVICE, "the hub refused messages it should queue"
        assert acked - delivered == set(), f"{len(acked - delivered)} acked messages never delivered"
