"""An MQTT 3.1.1 load generator: N publishers pipelining QoS 0/1 publishes, one subscriber.

Its own minimal packet code (CONNECT, PUBLISH, PUBACK, SUBSCRIBE), independent of the
hub's codec, so one load drives the hub and its peers (mosquitto, amqtt) the same way.
"""

from __future__ import annotations

import asyncio
import struct
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench import timeline


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, username: str | None, password: str | None, keepalive: int = 60,
                   clean: bool = True) -> bytes:
    flags = 0x02 if clean else 0x00  # clean session [MQTT-3.1.2-6]
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
    if password is not None:
        flags |= 0x40
        payload += _string(password)
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int, packet_id: int) -> bytes:
    variable = _string(topic) + (struct.pack("!H", packet_id) if qos else b"")
    body_len = len(variable) + len(payload)
    return bytes([0x30 | (qos << 1)]) + _remaining_length(body_len) + variable + payload


def subscribe_packet(topic_filter: str, qos: int, packet_id: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + _string(topic_filter) + bytes([qos])
    return b"\x82" + _remaining_length(len(body)) + body


class PacketReader:
    """Splits a byte stream into (first byte, body) pairs."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        packets = []
        buf = self.buffer
        pos = 0
        while True:
            if len(buf) - pos < 2:
                break
            multiplier, length, i = 1, 0, pos + 1
            while True:
                if i >= len(buf):
                    length = -1
                    break
                byte = buf[i]
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                i += 1
                if not byte & 0x80:
                    break
            if length < 0 or len(buf) - i < length:
                break
            packets.append((buf[pos], bytes(buf[i:i + length])))
            pos = i + length
        del buf[:pos]
        return packets


Connector = Callable[[str, int], Awaitable[tuple[Any, Any]]]
"""Opens (reader, writer) with asyncio's stream interface: plain TCP by default, TLS or
MQTT over WebSocket from bench.ws_stream."""


@dataclass
class Credentials:
    client_id: str
    username: str | None = None
    password: str | None = None
    topic: str = "bench/telemetry"
    connect: Connector | None = None
    clean: bool = True
    """False keeps the session, and what the broker queues for it while away [MQTT-3.1.2-4]."""


@dataclass
class LoadResult:
    published: int = 0
    acked: int = 0
    received: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    """perf_counter of each PUBACK (QoS 1), for throughput over time."""
    delivery_times: list[float] = field(default_factory=list)
    """perf_counter of each PUBLISH the subscriber received."""

    def merge(self, other: LoadResult) -> None:
        """Add a worker's publisher counts (bench.loadgen_processes); ``seconds`` stays this run's."""
        self.published += other.published
        self.acked += other.acked
        self.latencies += other.latencies
        self.errors += other.errors
        self.ack_times += other.ack_times

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


CONNECTS_IN_FLIGHT = 24
"""CONNECTs awaiting their CONNACK at once, per event loop: the hub admits 64 unauthenticated connections
per source address and evicts the oldest beyond (edgehub.heads.mqtt.admission), and every load comes
from 127.0.0.1."""
_connect_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary())


async def _open(
    host: str, port: int, creds: Credentials
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    slots = _connect_slots.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(CONNECTS_IN_FLIGHT))
    async with slots:
        return await _connect(host, port, creds)


async def _connect(
    host: str, port: int, creds: Credentials
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await (creds.connect or asyncio.open_connection)(host, port)
    writer.write(connect_packet(creds.client_id, creds.username, creds.password, clean=creds.clean))
    header = await asyncio.wait_for(reader.readexactly(4), 10)
    if header[0] != 0x20 or header[3] != 0:
        raise ConnectionError(f"{creds.client_id}: CONNACK refused ({header.hex()})")
    return reader, writer


class _Publisher:
    """One connection pipelining ``count`` publishes, at most ``window`` unacknowledged (QoS 1)."""

    def __init__(self, creds: Credentials, count: int, qos: int, window: int, result: LoadResult) -> None:
        self.creds, self.count, self.qos, self.window, self.result = creds, count, qos, window, result
        self.sent_at: deque[float] = deque()
        self.parser = PacketReader()
        self.in_flight = 0
        self.acked = 0
        self.can_send = asyncio.Event()
        self.can_send.set()

    def on_data(self, data: bytes) -> None:
        now = time.perf_counter()
        for first, _ in self.parser.feed(data):
            if first == 0x40:  # PUBACK, in order for one connection [MQTT-4.6.0-2]
                self.result.latencies.append(now - self.sent_at.popleft())
                self.result.ack_times.append(now)
                self.acked += 1
                self.result.acked += 1
                self.in_flight -= 1
        if self.in_flight < self.window:
            self.can_send.set()

    async def read_acks(self, reader: asyncio.StreamReader) -> None:
        try:
            while self.acked < self.count:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError(f"{self.creds.client_id}: closed after {self.acked} acks")
                self.on_data(data)
        finally:
            self.can_send.set()  # wakes the sender whether the acks are all in or the connection failed

    async def window_open(self, acks: asyncio.Task[None]) -> None:
        if self.in_flight < self.window:
            return
        self.can_send.clear()
        await self.can_send.wait()
        if acks.done():
            acks.result()  # raises what ended the connection

    async def run(self, host: str, port: int, payload: bytes) -> None:
        reader, writer = await _open(host, port, self.creds)
        acks = asyncio.create_task(self.read_acks(reader)) if self.qos else None
        packet_id = 0
        for _ in range(self.count):
            if acks is not None:
                await self.window_open(acks)
                packet_id = packet_id % 65535 + 1
                self.sent_at.append(time.perf_counter())
                self.in_flight += 1
            writer.write(publish_packet(self.creds.topic, payload, self.qos, packet_id))
            self.result.published += 1
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()
        await (acks if acks is not None else writer.drain())
        writer.close()


async def _publisher(host: str, port: int, creds: Credentials, count: int, qos: int, window: int,
                     payload: bytes, result: LoadResult) -> None:
    await _Publisher(creds, count, qos, window, result).run(host, port, payload)


async def _subscriber(host: str, port: int, creds: Credentials, topic_filter: str, expected: int,
                      result: LoadResult, ready: asyncio.Event, first_publish: Callable[[], float],
                      qos: int = 1) -> None:
    """Subscribe at ``qos`` (the load's QoS: QoS 0 end to end is a QoS 0 subscription) and count."""
    reader, writer = await _open(host, port, creds)
    writer.write(subscribe_packet(topic_filter, qos))
    parser = PacketReader()
    subscribed = False
    while result.received < expected:
        data = await reader.read(262144)
        if not data:
            raise ConnectionError("subscriber: connection closed")
        acks = bytearray()
        now = time.perf_counter()
        for first, body in parser.feed(data):
            kind = first >> 4
            if kind == 9:
                subscribed = True
                ready.set()
            elif kind == 3:
                result.received += 1
                result.delivery_times.append(now)
                qos = (first >> 1) & 3
                if qos:
                    topic_len = struct.unpack_from("!H", body)[0]
                    acks += b"\x40\x02" + body[2 + topic_len:4 + topic_len]
        if acks:
            writer.write(bytes(acks))
    result.seconds = time.perf_counter() - first_publish()
    # A persistent session's queued messages may all arrive before the SUBACK of its new SUBSCRIBE.
    assert subscribed or result.received, "subscriber: neither a SUBACK nor a message"
    writer.close()


async def run_load(host: str, port: int, publishers: list[Credentials], subscriber: Credentials | None,
                   topic_filter: str, per_publisher: int, qos: int, window: int = 100,
                   payload_size: int = 256, limit_secs: float = 120.0,
                   label: str | None = None) -> LoadResult:
    """Publish ``per_publisher`` messages from each publisher; the subscriber (if any)
    counts deliveries. ``seconds`` runs from the first publish to the last delivery
    (or the last ack without a subscriber). Deliveries (else acks) join the running
    scenario's throughput plot under ``label``."""
    result = LoadResult()
    payload = b"p" * payload_size
    ready = asyncio.Event()
    started = [0.0]
    total = per_publisher * len(publishers)
    sub_task = None
    if subscriber is not None:
        sub_task = asyncio.create_task(
            _subscriber(host, port, subscriber, topic_filter, total, result, ready, lambda: started[0],
                        min(qos, 1)))
        await asyncio.wait_for(ready.wait(), 10)
    started[0] = time.perf_counter()
    pubs = [_publisher(host, port, c, per_publisher, qos, window, payload, result) for c in publishers]
    await asyncio.wait_for(asyncio.gather(*pubs), limit_secs)
    if sub_task is not None:
        try:
            await asyncio.wait_for(sub_task, limit_secs)
        except TimeoutError:
            result.errors.append(f"subscriber got {result.received} of {total} within {limit_secs}s")
            result.seconds = time.perf_counter() - started[0]
    else:
        result.seconds = time.perf_counter() - started[0]
    timeline.record_arrivals(label or f"port {port}", result.delivery_times or result.ack_times)
    return result
