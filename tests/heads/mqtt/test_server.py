"""Tests of edgehub.heads.mqtt.server over loopback: real paho-mqtt 2.x clients and raw sockets."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, cast

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgehub.auth import authorize
from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import IdentityRegistry
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.auth.username import parse_mqtt_connect
from edgehub.clock import SystemClock
from edgehub.errors import AuthError, EndpointUnavailable, StoreFullError
from edgehub.heads.credentials import RegistryAuthenticator
from edgehub.heads.mqtt.connection import MqttConnection
from edgehub.heads.mqtt.policy import ConnectRequest, SessionConfig
from edgehub.heads.mqtt.server import MqttServer, ServerLimits, start_mqtt_server
from edgehub.message import Identity, Message, SystemProperty
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode, encode_publish
from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)
from edgehub.store.base import QueuedMessage, QueueKey
from edgehub.testing.clock import FakeClock
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.credentials import SasCredentials
from edgehub.upstream.mqtt import MqttUpstream
from tests.upstream.fakes import FakeHub as FakeDownstream

MODULE = Identity("edge", "filter")
TELEMETRY = "devices/edge/modules/filter/messages/events/"
INPUTS = "devices/edge/modules/filter/inputs/#"
BOUND = 5.0


class FakeHub:
    """Records ingested messages; can hold ingest behind a gate or refuse with StoreFullError."""

    def __init__(self) -> None:
        self.ingested: list[Message] = []
        self.calls = 0
        self.waiting = 0
        self.concurrent_max = 0
        self.gate: asyncio.Event | None = None
        self.full = False
        self.error: Exception | None = None
        self.links: dict[Identity, Any] = {}
        self.detached: list[Identity] = []

    async def ingest(self, messages: Sequence[Message]) -> None:
        self.calls += 1
        self.waiting += 1
        self.concurrent_max = max(self.concurrent_max, self.waiting)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.full:
                raise StoreFullError("store full")
            if self.error is not None:
                raise self.error
            self.ingested.extend(messages)
        finally:
            self.waiting -= 1

    def attach(self, identity: Identity, link: Any) -> None:
        self.links[identity] = link

    def detach(self, identity: Identity, link: Any) -> None:
        self.detached.append(identity)
        if self.links.get(identity) is link:
            del self.links[identity]


def authenticate(request: ConnectRequest) -> Identity:
    if request.password != b"secret":
        raise AuthError("bad token")
    return Identity.parse(request.client_id)


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` until true; fail after BOUND seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
async def server(hub: FakeHub) -> AsyncIterator[MqttServer]:
    srv = await start_mqtt_server(hub, authenticate, host="127.0.0.1", port=0)
    yield srv
    srv.close()
    await srv.wait_closed()


class Paho:
    """A paho-mqtt client in its own network thread, with what its callbacks saw."""

    def __init__(
        self, port: int, version: int, client_id: str = MODULE.id, password: str = "secret",
        host_name: str = "hub",
    ) -> None:
        protocol = mqtt.MQTTv5 if version == MQTT_5 else mqtt.MQTTv311
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
            reconnect_on_failure=False,  # each test looks at one connection
        )
        self.client.username_pw_set(f"{host_name}/{client_id}/?api-version=2021-04-12", password)
        self.connack: int | None = None
        self.disconnected: int | None = None
        self.published: dict[int, int] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.subacks: list[list[int]] = []
        self.lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect_async("127.0.0.1", port, keepalive=60)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        self.connack = reason_code.value

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        self.disconnected = reason_code.value

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        self.published[mid] = reason_code.value

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(message)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self.subacks.append([c.value for c in codes])

    async def connected(self) -> Paho:
        await wait_until(lambda: self.connack is not None, "CONNACK")
        return self

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        info = self.client.publish(topic, payload, qos)
        return info.mid

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Paho]]:
    made: list[Paho] = []
    yield made
    for client in made:
        client.stop()


class Raw:
    """A raw-socket MQTT client speaking through the hub's own codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder(version=version)
        self.version = version

    @classmethod
    async def open(cls, port: int, version: int = MQTT_311) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, version)

    def send(self, *packets: Packet) -> None:
        self.writer.write(b"".join(encode(p, self.version) for p in packets))

    async def connect(self, client_id: str = MODULE.id, keep_alive: int = 0) -> Packet:
        self.send(Connect(self.version, client_id, True, keep_alive, "u", b"secret"))
        [connack] = await self.read(1)
        return connack

    async def read(self, count: int) -> list[Packet]:
        packets: list[Packet] = []
        while len(packets) < count:
            data = await asyncio.wait_for(self.reader.read(65536), BOUND)
            if not data:
                break
            packets.extend(self.decoder.feed(data))
        return packets

    async def closed_by_server(self) -> bool:
        data = await asyncio.wait_for(self.reader.read(65536), BOUND)
        return data == b""

    def close(self) -> None:
        self.writer.close()


