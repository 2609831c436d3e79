"""End-to-end tests of the upstream MQTT link against a real mosquitto, over TCP and over mosquitto's
WebSocket listener: telemetry topics and order through a real EndpointPump, a broker restart (delivery
resumes at once on reconnect), and downstream messages acked only after they were stored.

Network on 127.0.0.1 only; each test starts its own broker (see broker.py). Waits are bounded polls.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edgehub.clock import SystemClock
from edgehub.endpoints.backoff import Backoff
from edgehub.endpoints.pump import EndpointPump, PumpState
from edgehub.errors import EndpointUnavailable
from edgehub.message import Identity, Message, MessageId, SystemProperty
from edgehub.store.base import Delivery, IngestItem, QueuedMessage, QueueKey
from edgehub.store.memory import MemoryStore
from edgehub.upstream.config import UpstreamConfig, UpstreamTransport
from edgehub.upstream.credentials import SasCredentials
from edgehub.upstream.mqtt import MqttUpstream
from edgehub.upstream.native import NativeMqttConnection
from tests.upstream.broker import Mosquitto, Subscriber, eventually, free_port
from tests.upstream.fakes import FakeHub

KEY = "a2V5LWZvci10aGUtdXBzdHJlYW0tdGVzdHMtMDEyMw=="
EDGE = Identity("edge1", "$edgeHub")
UPSTREAM = "$upstream"
FAR_FUTURE_MS = 2**62

MakeLink = Callable[..., Awaitable[MqttUpstream]]


class TimedStore(MemoryStore):
    """A MemoryStore that notes when each checkpoint (= confirmed upstream delivery) was written."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoints: list[tuple[float, MessageId]] = []

    def checkpoint(self, queue: QueueKey, upto: MessageId) -> None:
        super().checkpoint(queue, upto)
        self.checkpoints.append((time.monotonic(), upto))


def last_checkpoint(store: TimedStore) -> MessageId | None:
    return store.checkpoints[-1][1] if store.checkpoints else None


def append(store: MemoryStore, senders: list[Identity], count: int) -> list[MessageId]:
    """``count`` messages, round-robin over ``senders``, each with properties naming its sender and index."""
    items = []
    for index in range(count):
        sender = senders[index % len(senders)]
        system = {
            SystemProperty.CONNECTION_DEVICE_ID: sender.device_id,
            SystemProperty.CONTENT_TYPE: "text/plain",
        }
        if sender.module_id:
            system[SystemProperty.CONNECTION_MODULE_ID] = sender.module_id
            system[SystemProperty.OUTPUT_NAME] = "out1"
        message = Message(f"{sender}#{index}".encode(), {"seq": str(index)}, system)
        items.append(IngestItem(message, (Delivery(QueueKey(UPSTREAM), FAR_FUTURE_MS),)))
    return store.append(items)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path, websocket_port=free_port())
    await mosquitto.start()
    yield mosquitto
    await mosquitto.stop()


@pytest.fixture
async def subscriber(broker: Mosquitto) -> AsyncIterator[Subscriber]:
    client = Subscriber(broker.port, "devices/+/#")
    await client.start()
    yield client
    client.stop()


@pytest.fixture(params=[UpstreamTransport.TCP, UpstreamTransport.WEBSOCKETS], ids=["tcp", "websocket"])
def transport(request: pytest.FixtureRequest) -> UpstreamTransport:
    chosen: UpstreamTransport = request.param
    return chosen


@pytest.fixture
async def make_link(broker: Mosquitto, transport: UpstreamTransport) -> AsyncIterator[MakeLink]:
    """Started links to the test broker (plain MQTT, or mosquitto's WebSocket listener at ``/``) with a
    short reconnect backoff; stopped after."""
    links: list[MqttUpstream] = []

    async def make(hub: FakeHub | None = None, **options: Any) -> MqttUpstream:
        credentials = SasCredentials("hub.test", EDGE, KEY)
        websocket = transport is UpstreamTransport.WEBSOCKETS
        port = broker.websocket_port if websocket and broker.websocket_port else broker.port
        config = UpstreamConfig(credentials, "127.0.0.1", port, tls=False, transport=transport,
                                websocket_path="/", **options)
        link = MqttUpstream(
            config, SystemClock(), backoff=Backoff(initial=0.1, cap=0.4),
            connection_factory=NativeMqttConnection,
        )
        links.append(link)
        await link.start(hub or FakeHub())
        await eventually(lambda: link.upstream_endpoint.reachable, what="upstream connected")
        return link

    yield make
    for link in links:
        await link.stop()


@pytest.fixture
async def pumps() -> AsyncIterator[list[EndpointPump]]:
    started: list[EndpointPump] = []
    yield started
    for pump in started:
        await pump.stop(grace=1)


