"""Real parts for end-to-end tests: a mosquitto that survives restarts, an observer on it, SAS devices.

Test support only, all synchronous (paho runs its own threads, the hub is a subprocess); every wait is a
bounded poll, every process, socket and thread is closed by the ``close``/``stop`` that owns it.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity
from tests.hubproc import HubProcess, free_port

MOSQUITTO: Final = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
POLL_INTERVAL: Final = 0.02
DEVICE_API_VERSION: Final = "2021-04-12"
EVENTS_FILTER: Final = "devices/+/messages/events/#"


def key(seed: str) -> str:
    """A base64 shared access key derived from ``seed`` (32 bytes, as IoT Hub generates them)."""
    return base64.b64encode(seed.encode().ljust(32, b"-")[:32]).decode()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` every few ms until true; the seconds it took. AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(POLL_INTERVAL)
    return time.monotonic() - started


def upstream_env(broker_port: int, edge_key: str, *, device_id: str = "edge", tls: bool = False,
                 host: str = "127.0.0.1") -> dict[str, str]:
    """Hub environment: its own ports, cleanup every second, and an MQTT upstream to ``host:broker_port``."""
    return {
        "EdgeHubConnectionString": (
            f"HostName={host}:{broker_port};DeviceId={device_id};ModuleId=$edgeHub;SharedAccessKey={edge_key}"
        ),
        "UpstreamProtocol": "Mqtt",
        "UpstreamTls": "true" if tls else "false",
        "mqttSettings__plainPort": str(free_port()),
        "mqttSettings__port": str(free_port()),
        "MessageCleanupIntervalSecs": "1",
    }


class Broker:
    """A mosquitto with persistence on: ``stop`` (SIGTERM, the session store is saved) then ``start``
    brings it back on the same port with every persistent session and its queued messages."""

    def __init__(self, folder: Path, port: int | None = None, extra: Iterable[str] = ()) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def log_file(self) -> Path:
        return self.folder / f"mosquitto-{self.starts}.log"

    def _write_config(self) -> Path:
        lines = [
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.folder}/",
            "max_queued_messages 1000000",
            "max_inflight_messages 100",
            f"log_dest file {self.log_file}",
            f"listener {self.port} 127.0.0.1",
            *self.extra,
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # as root mosquitto would drop to a user that cannot read tmp
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> Broker:
        self.starts += 1
        config = self._write_config()
        process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        self.process = process
        wait_until(lambda: process.poll() is not None or " running" in self._log(), timeout,
                   f"mosquitto running on {self.port}")
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {process.returncode}:\n{self._log()}")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


@dataclass(frozen=True, slots=True)
class Arrival:
    topic: str
    sender: str
    seq: int


class Observer:
    """A persistent session (CleanSession=0, QoS 1) on a Broker: it sees every telemetry message,
    also those the broker took while the observer was reconnecting after a broker restart."""

    def __init__(
        self, broker: Broker, topic_filter: str = EVENTS_FILTER, client_id: str = "observer"
    ) -> None:
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._filter = topic_filter
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._connected
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._record
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        wait_until(self._subscribed.is_set, 10, "observer subscribed")

    def _connected(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        client.subscribe(self._filter, qos=1)

    def _record(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        sender, _, seq = message.payload.decode().partition(":")
        with self._lock:
            self.arrivals.append(Arrival(message.topic, sender, int(seq)))

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def distinct(self) -> set[tuple[str, int]]:
        return {(a.sender, a.seq) for a in self.snapshot()}

    def wait_for(self, expected: Iterable[tuple[str, int]], timeout: float) -> float:
        wanted = set(expected)
        return wait_until(lambda: wanted <= self.distinct(), timeout,
                          f"observer received all {len(wanted)} messages (has {len(self.distinct())})")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Device:
    """A device on a hub's plaintext MQTT port, SAS-authenticated, publishing ``{id}:{seq}`` at QoS 1.

    Paho keeps up to 50 publishes in flight and queues the rest, so ``publish(range)`` returns at
    once and the messages stream to the hub at the pace of its PUBACKs.
    """

    def __init__(self, device_id: str, device_key: str, port: int, hub_name: str = "localhost") -> None:
        self.device_id = device_id
        self.sent: list[tuple[int, paho.MQTTMessageInfo]] = []
        self._closed = False
        self._connected = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device_id)
        identity = Identity(device_id)
        token = make_sas_token(sas_resource(hub_name, identity), device_key, int(time.time()) + 3600)
        self._client.username_pw_set(f"{hub_name}/{device_id}/?api-version={DEVICE_API_VERSION}", token)
        self._client.max_inflight_messages_set(50)
        self._client.on_connect = lambda *_: self._connected.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        wait_until(self._connected.is_set, 10, f"{device_id} connected")

    def publish(self, seqs: Iterable[int], properties: str = "") -> None:
        topic = f"devices/{self.device_id}/messages/events/{properties}"
        for seq in seqs:
            self.sent.append((seq, self._client.publish(topic, f"{self.device_id}:{seq}".encode(), qos=1)))

    def acked(self) -> list[int]:
        """Seqs whose PUBACK came from the hub (the hub stored them)."""
        return [seq for seq, info in self.sent if info.is_published()]

    def wait_acked(self, timeout: float) -> None:
        wait_until(lambda: len(self.acked()) == len(self.sent), timeout,
                   f"{self.device_id}: PUBACK for all {len(self.sent)} publishes")

    def close(self) -> None:
        """Disconnect; publishes still unacknowledged are dropped (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class Tally:
    """What arrived per sender: distinct seqs in order of first arrival, and how many were repeats."""

    first_seen: dict[str, list[int]] = field(default_factory=dict)
    duplicates: int = 0

    @classmethod
    def of(cls, arrivals: Iterable[Arrival]) -> Tally:
        tally = cls()
        seen: set[tuple[str, int]] = set()
        for arrival in arrivals:
            if (arrival.sender, arrival.seq) in seen:
                tally.duplicates += 1
                continue
            seen.add((arrival.sender, arrival.seq))
            tally.first_seen.setdefault(arrival.sender, []).append(arrival.seq)
        return tally

    def out_of_order(self) -> dict[str, list[int]]:
        """Senders whose first arrivals are not in publish order, with that order."""
        return {s: seqs for s, seqs in self.first_seen.items() if seqs != sorted(seqs)}

    def missing(self, expected: Mapping[str, Iterable[int]]) -> dict[str, list[int]]:
        gaps = {s: sorted(set(seqs) - set(self.first_seen.get(s, []))) for s, seqs in expected.items()}
        return {s: gap for s, gap in gaps.items() if gap}


def next_line(hub: HubProcess, matches: Callable[[str], bool], timeout: float) -> str | None:
    """The hub's next output line for which ``matches`` is true, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        line = hub.readline(left)
        if line is None:
            break
        if matches(line):
            return line
    return None


def metric(port: int, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The summed value of samples ``name{labels...}`` on a hub's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    wanted = [f'{k}="{v}"' for k, v in (labels or {}).items()]
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and all(w in line for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


def sent_upstream(metrics_port: int) -> float:
    """Messages the hub's ``$upstream`` confirmed delivered (PUBACKed by its parent)."""
    return metric(metrics_port, "edgehub_messages_sent_total", {"to": "upstream"})