# --- inbound telemetry -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
async def test_puback_only_after_ingest_returned(
    server: MqttServer, hub: FakeHub, clients: list[Paho], version: int,
) -> None:
    hub.gate = asyncio.Event()
    client = await Paho(server.port, version).connected()
    clients.append(client)
    assert client.connack == 0
    mid = client.publish(TELEMETRY + "%24.ct=application%2Fjson&k=v", b"reading")
    await wait_until(lambda: hub.waiting == 1, "ingest to start")
    for _ in range(20):  # the ack must not overtake the durable write, however long we look
        await asyncio.sleep(0.005)
        assert mid not in client.published
    hub.gate.set()
    await wait_until(lambda: mid in client.published, "PUBACK after the gate opened")
    [message] = hub.ingested
    assert message.body == b"reading"
    assert message.properties == {"k": "v"}
    assert message.system_properties["contentType"] == "application/json"
    assert message.source == MODULE


async def test_ingest_calls_never_overlap_and_acks_keep_receive_order(
    server: MqttServer, hub: FakeHub,
) -> None:
    hub.gate = asyncio.Event()
    raw = await Raw.open(server.port)
    await raw.connect()
    for packet_id in range(1, 301):
        raw.writer.write(encode_publish(TELEMETRY, b"%d" % packet_id, 1, packet_id))
        if packet_id % 50 == 0:
            await raw.writer.drain()
            await asyncio.sleep(0)  # let the server read between bursts: several reads, one ingest at a time
    await wait_until(lambda: hub.waiting == 1, "first ingest")
    hub.gate.set()
    acks = await raw.read(300)
    assert acks == [PubAck(i) for i in range(1, 301)]
    assert [m.body for m in hub.ingested] == [b"%d" % i for i in range(1, 301)]
    assert hub.concurrent_max == 1
    raw.close()


async def test_publish_as_another_identity_is_refused_in_v5(
    server: MqttServer, hub: FakeHub, clients: list[Paho],
) -> None:
    client = await Paho(server.port, MQTT_5).connected()
    clients.append(client)
    mid = client.publish("devices/other/messages/events/", b"spoof")
    await wait_until(lambda: mid in client.published, "PUBACK")
    assert client.published[mid] == ReasonCode.NOT_AUTHORIZED
    assert hub.ingested == []


async def test_publish_as_another_identity_disconnects_in_311(
    server: MqttServer, hub: FakeHub, clients: list[Paho],
) -> None:
    client = await Paho(server.port, MQTT_311).connected()
    clients.append(client)
    mid = client.publish("devices/edge/modules/other/messages/events/", b"spoof")
    await wait_until(lambda: client.disconnected is not None, "disconnect")
    assert mid not in client.published
    assert hub.ingested == []


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
async def test_message_above_max_size_is_refused(hub: FakeHub, clients: list[Paho], version: int) -> None:
    srv = await start_mqtt_server(hub, authenticate, host="127.0.0.1", port=0, max_message_size=1000)
    try:
        client = await Paho(srv.port, version).connected()
        clients.append(client)
        client.publish(TELEMETRY, b"x" * 2000)
        await wait_until(lambda: client.disconnected is not None, "disconnect")
        if version == MQTT_5:
            assert client.disconnected == ReasonCode.PACKET_TOO_LARGE
        assert hub.ingested == []
    finally:
        srv.close()
        await srv.wait_closed()


