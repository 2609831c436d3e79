"""Bounded memory under clients that do not read or that flood (issue 15): delivery pauses for
a client that does not read its socket, which is then dropped; QoS 0 floods are read slower.
Peak RSS of a real hub under each attack is reported."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from edgehub.errors import EndpointUnavailable
from edgehub.heads.mqtt.server import MqttServer, ServerLimits, start_mqtt_server
from edgehub.message import Identity, Message
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import MQTT_311, Connect, Publish, Subscribe, Subscription
from tests.conformance.deployment import events_topic, inputs_topic, module
from tests.heads.mqtt.test_server import INPUTS, MODULE, FakeHub, authenticate, wait_until
from tests.reliability.netkit import RawClient, RunningHub, memory_mib, report, running_hub

LIMITS = ServerLimits(write_buffer_high=64 * 1024, write_buffer_low=16 * 1024, max_write_buffer=1024 * 1024,
                      write_stall_timeout=1.0, tick_interval=0.1)
BODY = b"x" * 8192


async def test_delivery_pauses_for_a_client_that_does_not_read_then_it_is_dropped() -> None:
    hub = FakeHub()
    server: MqttServer = await start_mqtt_server(hub, authenticate, host="127.0.0.1", port=0, limits=LIMITS)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(encode(Connect(MQTT_311, MODULE.id, True, 0, "u", b"secret"))
                 + encode(Subscribe(1, (Subscription(INPUTS, 1),))))
    try:
        await wait_until(lambda: MODULE in hub.links, "the module attached")
        [connection] = list(server._connections.values())
        # 256 in flight (the outbound window) x 64 KiB: 16 MiB, more than the kernel buffers take.
        delivery = asyncio.ensure_future(hub.links[MODULE].deliver("in", [Message(BODY * 8)] * 256))
        await wait_until(lambda: connection._write_paused_at is not None, "delivery paused")
        buffered = connection._transport.get_write_buffer_size() if connection._transport else 0
        assert connection._outbound, "messages left waiting instead of buffered"
        started = time.monotonic()
        with pytest.raises(EndpointUnavailable):
            await asyncio.wait_for(delivery, 5)
        dropped_after = time.monotonic() - started
    finally:
        sock.close()
        server.close()
        await server.wait_closed()
    report("slow reader (in-process)", buffered_kib=buffered // 1024, dropped_after_s=round(dropped_after, 1))
    assert buffered <= LIMITS.max_write_buffer
    assert dropped_after <= LIMITS.write_stall_timeout + 1.0


def test_server_limits_refuse_inconsistent_bounds() -> None:
    with pytest.raises(ValueError, match="write_buffer_low"):
        ServerLimits(write_buffer_high=1024, write_buffer_low=2048)
    with pytest.raises(ValueError, match="positive"):
        ServerLimits(max_unauthenticated=0)
    with pytest.raises(ValueError, match="times"):
        ServerLimits(connect_deadline=0)


DEVICE = Identity("flooder")
SINK = module("sink")
ROUTES = {"toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'}
ATTACK_SECS = 8.0
RSS_BOUND_MIB = 400


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("memory"), ROUTES, [DEVICE, SINK]) as running:
        yield running


def flood(hub: RunningHub, qos: int) -> int:
    """Publish 8 KiB messages for ATTACK_SECS (QoS 1: PUBACKs read by a thread); the count sent."""
    client = RawClient.open(hub.plain_port)
    connack = client.connect(hub, DEVICE)
    assert connack is not None
    stop = threading.Event()

    def drain() -> None:
        client.sock.settimeout(0.2)
        while not stop.is_set():
            try:
                if not client.sock.recv(1 << 20):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    sent = 0
    deadline = time.monotonic() + ATTACK_SECS
    try:
        while time.monotonic() < deadline:
            client.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                client.send(b"".join(encode(p) for p in (
                    _publish(qos, sent + n) for n in range(50))))
            except (TimeoutError, OSError):
                break
            sent += 50
    finally:
        stop.set()
        reader.join(5)
        client.close()
    return sent


def _publish(qos: int, seq: int) -> Publish:
    return Publish(events_topic(DEVICE), BODY, qos, packet_id=(seq % 65535) + 1 if qos else 0)


def test_a_subscriber_that_never_reads_keeps_rss_bounded(hub: RunningHub) -> None:
    subscriber = RawClient.open(hub.plain_port)
    subscriber.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert subscriber.connect(hub, SINK) is not None
    assert subscriber.subscribe(inputs_topic(SINK) + "#") is not None
    try:
        sent = flood(hub, qos=1)
        rss, peak = memory_mib(hub.pid)
    finally:
        subscriber.close()
    report("slow subscriber, 8 KiB QoS 1", sent=sent, rss_mib=round(rss), peak_rss_mib=round(peak))
    assert peak < RSS_BOUND_MIB


def test_a_qos0_flood_keeps_rss_bounded(hub: RunningHub) -> None:
    sent = flood(hub, qos=0)
    rss, peak = memory_mib(hub.pid)
    report("QoS 0 flood, 8 KiB", sent=sent, rss_mib=round(rss), peak_rss_mib=round(peak))
    assert peak < RSS_BOUND_MIB
