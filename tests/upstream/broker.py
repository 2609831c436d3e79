"""Real-broker helpers for upstream tests: a mosquitto on a free 127.0.0.1 port, a paho subscriber, polling.

Test support only: each broker has its own generated config (persistence off) and never uses port 1883
or the system service; nothing here sleeps except bounded polls.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.hubproc import free_port as free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
POLL_INTERVAL = 0.01


async def eventually(condition: Callable[[], bool], within: float = 5.0, what: str = "condition") -> float:
    """Poll ``condition`` until true; the seconds it took. Fails the test after ``within`` seconds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"{what} not reached within {within} s")
        await asyncio.sleep(POLL_INTERVAL)
    return time.monotonic() - started


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """PEM files for a TLS listener: server chain and key, and the CA clients must trust."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass
class Mosquitto:
    """One mosquitto process; ``stop`` then ``start`` brings it back on the same port."""

    folder: Path
    port: int = field(default_factory=free_port)
    tls: BrokerTls | None = None
    process: asyncio.subprocess.Process | None = None
    websocket_port: int | None = None
    """A second, plain MQTT-over-WebSocket listener (mosquitto's ``protocol websockets``) when set."""

    @property
    def config_file(self) -> Path:
        return self.folder / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.folder / "mosquitto.log"

    def _write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 100000",
            f"log_dest file {self.log_file}",
            f"listener {self.port} 127.0.0.1",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto would switch to its own user, which cannot read the
            # test's private temporary folder (keys, log).
            lines.insert(0, "user root")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
            ]
        if self.websocket_port is not None:
            lines += [f"listener {self.websocket_port} 127.0.0.1", "protocol websockets"]
        self.config_file.write_text("\n".join(lines) + "\n")

    async def start(self) -> None:
        self._write_config()
        self.log_file.unlink(missing_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            MOSQUITTO, "-c", str(self.config_file),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        # mosquitto binds before it loads certificates; "running" is logged once it serves.
        await eventually(self._running_or_dead, what=f"mosquitto running on {self.port}")
        if self.process.returncode is not None:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"mosquitto exited with {self.process.returncode}:\n{log}")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    def _running_or_dead(self) -> bool:
        if self.process is None or self.process.returncode is not None:
            return True
        return self.log_file.exists() and " running" in self.log_file.read_text()


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes


class Subscriber:
    """A paho client on its own thread that records every message on ``topic_filter``."""

    def __init__(self, port: int, topic_filter: str = "#") -> None:
        self.messages: list[Received] = []
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{port}")
        self._client.on_connect = lambda client, *_: client.subscribe(topic_filter, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._record
        self._port = port

    def _record(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.messages.append(Received(message.topic, bytes(message.payload)))

    async def start(self) -> None:
        self._client.connect("127.0.0.1", self._port)
        self._client.loop_start()
        await eventually(self._subscribed.is_set, what="test subscription")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    async def publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        await eventually(info.is_published, what=f"PUBACK for {topic}")