async def test_store_full_gets_quota_exceeded_in_v5(
    server: MqttServer, hub: FakeHub, clients: list[Paho],
) -> None:
    hub.full = True
    client = await Paho(server.port, MQTT_5).connected()
    clients.append(client)
    mid = client.publish(TELEMETRY, b"x")
    await wait_until(lambda: mid in client.published, "PUBACK")
    assert client.published[mid] == ReasonCode.QUOTA_EXCEEDED
    assert client.disconnected is None


async def test_store_full_closes_without_puback_in_311(server: MqttServer, hub: FakeHub) -> None:
    hub.full = True
    raw = await Raw.open(server.port)
    await raw.connect()
    raw.writer.write(encode_publish(TELEMETRY, b"x", 1, 1))
    assert await raw.closed_by_server()
    raw.close()


async def test_will_is_ingested_when_the_client_vanishes(server: MqttServer, hub: FakeHub) -> None:
    raw = await Raw.open(server.port)
    will = Will(TELEMETRY + "status=offline", b"offline")
    raw.send(Connect(MQTT_311, MODULE.id, True, 0, "u", b"secret", will))
    await raw.read(1)
    raw.writer.transport.abort()
    await wait_until(lambda: len(hub.ingested) == 1, "will ingested")
    assert hub.ingested[0].body == b"offline"


# --- connections -------------------------------------------------------------------------------


async def test_malformed_bytes_close_only_that_connection(
    server: MqttServer, hub: FakeHub, clients: list[Paho],
) -> None:
    good = await Paho(server.port, MQTT_311).connected()
    clients.append(good)
    raw = await Raw.open(server.port)
    await raw.connect("edge/other")
    raw.writer.write(b"\x36\x05\x00\x01t\x00\x01")  # PUBLISH with QoS 3
    assert await raw.closed_by_server()
    raw.close()
    mid = good.publish(TELEMETRY, b"still here")
    await wait_until(lambda: mid in good.published, "PUBACK on the healthy connection")
    assert [m.body for m in hub.ingested] == [b"still here"]


@pytest.mark.parametrize(("version", "code"), [(MQTT_311, 0x03), (MQTT_5, ReasonCode.QUOTA_EXCEEDED)])
async def test_max_connected_clients_refuses_the_next(hub: FakeHub, version: int, code: int) -> None:
    srv = await start_mqtt_server(hub, authenticate, host="127.0.0.1", port=0, max_connected_clients=1)
    try:
        first = await Raw.open(srv.port, version)
        accepted = await first.connect("edge/a")
        assert isinstance(accepted, ConnAck)
        assert accepted.reason_code == 0
        second = await Raw.open(srv.port, version)
        connack = await second.connect("edge/b")
        assert isinstance(connack, ConnAck)
        assert connack.reason_code == code
        assert await second.closed_by_server()
        first.close()
        second.close()
    finally:
        srv.close()
        await srv.wait_closed()


async def test_bad_credentials_are_refused(server: MqttServer, clients: list[Paho]) -> None:
    client = await Paho(server.port, MQTT_5, password="wrong").connected()
    clients.append(client)
    assert client.connack == ReasonCode.BAD_USER_NAME_OR_PASSWORD


async def test_keep_alive_and_connect_timeout_run_on_the_injected_clock(hub: FakeHub) -> None:
    clock = FakeClock()
    srv = await start_mqtt_server(hub, authenticate, host="127.0.0.1", port=0, clock=clock)
    try:
        idle = await Raw.open(srv.port, MQTT_5)
        await idle.connect(keep_alive=10)
        silent = await Raw.open(srv.port)
        await wait_until(lambda: srv.connections == 2, "both connections accepted")
        await clock.advance(12.0)  # past the 10 s CONNECT timeout, inside 1.5 x keep alive
        assert await silent.closed_by_server()
        await clock.advance(4.0)  # 16 s > 15 s
        assert await idle.read(1) == [Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)]
        idle.close()
        silent.close()
    finally:
        srv.close()
        await srv.wait_closed()


async def test_server_close_tells_v5_clients_it_is_shutting_down(hub: FakeHub) -> None:
    srv = await start_mqtt_server(hub, authenticate, host="127.0.0.1", port=0)
    raw = await Raw.open(srv.port, MQTT_5)
    await raw.connect()
    srv.close()
    await srv.wait_closed()
    assert await raw.read(1) == [Disconnect(ReasonCode.SERVER_SHUTTING_DOWN)]
    raw.close()


