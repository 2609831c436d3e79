"""A socket-level fuzzer against a running hub (issue 15): random and mutated MQTT packets on
the plaintext and TLS ports, before and after CONNECT, garbage HTTP and mutated MQTT-over-WebSocket
frames on the HTTPS port, while a valid client keeps publishing and its messages keep arriving.
The hub must stay up and log no error."""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from edgehub.message import Identity
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    Connect,
    Disconnect,
    PingReq,
    PubAck,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)
from tests.conformance.deployment import events_topic, inputs_topic
from tests.hubproc import free_port
from tests.reliability.netkit import RawClient, RunningHub, memory_mib, report, running_hub

PACKETS = int(os.environ.get("EDGEHUB_FUZZ_PACKETS", "12000"))
"""12,000 in ``make test``; ``make soak`` sets more."""
FUZZER = Identity("fuzzer")
VALID = Identity("valid")
SINK = Identity("edge", "sink")
ROUTES = {"validToSink": "FROM /messages/* WHERE $connectionDeviceId = 'valid' "
                         'INTO BrokeredEndpoint("/modules/sink/inputs/in")'}
WORKERS = 8


def seeds(hub: RunningHub, version: int) -> list[bytes]:
    topic = events_topic(FUZZER)
    return [encode(p, version) for p in (
        Publish(topic, b"payload", 0), Publish(topic + "a=b", b"p" * 300, 1, packet_id=7),
        Publish(topic, b"", 2, packet_id=9),
        Subscribe(3, (Subscription("devices/fuzzer/messages/devicebound/#", 1),)),
        Subscribe(4, (Subscription("$iothub/twin/res/#", 0),)), Unsubscribe(5, ("a/#",)), PingReq(),
        PubAck(11), Publish("$iothub/twin/GET/?$rid=1", b"", 0), Disconnect(),
        Connect(version, FUZZER.id, True, 30, "localhost/fuzzer/?api-version=2021-04-12", b"pw",
                Will(topic, b"will")),
    )]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.35 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif choice < 0.5 and buf:
            at = rng.randrange(len(buf))
            del buf[at:at + rng.randint(1, 8)]
        elif choice < 0.65:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif choice < 0.8 and len(buf) > 1:
            buf[1] = rng.choice([0x00, 0x7F, 0xFF, rng.randrange(256)])  # the remaining length
        elif choice < 0.9:
            buf = buf[: rng.randrange(len(buf) + 1)]
        else:
            buf += bytes(buf)
    return bytes(buf)