async def test_telemetry_of_two_senders_arrives_on_their_topics_in_order_through_a_fanned_out_pump(
    make_link: MakeLink, subscriber: Subscriber, pumps: list[EndpointPump]
) -> None:
    link = await make_link(max_batch_size=20, fan_out=10)
    store = MemoryStore()
    senders = [Identity("sensor1"), Identity("edge1", "filter")]
    ids = append(store, senders, 400)
    pump = EndpointPump(store, link.endpoint, SystemClock(), max_in_flight_batches=10)
    pumps.append(pump)
    pump.start()
    pump.notify()
    await eventually(lambda: len(subscriber.messages) >= len(ids), within=20, what="all telemetry")
    device, module = "devices/sensor1/messages/events", "devices/edge1/modules/filter/messages/events"
    by_topic: dict[str, list[int]] = {}
    for received in subscriber.messages:
        topic, _, bag = received.topic.rpartition("/")
        index = received.payload.decode().rpartition("#")[2]
        by_topic.setdefault(topic, []).append(int(index))
        assert f"seq={index}" in bag
    assert sorted(by_topic) == [module, device]
    assert by_topic[device] == list(range(0, 400, 2))
    assert by_topic[module] == list(range(1, 400, 2))
    first_module_message = next(m for m in subscriber.messages if "filter" in m.topic)
    assert first_module_message.topic == f"{module}/%24.ct=text%2Fplain&%24.on=out1&seq=1"
    await eventually(lambda: not store.read(QueueKey(UPSTREAM), -1, 1, 0), what="every message checkpointed")


async def test_after_a_broker_restart_delivery_resumes_within_a_second_of_the_reconnect(
    broker: Mosquitto, make_link: MakeLink, pumps: list[EndpointPump]
) -> None:
    link = await make_link()
    endpoint = link.upstream_endpoint
    store = TimedStore()
    # A pump whose own retry timer is 30 s: only the reachability signal can bring it back quickly.
    pump = EndpointPump(store, link.endpoint, SystemClock(), backoff=Backoff(initial=30, cap=60))
    pumps.append(pump)
    pump.start()
    first = append(store, [Identity("sensor1")], 5)
    pump.notify()
    await eventually(lambda: last_checkpoint(store) == first[-1], what="first messages delivered")

    await broker.stop()
    await eventually(lambda: not endpoint.reachable, what="link notices the broker is gone")
    with pytest.raises(EndpointUnavailable):
        await endpoint.send([QueuedMessage(0, QueueKey(UPSTREAM), FAR_FUTURE_MS, Message(b"x"))])
    reconnected: list[float] = []
    endpoint.subscribe_reachable(lambda: reconnected.append(time.monotonic()))
    second = append(store, [Identity("sensor1")], 5)
    pump.notify()
    await eventually(lambda: pump.state is PumpState.BACKING_OFF, what="pump backing off")

    await broker.start()
    restarted = time.monotonic()
    await eventually(lambda: last_checkpoint(store) == second[-1], within=10, what="the rest delivered")
    delivered_at = next(at for at, upto in store.checkpoints if upto > first[-1])
    assert reconnected, "the reconnect notified no one"
    assert delivered_at - reconnected[0] < 1.0  # docs/architecture.md §1 invariant 7
    assert delivered_at > restarted


async def test_devicebound_and_module_input_messages_are_stored_before_the_parent_gets_its_puback(
    broker: Mosquitto, make_link: MakeLink
) -> None:
    hub = FakeHub()
    hub.gate.clear()
    link = await make_link(hub)
    publisher = Subscriber(broker.port, "nothing/#")
    await publisher.start()
    try:
        await publisher.publish("devices/leaf1/messages/devicebound/%24.mid=c2d-1&k=v", b"c2d")
        await publisher.publish("devices/edge1/modules/filter/inputs/input1/%24.cdid=s1", b"in")
        await eventually(lambda: hub.attempts == 1, what="the hub storing the first message")
        # The hub has not returned: a crash now must not lose the message, so the parent, never
        # having had a PUBACK, sends both again on the next connection [MQTT-4.4.0-1].
        held = link.connection
        assert held is not None
        held.abort("test: crash before the PUBACK")
        await eventually(lambda: link.connection not in (None, held), what="reconnected")
        hub.gate.set()
        await eventually(lambda: len(hub.stored) >= 3, what="messages stored")
        # Everything is acknowledged now: after another reconnect only new messages come.
        acked = link.connection
        assert acked is not None
        acked.abort("test: reconnect")
        await eventually(lambda: link.connection not in (None, acked), what="reconnected")
        await publisher.publish("devices/leaf1/messages/devicebound/", b"marker")
        await eventually(lambda: any(m.body == b"marker" for _, ms in hub.stored for m in ms), what="marker")
    finally:
        publisher.stop()
    stored = [(endpoint, message.body) for endpoint, messages in hub.stored for message in messages]
    assert stored == [
        ("/devices/leaf1/messages/devicebound", b"c2d"),  # stored while the first connection died
        ("/devices/leaf1/messages/devicebound", b"c2d"),  # the parent's resend: a duplicate, not a loss
        ("/modules/filter/inputs/input1", b"in"),
        ("/devices/leaf1/messages/devicebound", b"marker"),
    ]
    c2d = hub.stored[0][1][0]
    assert (c2d.properties, c2d.system_properties) == ({"k": "v"}, {SystemProperty.MESSAGE_ID: "c2d-1"})
    assert hub.stored[2][1][0].system_properties == {SystemProperty.CONNECTION_DEVICE_ID: "s1"}