# --- delivery ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
async def test_delivery_to_a_subscribed_module_input_counts_pubacks(
    server: MqttServer, hub: FakeHub, clients: list[Paho], version: int,
) -> None:
    client = await Paho(server.port, version).connected()
    clients.append(client)
    client.client.subscribe(INPUTS, 1)
    await wait_until(lambda: MODULE in hub.links, "attach on subscribe")
    # the hub attaches while the SUBACK is on its way: paho's thread may not have read it yet
    await wait_until(lambda: bool(client.subacks), "SUBACK at the client")
    assert client.subacks == [[1]]
    messages = [
        Message(b"m%d" % i, {"seq": str(i)}, {"messageId": f"id{i}", "connectionDeviceId": "edge"})
        for i in range(3)
    ]
    delivered = await asyncio.wait_for(hub.links[MODULE].deliver("input1", messages), BOUND)
    assert delivered == 3
    await wait_until(lambda: len(client.messages) == 3, "messages at the client")
    assert [m.payload for m in client.messages] == [b"m0", b"m1", b"m2"]
    assert client.messages[0].topic == (
        "devices/edge/modules/filter/inputs/input1/%24.mid=id0&%24.cdid=edge&seq=0"
    )


async def test_messages_for_an_input_nobody_subscribed_to_stay_queued_until_a_subscription_matches(
    server: MqttServer, hub: FakeHub, clients: list[Paho],
) -> None:
    client = await Paho(server.port, MQTT_311).connected()
    clients.append(client)
    client.client.subscribe("devices/edge/modules/filter/inputs/in1/#", 1)
    await wait_until(lambda: MODULE in hub.links, "attach on subscribe")
    link = hub.links[MODULE]
    with pytest.raises(EndpointUnavailable, match="no subscription"):
        await link.deliver("in2", [Message(b"for in2")])
    hub.links.clear()
    client.client.subscribe(INPUTS, 1)
    await wait_until(lambda: MODULE in hub.links, "attached again by the wider subscription")
    assert await asyncio.wait_for(hub.links[MODULE].deliver("in2", [Message(b"for in2")]), BOUND) == 1
    await wait_until(lambda: len(client.messages) == 1, "the held message")
    assert client.messages[0].payload == b"for in2"


async def test_delivery_waits_for_the_client_ack(server: MqttServer, hub: FakeHub) -> None:
    raw = await Raw.open(server.port)
    await raw.connect()
    raw.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    assert await raw.read(1) == [SubAck(1, (1,))]
    link = hub.links[MODULE]
    delivery = asyncio.ensure_future(link.deliver("in", [Message(b"a"), Message(b"b")]))
    [first, second] = await raw.read(2)
    assert isinstance(first, Publish)
    assert isinstance(second, Publish)
    raw.send(PubAck(first.packet_id))
    await asyncio.sleep(0.02)
    assert not delivery.done()
    raw.send(PubAck(second.packet_id))
    assert await asyncio.wait_for(delivery, BOUND) == 2
    raw.close()


async def test_a_qos_0_subscription_gets_its_deliveries_at_qos_0_done_once_written(
    server: MqttServer, hub: FakeHub,
) -> None:
    raw = await Raw.open(server.port)
    await raw.connect()
    raw.send(Subscribe(1, (Subscription(INPUTS, 0),)))
    assert await raw.read(1) == [SubAck(1, (0,))]
    delivered = await asyncio.wait_for(hub.links[MODULE].deliver("in", [Message(b"a"), Message(b"b")]), BOUND)
    assert delivered == 2  # no PUBACK sent: at most once, as the client asked [MQTT-3.8.4-6]
    packets = await raw.read(2)
    assert [(p.payload, p.qos, p.packet_id) for p in packets if isinstance(p, Publish)] == [
        (b"a", 0, 0), (b"b", 0, 0)]
    raw.close()