class Fuzzer:
    def __init__(self, hub: RunningHub) -> None:
        self.hub = hub
        self.sent = 0
        self.connections = 0
        self.tls = hub.tls_context()

    async def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while self.sent < PACKETS:
            version = rng.choice([MQTT_311, MQTT_5])
            corpus = seeds(self.hub, version)
            use_tls = rng.random() < 0.1
            port = self.hub.deployment.tls_port if use_tls else self.hub.plain_port
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, ssl=self.tls if use_tls else None,
                    server_hostname="localhost" if use_tls else None), 10)
            except (OSError, TimeoutError, ssl.SSLError):
                continue
            self.connections += 1
            packets: list[bytes]
            mode = rng.random()
            if mode < 0.3:
                packets = [rng.randbytes(rng.randint(1, 200))]
            elif mode < 0.5:
                packets = [mutate(rng, corpus[-1])]
            else:
                packets = [self.hub.connect_packet(FUZZER, version=version)]
                packets += [mutate(rng, rng.choice(corpus)) if rng.random() < 0.7 else rng.choice(corpus)
                            for _ in range(rng.randint(1, 60))]
            try:
                for packet in packets:
                    writer.write(packet)
                    self.sent += 1
                    await writer.drain()
                await asyncio.wait_for(reader.read(65536), 0.05)
            except (OSError, TimeoutError, ssl.SSLError):
                pass
            finally:
                writer.close()

    async def http(self, rng: random.Random, count: int) -> int:
        """Garbage requests, mutated requests and mutated MQTT frames over WebSocket (HTTPS port)."""
        port = self.hub.https_port
        sent = 0
        request = (b"POST /devices/fuzzer/messages/events?api-version=2021-04-12 HTTP/1.1\r\n"
                   b"Host: localhost\r\nAuthorization: x\r\nContent-Length: 5\r\n\r\nhello")
        for n in range(count):
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, ssl=self.tls, server_hostname="localhost"), 10)
            except (OSError, TimeoutError, ssl.SSLError):
                continue
            try:
                writer.write(rng.randbytes(rng.randint(1, 300)) if n % 2 else mutate(rng, request))
                sent += 1
                await writer.drain()
                await asyncio.wait_for(reader.read(65536), 0.2)
            except (OSError, TimeoutError, ssl.SSLError):
                pass
            finally:
                writer.close()
        url = f"https://localhost:{port}/$iothub/websocket"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.tls)) as session:
            for _ in range(count // 10):
                try:
                    timeout = aiohttp.ClientWSTimeout(5)
                    async with session.ws_connect(url, protocols=("mqtt",), timeout=timeout) as ws:
                        corpus = seeds(self.hub, MQTT_311)
                        await ws.send_bytes(self.hub.connect_packet(FUZZER))
                        for _ in range(10):
                            await ws.send_bytes(mutate(rng, rng.choice(corpus)))
                            sent += 1
                except (aiohttp.ClientError, OSError, TimeoutError, ConnectionResetError):
                    pass
        return sent


def valid_traffic(hub: RunningHub, stop: threading.Event, acked: list[int]) -> None:
    client = RawClient.open(hub.plain_port)
    assert client.connect(hub, VALID) is not None
    seq = 0
    while not stop.is_set() and seq < 2000:
        seq += 1
        client.publish(events_topic(VALID), f"valid:{seq}".encode(), qos=1, packet_id=seq)
        packet = client.read()
        assert isinstance(packet, PubAck), packet
        acked.append(seq)
        time.sleep(0.002)  # a paced device, not a waiting test
    client.close()


@pytest.mark.timeout(300)
def test_the_hub_survives_random_and_mutated_packets_while_valid_clients_work(tmp_path: Path) -> None:
    with running_hub(tmp_path, ROUTES, [FUZZER, VALID, SINK], https_port=free_port()) as hub:
        sink = RawClient.open(hub.plain_port)
        assert sink.connect(hub, SINK) is not None
        assert sink.subscribe(inputs_topic(SINK) + "#") is not None
        stop = threading.Event()
        acked: list[int] = []
        valid = threading.Thread(target=valid_traffic, args=(hub, stop, acked), daemon=True)
        valid.start()
        fuzzer = Fuzzer(hub)

        async def attack() -> int:
            http_sent, *_ = await asyncio.gather(
                fuzzer.http(random.Random(99), 300), *(fuzzer.worker(seed) for seed in range(WORKERS)))
            assert http_sent is not None
            return http_sent

        started = time.monotonic()
        http_sent = asyncio.run(attack())
        elapsed = time.monotonic() - started
        stop.set()
        valid.join(30)
        received: set[int] = set()
        while len(received) < len(acked):
            packet = sink.read(timeout=20)
            assert packet is not None
            if isinstance(packet, Publish):
                received.add(int(packet.payload.decode().split(":")[1]))
                sink.send(encode(PubAck(packet.packet_id)))
        sink.close()
        after = RawClient.open(hub.plain_port)
        connack = after.connect(hub, VALID)
        after.close()
        _, peak = memory_mib(hub.pid)
    report("socket fuzzer", mqtt_packets=fuzzer.sent, connections=fuzzer.connections, http_and_ws=http_sent,
           seconds=round(elapsed, 1), valid_acked=len(acked), peak_rss_mib=round(peak))
    assert fuzzer.sent >= 10_000
    assert acked
    assert received >= set(acked)
    assert connack is not None
    assert connack.reason_code == 0
