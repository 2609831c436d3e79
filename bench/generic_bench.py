"""Generic MQTT pub/sub (mqttSettings__genericTopics): fan-in (100 publishers → 1 subscriber) and
fan-out (1 publisher → 100 subscribers) at QoS 0, 1 and 2, edgehub beside mosquitto in the same
run, 256-byte payloads, plain clients on loopback.

The clients are asyncio connections speaking edgehub's own codec (one process, so the rates are
bounded by the client side too: the ratio is the figure to read). Prints a table; asserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import free_port, hub_command, process_memory_mib, server_process
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode, encode_publish
from edgehub.mqtt.packets import (
    MQTT_311,
    ConnAck,
    Connect,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
)

PAYLOAD = os.urandom(256)
WINDOW = 50
"""Unacknowledged QoS 1/2 publishes per publisher."""


@dataclass
class Server:
    name: str
    start: Callable[[Path, int], AbstractContextManager[int]]


def _edgehub() -> Server:
    @contextmanager
    def start(folder: Path, port: int) -> Iterator[int]:
        env = {k: v for k, v in os.environ.items() if "__" not in k}
        env.update({
            "StorageFolder": str(folder / "data"), "mqttSettings__plainPort": str(port),
            "mqttSettings__port": str(free_port()), "Metrics__Listener__Port": "0",
            "amqpSettings__enabled": "false", "httpSettings__enabled": "false", "RuntimeLogLevel": "warning",
            "mqttSettings__genericTopics": "true", "mqttSettings__allowAnonymous": "true",
            # unbounded like the mosquitto beside it (max_queued_messages 0): a burst of 100 x 50
            # in flight waits in the subscriber's queue instead of being dropped
            "mqttSettings__maxQueuedMessagesPerSession": "10000000",
        })
        with server_process(hub_command("run"), port, env, label="edgehub") as p:
            yield p.pid

    return Server("edgehub", start)


def _mosquitto() -> Server | None:
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

    return Server("mosquitto", start)


class Connection:
    """One MQTT 3.1.1 client: publishes inside a window, acknowledges what it receives (QoS 2 too)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = Decoder(version=MQTT_311)
        self.received = 0
        self.inflight: set[int] = set()
        self.window_open = asyncio.Event()
        self.window_open.set()
        self.done = asyncio.Event()
        self.expected = 0
        self.suback = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, port: int, client_id: str) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        connection = cls(reader, writer)
        writer.write(encode(Connect(MQTT_311, client_id, True, 120)))
        packets: list[Packet] = []
        while not packets:
            packets = connection.decoder.feed(await reader.read(65536))
        assert isinstance(packets[0], ConnAck), packets
        assert packets[0].reason_code == 0, packets
        connection.task = asyncio.get_running_loop().create_task(connection.read_forever())
        return connection

    async def read_forever(self) -> None:
        out: list[bytes] = []
        while data := await self.reader.read(1 << 18):
            for packet in self.decoder.feed(data):
                self.on_packet(packet, out)
            if out:
                self.writer.write(b"".join(out))
                out.clear()

    def on_packet(self, packet: Packet, out: list[bytes]) -> None:
        if isinstance(packet, Publish):
            if packet.qos == 1:
                out.append(encode(PubAck(packet.packet_id)))
            elif packet.qos == 2:
                out.append(encode(PubRec(packet.packet_id)))
            self.received += 1
            if self.expected and self.received >= self.expected:
                self.done.set()
        elif isinstance(packet, PubRel):
            out.append(encode(PubComp(packet.packet_id)))
        elif isinstance(packet, PubRec):
            out.append(encode(PubRel(packet.packet_id)))
        elif isinstance(packet, PubAck | PubComp):
            self.inflight.discard(packet.packet_id)
            if len(self.inflight) < WINDOW:
                self.window_open.set()
        elif isinstance(packet, SubAck):
            self.suback.set()

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        self.writer.write(encode(Subscribe(1, (Subscription(topic_filter, qos),))))
        await self.suback.wait()

    async def publish(self, topic: str, count: int, qos: int) -> None:
        packet_id = 0
        for _ in range(count):
            if qos:
                while len(self.inflight) >= WINDOW:
                    self.window_open.clear()
                    await self.window_open.wait()
                packet_id = packet_id % 65535 + 1
                self.inflight.add(packet_id)
            self.writer.write(encode_publish(topic, PAYLOAD, qos, packet_id))
            if self.writer.transport.get_write_buffer_size() > 1 << 20:
                await self.writer.drain()
        await self.writer.drain()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.writer.close()


async def _run(port: int, scenario: str, qos: int, messages: int) -> tuple[int, float]:
    """Delivered messages and seconds from the first publish to the last delivery."""
    if scenario == "fan-in":
        publishers = [await Connection.open(port, f"pub{i}") for i in range(100)]
        subscribers = [await Connection.open(port, "sub")]
        await subscribers[0].subscribe("bench/#", qos)
        per = messages // 100
        subscribers[0].expected = per * 100
        started = time.perf_counter()
        await asyncio.gather(*(p.publish(f"bench/{i}", per, qos) for i, p in enumerate(publishers)))
    else:
        publishers = [await Connection.open(port, "pub")]
        subscribers = [await Connection.open(port, f"sub{i}") for i in range(100)]
        per = messages // 100
        for s in subscribers:
            await s.subscribe("fan/#", qos)
            s.expected = per
        started = time.perf_counter()
        await publishers[0].publish("fan/x", per, qos)
    with contextlib.suppress(TimeoutError):  # QoS 0 may lose messages: the table shows what arrived
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subscribers)), 120)
    seconds = time.perf_counter() - started
    delivered = sum(s.received for s in subscribers)
    for c in (*publishers, *subscribers):
        c.close()
    return delivered, seconds


def run(quick: bool = False) -> None:
    messages = 10_000 if quick else 50_000
    servers = [s for s in (_edgehub(), _mosquitto()) if s is not None]
    root = Path(tempfile.mkdtemp(prefix="edgehub-generic-bench-"))
    rows: list[tuple[str, int, str, int, float, float]] = []
    try:
        for scenario in ("fan-in", "fan-out"):
            for qos in (0, 1, 2):
                for server in servers:
                    folder = Path(tempfile.mkdtemp(dir=root))
                    port = free_port()
                    with server.start(folder, port) as pid:
                        delivered, seconds = asyncio.run(_run(port, scenario, qos, messages))
                        rss, _ = process_memory_mib(pid)
                    rows.append((scenario, qos, server.name, delivered, delivered / seconds, rss))
                    print(f"  {server.name} {scenario} QoS {qos}: {delivered / seconds:,.0f} msg/s",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n## Generic MQTT pub/sub: fan-in 100 → 1 and fan-out 1 → 100, {messages} messages published "
          f"(fan-out delivers each to 100), 256 bytes, window {WINDOW}\n")
    print("edgehub: mqttSettings__genericTopics=true, anonymous clients, clean sessions (nothing stored), "
          "per-session queue unbounded as mosquitto's here.\n")
    print("| scenario | QoS | server | delivered | deliveries/s | vs mosquitto | RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    rate = {(sc, q, name): r for sc, q, name, _, r, _ in rows}
    for scenario, qos, name, delivered, r, rss in rows:
        mosq = rate.get((scenario, qos, "mosquitto"))
        print(f"| {scenario} | {qos} | {name} | {delivered} | {r:,.0f} | "
              f"{f'{r / mosq:.2f}' if mosq else '-'} | {rss:.1f} |")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