async def test_overlapping_qos_0_and_qos_1_subscriptions_deliver_at_qos_1(
    server: MqttServer, hub: FakeHub,
) -> None:
    raw = await Raw.open(server.port)
    await raw.connect()
    only_in = "devices/edge/modules/filter/inputs/in/#"
    raw.send(Subscribe(1, (Subscription(INPUTS, 0), Subscription(only_in, 1))))
    assert await raw.read(1) == [SubAck(1, (0, 1))]
    delivery = asyncio.ensure_future(hub.links[MODULE].deliver("in", [Message(b"a")]))
    [publish] = await raw.read(1)
    assert isinstance(publish, Publish)
    assert publish.qos == 1  # [MQTT-3.3.4-2]: the highest granted QoS of the matching filters
    assert publish.packet_id != 0
    assert not delivery.done()
    raw.send(PubAck(publish.packet_id))
    assert await asyncio.wait_for(delivery, BOUND) == 1
    raw.close()


async def test_a_resubscription_at_another_qos_changes_the_qos_of_the_next_deliveries(
    server: MqttServer, hub: FakeHub,
) -> None:
    raw = await Raw.open(server.port)
    await raw.connect()
    raw.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    assert await raw.read(1) == [SubAck(1, (1,))]
    delivery = asyncio.ensure_future(hub.links[MODULE].deliver("in", [Message(b"a")]))
    [first] = await raw.read(1)
    assert isinstance(first, Publish)
    assert first.qos == 1
    raw.send(PubAck(first.packet_id))
    assert await asyncio.wait_for(delivery, BOUND) == 1
    raw.send(Subscribe(2, (Subscription(INPUTS, 0),)))  # the same filter, now at QoS 0 [MQTT-3.8.4-3]
    assert await raw.read(1) == [SubAck(2, (0,))]
    assert await asyncio.wait_for(hub.links[MODULE].deliver("in", [Message(b"b")]), BOUND) == 1
    [second] = await raw.read(1)
    assert isinstance(second, Publish)
    assert (second.payload, second.qos) == (b"b", 0)
    raw.close()


async def test_delivery_reports_the_acked_prefix_when_the_client_leaves(
    server: MqttServer, hub: FakeHub,
) -> None:
    raw = await Raw.open(server.port)
    await raw.connect()
    raw.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    await raw.read(1)
    link = hub.links[MODULE]
    delivery = asyncio.ensure_future(link.deliver("in", [Message(b"a"), Message(b"b")]))
    [first, _] = await raw.read(2)
    assert isinstance(first, Publish)
    raw.send(PubAck(first.packet_id))
    await raw.writer.drain()
    await asyncio.sleep(0.02)
    raw.writer.transport.abort()
    assert await asyncio.wait_for(delivery, BOUND) == 1
    await wait_until(lambda: MODULE in hub.detached, "detach on close")
    with pytest.raises(EndpointUnavailable):
        await link.deliver("in", [Message(b"c")])


async def test_same_client_id_takes_the_session_over(server: MqttServer, clients: list[Paho]) -> None:
    first = await Paho(server.port, MQTT_5).connected()
    clients.append(first)
    second = await Paho(server.port, MQTT_5).connected()
    clients.append(second)
    await wait_until(lambda: first.disconnected is not None, "the first connection closed")
    assert first.disconnected == ReasonCode.SESSION_TAKEN_OVER
    assert second.connack == 0
    assert server.table.connected == 1


async def test_persistent_session_resumes_delivery_without_resubscribing(
    server: MqttServer, hub: FakeHub,
) -> None:
    raw = await Raw.open(server.port)
    raw.send(Connect(MQTT_311, MODULE.id, False, 0, "u", b"secret"))
    assert await raw.read(1) == [ConnAck(False, 0)]
    raw.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    await raw.read(1)
    raw.send(Disconnect())
    assert await raw.closed_by_server()
    await wait_until(lambda: MODULE not in hub.links, "detach on disconnect")
    again = await Raw.open(server.port)
    again.send(Connect(MQTT_311, MODULE.id, False, 0, "u", b"secret"))
    assert await again.read(1) == [ConnAck(True, 0)]
    await wait_until(lambda: MODULE in hub.links, "attach from the stored subscription")
    delivery = asyncio.ensure_future(hub.links[MODULE].deliver("in", [Message(b"queued")]))
    [publish] = await again.read(1)
    assert isinstance(publish, Publish)
    again.send(PubAck(publish.packet_id))
    assert await asyncio.wait_for(delivery, BOUND) == 1
    raw.close()
    again.close()


async def test_failed_ingest_closes_without_puback(server: MqttServer, hub: FakeHub) -> None:
    hub.error = RuntimeError("disk on fire")
    raw = await Raw.open(server.port, MQTT_5)
    await raw.connect()
    raw.writer.write(encode_publish(TELEMETRY, b"x", 1, 1, version=MQTT_5))
    assert await raw.read(1) == [Disconnect(ReasonCode.UNSPECIFIED_ERROR)]
    assert await raw.closed_by_server()
    raw.close()


class RegistryAuth:
    """The wiring the hub uses: edgehub.auth's username parser, SAS registry and topic rules."""

    def __init__(self, registry: IdentityRegistry) -> None:
        self.registry = registry

    def __call__(self, request: ConnectRequest) -> Identity:
        claimed = parse_mqtt_connect(request.username or "", request.client_id).identity
        if request.password is None:
            raise AuthError("no SAS token")
        return self.registry.authenticate_sas(claimed, request.password.decode("utf-8", "replace"),
                                              time.time()).identity

    def may_publish(self, identity: Identity, topic: str) -> bool:
        return authorize.may_publish(identity, topic)

    def may_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        return authorize.may_subscribe(identity, topic_filter)


async def test_sas_tokens_from_the_identity_registry_authenticate(hub: FakeHub, clients: list[Paho]) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    registry = IdentityRegistry([IdentitySpec("edge", "filter", primary_key=key)], ["localhost"])
    auth = RegistryAuth(registry)
    srv = await start_mqtt_server(hub, auth, authorizer=auth, host="127.0.0.1", port=0)
    try:
        token = make_sas_token(sas_resource("localhost", MODULE), key, int(time.time()) + 3600)
        good = await Paho(srv.port, MQTT_311, password=token).connected()
        clients.append(good)
        forged = await Paho(srv.port, MQTT_311, client_id="edge/other", password=token).connected()
        clients.append(forged)
        assert (good.connack, forged.connack) == (0, 0x87)  # paho shows 3.1.1 code 5 as 0x87
        mid = good.publish(TELEMETRY, b"signed")
        await wait_until(lambda: mid in good.published, "PUBACK")
        assert hub.ingested[0].source == MODULE
    finally:
        srv.close()
        await srv.wait_closed()


class FakeTransport:
    """Just enough of asyncio.Transport to watch reads pause and resume."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.written = bytearray()
        self.closing = False

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def test_reading_pauses_while_too_many_bytes_wait_for_ingest(hub: FakeHub) -> None:
    hub.gate = asyncio.Event()
    srv = MqttServer(
        hub, authenticate, authorizer=None, session_config=SessionConfig(), max_connected_clients=10,
        clock=SystemClock(), limits=ServerLimits(max_pending_bytes=10_000),
    )
    transport = FakeTransport()
    connection = MqttConnection(srv)
    connection.connection_made(cast(asyncio.Transport, transport))
    connection.data_received(encode(Connect(MQTT_311, MODULE.id, True, 0, "u", b"secret")))
    packet_id = iter(range(1, 1000))

    def burst(count: int) -> bytes:
        return b"".join(encode_publish(TELEMETRY, b"p" * 100, 1, next(packet_id)) for _ in range(count))

    connection.data_received(burst(40))  # ~6 KB: ingested at once, in flight behind the gate
    await wait_until(lambda: hub.waiting == 1, "first ingest")
    connection.data_received(burst(20))  # waits for the first ingest: 9 KB outstanding
    assert transport.pauses == 0
    connection.data_received(burst(20))  # 12 KB > 10 KB: stop reading
    assert transport.pauses == 1
    hub.gate.set()
    await wait_until(lambda: len(hub.ingested) == 80, "all ingested")
    assert not transport.paused
    acks = Decoder().feed(bytes(transport.written))[1:]  # after the CONNACK
    assert acks == [PubAck(i) for i in range(1, 81)]
    assert hub.calls == 2  # the two waiting reads went in one batch
    connection.connection_lost(None)


async def test_a_second_listener_shares_sessions_and_takeover(server: MqttServer) -> None:
    plain_port = await server.listen("127.0.0.1", 0)
    first = await Raw.open(server.port, MQTT_5)
    await first.connect()
    second = await Raw.open(plain_port, MQTT_5)
    connack = await second.connect()
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == 0
    assert await first.read(1) == [Disconnect(ReasonCode.SESSION_TAKEN_OVER)]
    assert server.table.connected == 1
    first.close()
    second.close()


# --- SAS expiry on long sessions (virtual time) -------------------------------------------------

KEY = base64.b64encode(b"k" * 32).decode()
USERNAME = f"localhost/{MODULE.id}/?api-version=2021-04-12"


def accepted(packets: list[Packet]) -> bool:
    return len(packets) == 1 and isinstance(packets[0], ConnAck) and packets[0].reason_code == 0


def sas_token(clock: FakeClock, lifetime: int) -> bytes:
    return make_sas_token(sas_resource("localhost", MODULE), KEY, int(clock.time()) + lifetime).encode()


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
async def test_expired_sas_token_ends_the_session_and_a_fresh_token_goes_on(
    hub: FakeHub, version: int,
) -> None:
    clock = FakeClock()
    registry = IdentityRegistry([IdentitySpec("edge", "filter", primary_key=KEY)], ["localhost"])
    auth = RegistryAuthenticator(lambda: registry, clock)
    srv = await start_mqtt_server(hub, auth, authorizer=auth, host="127.0.0.1", port=0, clock=clock)
    try:
        first = await Raw.open(srv.port, version)
        first.send(Connect(version, MODULE.id, True, 0, USERNAME, sas_token(clock, 30)))
        assert accepted(await first.read(1))
        await clock.advance(29.0)
        first.send(PingReq())
        assert await first.read(1) == [PingResp()]  # still served a second before the token's se
        await clock.advance(2.0)  # the next tick is past se
        if version == MQTT_5:
            # MQTT 5 §3.14.2.1 0xA0 Maximum connect time: the token authorized the connection until se.
            assert await first.read(1) == [Disconnect(ReasonCode.MAXIMUM_CONNECT_TIME)]
        assert await first.closed_by_server()
        first.close()
        again = await Raw.open(srv.port, version)
        again.send(Connect(version, MODULE.id, True, 0, USERNAME, sas_token(clock, 30)))
        assert accepted(await again.read(1))
        again.send(Publish(TELEMETRY, b"after renewal", 1, packet_id=1))
        assert await again.read(1) == [PubAck(1)]
        assert [m.body for m in hub.ingested] == [b"after renewal"]
        again.close()
    finally:
        srv.close()
        await srv.wait_closed()


# --- a child edge hub (nested IoT Edge) ----------------------------------------------------------

CHILD_HUB = Identity("child", "$edgeHub")
LEAF = Identity("leaf1")


@pytest.fixture
async def parent(hub: FakeHub) -> AsyncIterator[MqttServer]:
    """A parent hub's MQTT head whose registry lists a child edge hub and a leaf device."""
    registry = IdentityRegistry(
        [IdentitySpec("child", "$edgeHub", primary_key=KEY), IdentitySpec("leaf1", primary_key=KEY)],
        ["localhost"],
    )
    auth = RegistryAuthenticator(lambda: registry, SystemClock())
    srv = await start_mqtt_server(hub, auth, authorizer=auth, host="127.0.0.1", port=0)
    yield srv
    srv.close()
    await srv.wait_closed()


def signed_paho(port: int, identity: Identity, version: int) -> Paho:
    token = make_sas_token(sas_resource("localhost", identity), KEY, int(time.time()) + 3600)
    return Paho(port, version, client_id=identity.id, password=token, host_name="localhost")


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
async def test_child_edge_hub_publishes_for_its_children_who_become_the_senders(
    parent: MqttServer, hub: FakeHub, clients: list[Paho], version: int,
) -> None:
    child = await signed_paho(parent.port, CHILD_HUB, version).connected()
    clients.append(child)
    assert child.connack == 0
    child.client.subscribe([("devices/+/messages/devicebound/#", 1), ("devices/child/modules/+/inputs/#", 1)])
    await wait_until(lambda: bool(child.subacks), "SUBACK")
    assert child.subacks == [[1, 1]]
    mids = [
        child.publish("devices/leaf1/messages/events/%24.mid=m1&%24.cdid=spoofed&k=v", b"leaf"),
        child.publish("devices/child/modules/filter/messages/events/%24.on=out1", b"module"),
    ]
    await wait_until(lambda: all(mid in child.published for mid in mids), "PUBACKs")
    assert [(m.body, m.source) for m in hub.ingested] == [
        (b"leaf", LEAF), (b"module", Identity("child", "filter")),
    ]
    assert hub.ingested[0].system_properties[SystemProperty.MESSAGE_ID] == "m1"
    assert hub.ingested[1].system_properties[SystemProperty.OUTPUT_NAME] == "out1"


async def test_a_leaf_device_still_publishes_only_as_itself(
    parent: MqttServer, hub: FakeHub, clients: list[Paho],
) -> None:
    leaf = await signed_paho(parent.port, LEAF, MQTT_5).connected()
    clients.append(leaf)
    refused = leaf.publish("devices/leaf2/messages/events/", b"forged")
    own = leaf.publish("devices/leaf1/messages/events/%24.cdid=leaf2", b"own")
    await wait_until(lambda: refused in leaf.published and own in leaf.published, "PUBACKs")
    assert leaf.published[refused] == ReasonCode.NOT_AUTHORIZED
    assert [(m.body, m.source) for m in hub.ingested] == [(b"own", LEAF)]
    leaf.client.subscribe("devices/+/messages/devicebound/#", 1)  # '+' is its own device only
    leaf.client.subscribe("devices/leaf2/messages/devicebound/#", 1)
    await wait_until(lambda: len(leaf.subacks) == 2, "SUBACKs")
    assert leaf.subacks == [[1], [ReasonCode.NOT_AUTHORIZED]]


async def test_this_hubs_upstream_link_is_a_child_its_parent_head_accepts(
    parent: MqttServer, hub: FakeHub,
) -> None:
    credentials = SasCredentials("localhost", CHILD_HUB, KEY)
    config = UpstreamConfig(credentials=credentials, host="127.0.0.1", port=parent.port, tls=False)
    link = MqttUpstream(config, SystemClock())
    downstream = FakeDownstream()
    await link.start(downstream)
    try:
        await wait_until(lambda: link.upstream_endpoint.reachable, "the child link connected")
        state = parent.table.get(CHILD_HUB.id)
        assert state is not None
        assert sorted(state.subscriptions) == [  # its children's filters, granted: no fallback to its own
            "devices/+/messages/devicebound/#", "devices/child/modules/+/inputs/#",
        ]
        senders = [LEAF, Identity("child", "filter"), None]
        queued = [
            QueuedMessage(i, QueueKey("$upstream"), 0, Message(
                b"m%d" % i, {"n": str(i)},
                {SystemProperty.CONNECTION_DEVICE_ID: s.device_id, **(
                    {SystemProperty.CONNECTION_MODULE_ID: s.module_id} if s.module_id else {}
                )} if s else {},
            ))
            for i, s in enumerate(senders)
        ]
        result = await asyncio.wait_for(link.upstream_endpoint.send(queued), BOUND)
        assert result.delivered == 3
        assert [(m.body, m.source, m.properties) for m in hub.ingested] == [
            (b"m0", LEAF, {"n": "0"}),
            (b"m1", Identity("child", "filter"), {"n": "1"}),
            (b"m2", CHILD_HUB, {"n": "2"}),  # no sender: the child hub's own message
        ]
        await wait_until(lambda: CHILD_HUB in hub.links, "the child's own inputs attached")
        down = Message(b"down", {"k": "v"}, {SystemProperty.MESSAGE_ID: "d1"})
        assert await asyncio.wait_for(hub.links[CHILD_HUB].deliver("in1", [down]), BOUND) == 1
        await wait_until(lambda: bool(downstream.stored), "stored by the child")
        assert downstream.stored == [("/modules/$edgeHub/inputs/in1", [down])]
    finally:
        await link.stop()
