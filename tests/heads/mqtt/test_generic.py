"""Tests of generic topics in the sans-I/O MQTT session (edgehub.heads.mqtt.generic): plain MQTT
pub/sub between sessions sharing one Broker, bad input refused with the right reason code, QoS 2
both ways, redelivery with DUP, anonymous clients, and the IoT Hub topics left as they were."""

from __future__ import annotations

import pytest

from edgehub.broker.acl import Acl
from edgehub.broker.core import Broker
from edgehub.broker.store import BrokerSnapshot
from edgehub.errors import AuthError, StoreError
from edgehub.heads.mqtt.events import Closed, Event, TelemetryReceived
from edgehub.heads.mqtt.generic import GenericTopics
from edgehub.heads.mqtt.generic_auth import AnonymousAuthenticator, NoAnonymousIotHub
from edgehub.heads.mqtt.policy import ConnectRequest, OwnTopicsAuthorizer
from edgehub.heads.mqtt.session import MqttSession
from edgehub.heads.mqtt.sessions import SessionTable
from edgehub.message import Identity
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from edgehub.routing.route import MQTT_TOPIC


def registry(request: ConnectRequest) -> Identity:
    if request.password != b"secret":
        raise AuthError("bad SAS token")
    return Identity.parse(request.client_id)


class World:
    """One server's shared state: the broker, the session table, the ACL."""

    def __init__(self, *, allow_anonymous: bool = True, acl: Acl | None = None,
                 routed: bool = False) -> None:
        self.broker = Broker(max_queued=100)
        self.rules = acl.rules if acl is not None else ()
        self.topics = GenericTopics(self.broker, acl_rules=lambda: self.rules, wall_time=lambda: 1000.0,
                                    routed=lambda topic: routed)
        self.table = SessionTable()
        self.authenticator = AnonymousAuthenticator(registry, allow_anonymous=allow_anonymous)

    def client(self, client_id: str, version: int = MQTT_5, *, password: bytes | None = None,
               clean: bool = True, expiry: int | None = None) -> Client:
        client = Client(self, version)
        props = Properties(session_expiry_interval=expiry) if expiry is not None else Properties()
        client.send(Connect(version, client_id, clean, 60, password=password,
                            username="hub/" + client_id if password is not None else None,
                            properties=props if version == MQTT_5 else Properties()))
        return client


class Client:
    def __init__(self, world: World, version: int) -> None:
        self.version = version
        self.session = MqttSession(world.authenticator, world.table, 0.0,
                                   authorizer=NoAnonymousIotHub(OwnTopicsAuthorizer()), generic=world.topics)
        self.decoder = Decoder(version=version)
        self.events: list[Event] = []

    def send(self, *packets: Packet) -> list[Event]:
        events = self.session.receive_data(b"".join(encode(p, self.version) for p in packets), 1.0)
        self.events.extend(events)
        for event in events:
            if isinstance(event, TelemetryReceived):
                self.session.ack(event.token)
        return events

    def raw(self, data: bytes) -> list[Event]:
        events = self.session.receive_data(data, 1.0)
        self.events.extend(events)
        return events

    def received(self) -> list[Packet]:
        return self.decoder.feed(self.session.data_to_send())

    def publishes(self) -> list[Publish]:
        return [p for p in self.received() if isinstance(p, Publish)]

    def closed(self) -> Closed | None:
        return next((e for e in self.events if isinstance(e, Closed)), None)


@pytest.fixture(params=[MQTT_311, MQTT_5], ids=["mqtt311", "mqtt5"])
def version(request: pytest.FixtureRequest) -> int:
    level: int = request.param
    return level


def test_wildcard_subscription_receives_a_plain_publish(version: int) -> None:
    world = World()
    dash = world.client("dash", version)
    plc = world.client("plc", version)
    assert isinstance(dash.received()[0], ConnAck)
    dash.send(Subscribe(1, (Subscription("factory/#", 1),)))
    assert dash.received() == [SubAck(1, (1,))]
    plc.received()
    plc.send(Publish("factory/line1/temp", b"21.5", 1, packet_id=7))
    assert plc.received() == [PubAck(7)]
    [delivered] = dash.publishes()
    assert (delivered.topic, delivered.payload, delivered.qos) == ("factory/line1/temp", b"21.5", 1)
    dash.send(PubAck(delivered.packet_id))
    assert world.broker.session("dash").queue == {}  # type: ignore[union-attr]


def test_wildcard_in_a_publish_topic_closes_with_topic_name_invalid(version: int) -> None:
    world = World()
    plc = world.client("plc", version)
    plc.received()
    plc.send(Publish("factory/+/temp", b"x", 1, packet_id=1))
    closed = plc.closed()
    assert closed is not None
    assert closed.reason_code == ReasonCode.TOPIC_NAME_INVALID
    if version == MQTT_5:
        assert plc.received() == [Disconnect(ReasonCode.TOPIC_NAME_INVALID)]  # [MQTT-3.3.2-2]


def test_invalid_filters_are_refused_in_the_suback(version: int) -> None:
    world = World()
    dash = world.client("dash", version)
    dash.received()
    dash.send(Subscribe(2, (Subscription("a/#/b", 0), Subscription("a/b+", 0), Subscription("ok/+", 2))))
    failure = ReasonCode.TOPIC_FILTER_INVALID if version == MQTT_5 else 0x80
    assert dash.received() == [SubAck(2, (failure, failure, 2))]


def test_qos_3_publish_is_a_malformed_packet(version: int) -> None:
    world = World()
    plc = world.client("plc", version)
    plc.received()
    wire = bytearray(encode(Publish("a", b"x", 1, packet_id=1), version))
    wire[0] |= 0x06  # QoS bits 11 [MQTT-3.3.1-4]
    plc.raw(bytes(wire))
    closed = plc.closed()
    assert closed is not None
    assert closed.reason_code == ReasonCode.MALFORMED_PACKET


def test_acl_refusals_use_not_authorized() -> None:
    acl = Acl(__import__("edgehub.broker.acl", fromlist=["parse_acl"]).parse_acl(
        [{"allow": "all", "identity": "*", "topic": "public/#"}], "acl")[0])
    world = World(acl=acl)
    client = world.client("c", MQTT_5)
    client.received()
    client.send(Subscribe(1, (Subscription("private/#", 1), Subscription("public/+", 1))))
    assert client.received() == [SubAck(1, (ReasonCode.NOT_AUTHORIZED, 1))]
    client.send(Publish("private/x", b"x", 1, packet_id=3), Publish("private/y", b"y", 2, packet_id=4))
    assert client.received() == [PubAck(3, ReasonCode.NOT_AUTHORIZED), PubRec(4, ReasonCode.NOT_AUTHORIZED)]
    assert client.closed() is None


def test_acl_refused_publish_in_mqtt311_is_acked_and_dropped() -> None:
    from edgehub.broker.acl import parse_acl
    world = World(acl=Acl(parse_acl([{"allow": "subscribe", "identity": "*", "topic": "#"}], "acl")[0]))
    watcher = world.client("w", MQTT_311)
    watcher.send(Subscribe(1, (Subscription("#", 1),)))
    watcher.received()
    client = world.client("c", MQTT_311)
    client.received()
    client.send(Publish("x", b"x", 1, packet_id=3))
    assert client.received() == [PubAck(3)]
    assert watcher.publishes() == []


def test_qos_2_inbound_is_published_once_even_when_resent(version: int) -> None:
    world = World()
    dash = world.client("dash", version)
    dash.send(Subscribe(1, (Subscription("t", 0),)))
    dash.received()
    plc = world.client("plc", version)
    plc.received()
    plc.send(Publish("t", b"once", 2, packet_id=9))
    plc.send(Publish("t", b"once", 2, dup=True, packet_id=9))
    assert plc.received() == [PubRec(9), PubRec(9)]
    plc.send(PubRel(9))
    assert plc.received() == [PubComp(9)]
    assert [p.payload for p in dash.publishes()] == [b"once"]


def test_qos_2_outbound_runs_publish_pubrec_pubrel_pubcomp(version: int) -> None:
    world = World()
    dash = world.client("dash", version)
    dash.send(Subscribe(1, (Subscription("t", 2),)))
    dash.received()
    plc = world.client("plc", version)
    plc.send(Publish("t", b"exactly", 2, packet_id=5), PubRel(5))
    [delivered] = dash.publishes()
    assert delivered.qos == 2
    dash.send(PubRec(delivered.packet_id))
    assert dash.received() == [PubRel(delivered.packet_id)]
    dash.send(PubComp(delivered.packet_id))
    assert world.broker.session("dash").queue == {}  # type: ignore[union-attr]


def test_unacknowledged_messages_are_resent_with_dup_on_reconnect(version: int) -> None:
    world = World()
    first = world.client("dash", version, clean=False, expiry=600)
    first.send(Subscribe(1, (Subscription("t", 1),)))
    first.received()
    plc = world.client("plc", version)
    plc.send(Publish("t", b"a", 1, packet_id=1))
    [sent] = first.publishes()
    first.session.connection_lost(2.0)  # no PUBACK
    plc.send(Publish("t", b"b", 1, packet_id=2))  # queued while offline
    again = world.client("dash", version, clean=False, expiry=600)
    packets = again.received()
    assert isinstance(packets[0], ConnAck)
    assert packets[0].session_present
    publishes = [p for p in packets if isinstance(p, Publish)]
    assert next((p.payload, p.dup, p.packet_id) for p in publishes) == (b"a", True, sent.packet_id)
    assert [(p.payload, p.dup) for p in publishes][1] == (b"b", False)


def test_retained_message_reaches_a_later_subscriber_with_retain_set(version: int) -> None:
    world = World()
    plc = world.client("plc", version)
    plc.send(Publish("status/plc", b"online", 1, retain=True, packet_id=1))
    dash = world.client("dash", version)
    dash.received()
    dash.send(Subscribe(1, (Subscription("status/+", 1),)))
    packets = dash.received()
    assert packets[0] == SubAck(1, (1,))
    assert isinstance(packets[1], Publish)
    assert packets[1].retain
    assert packets[1].payload == b"online"


def test_will_on_a_generic_topic_is_published_when_the_connection_drops(version: int) -> None:
    world = World()
    dash = world.client("dash", version)
    dash.send(Subscribe(1, (Subscription("status/#", 0),)))
    dash.received()
    from edgehub.mqtt.packets import Will
    plc = Client(world, version)
    plc.send(Connect(version, "plc", True, 60, will=Will("status/plc", b"offline")))
    plc.session.connection_lost(3.0)
    assert [p.payload for p in dash.publishes()] == [b"offline"]


def test_anonymous_clients_are_refused_unless_allowed(version: int) -> None:
    world = World(allow_anonymous=False)
    client = world.client("plc", version)
    [connack] = client.received()
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == (ReasonCode.NOT_AUTHORIZED if version == MQTT_5 else 5)


def test_anonymous_clients_get_no_iot_hub_topics() -> None:
    world = World()
    client = world.client("plc", MQTT_5)
    client.received()
    client.send(Subscribe(1, (Subscription("devices/plc/messages/devicebound/#", 1),
                              Subscription("$iothub/twin/res/#", 0))))
    assert client.received() == [SubAck(1, (ReasonCode.NOT_AUTHORIZED, ReasonCode.NOT_AUTHORIZED))]
    client.send(Publish("devices/plc/messages/events/", b"x", 1, packet_id=2),
                Publish("$iothub/twin/GET/?$rid=1", b"", 1, packet_id=3))
    assert client.received() == [PubAck(2, ReasonCode.NOT_AUTHORIZED), PubAck(3, ReasonCode.NOT_AUTHORIZED)]


def test_registry_identity_keeps_its_iot_hub_topics_beside_generic_ones() -> None:
    world = World(routed=False)
    device = world.client("sensor1", MQTT_311, password=b"secret")
    device.received()
    events = device.send(Publish("devices/sensor1/messages/events/", b"telemetry", 1, packet_id=1),
                         Publish("plain/topic", b"generic", 1, packet_id=2))
    [telemetry] = [e for e in events if isinstance(e, TelemetryReceived)]
    assert [m.body for m in telemetry.messages] == [b"telemetry"]  # generic: not routed, not ingested
    assert device.received() == [PubAck(1), PubAck(2)]


def test_routed_generic_messages_are_ingested_with_their_topic() -> None:
    world = World(routed=True)
    plc = world.client("plc", MQTT_5)
    plc.received()
    events = plc.send(Publish("factory/temp", b"x", 1, packet_id=1,
                              properties=Properties(user_properties=(("unit", "C"),))))
    [telemetry] = [e for e in events if isinstance(e, TelemetryReceived)]
    [message] = telemetry.messages
    assert message.system_properties[MQTT_TOPIC] == "factory/temp"
    assert dict(message.properties) == {"unit": "C", MQTT_TOPIC: "factory/temp"}
    assert plc.received() == [PubAck(1)]  # after the ingest (acked by the harness)


def test_empty_client_id_gets_an_assigned_one_in_mqtt5() -> None:
    world = World()
    client = world.client("", MQTT_5)
    [connack] = client.received()
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == 0
    assert connack.properties.assigned_client_identifier
    assert connack.properties.retain_available is None  # available
    assert connack.properties.shared_subscription_available is None


def test_unsubscribe_of_a_generic_filter(version: int) -> None:
    world = World()
    dash = world.client("dash", version)
    dash.send(Subscribe(1, (Subscription("t/#", 0),)))
    dash.received()
    dash.send(Unsubscribe(2, ("t/#", "never")))
    expected = UnsubAck(2, (0, ReasonCode.NO_SUBSCRIPTION_EXISTED) if version == MQTT_5 else ())
    assert dash.received() == [expected]
    world.client("plc", version).send(Publish("t/x", b"x"))
    assert dash.publishes() == []


def test_subscription_identifiers_and_user_properties_reach_an_mqtt5_subscriber() -> None:
    world = World()
    dash = world.client("dash", MQTT_5)
    dash.send(Subscribe(1, (Subscription("t/#", 1),), Properties(subscription_identifiers=(42,))))
    dash.received()
    plc = world.client("plc", MQTT_5)
    plc.send(Publish("t/a", b"x", 1, packet_id=1, properties=Properties(
        user_properties=(("k", "v"),), response_topic="reply/plc", correlation_data=b"c1",
        content_type="text/plain", message_expiry_interval=60)))
    [delivered] = dash.publishes()
    props = delivered.properties
    assert props.subscription_identifiers == (42,)
    assert props.user_properties == (("k", "v"),)
    assert (props.response_topic, props.correlation_data, props.content_type) == ("reply/plc", b"c1",
                                                                                   "text/plain")
    assert props.message_expiry_interval == 60


class FailingStore:
    """A BrokerStore whose writes fail (a closed or broken store)."""

    def apply(self, changes: object) -> None:
        raise StoreError("store is closed")

    def load(self) -> BrokerSnapshot:
        return BrokerSnapshot([], [], [])


def test_a_publish_the_store_could_not_keep_is_refused_not_acked(version: int) -> None:
    world = World()
    world.broker = world.topics.broker = Broker(store=FailingStore())
    offline = world.client("sub", version, clean=False, expiry=600)
    offline.received()
    offline.send(Subscribe(1, (Subscription("t", 1),)))  # its record fails too: logged, kept in memory
    offline.session.connection_lost(2.0)
    plc = world.client("plc", version)
    plc.received()
    plc.send(Publish("t", b"x", 1, packet_id=4))
    if version == MQTT_5:
        assert plc.received() == [PubAck(4, ReasonCode.QUOTA_EXCEEDED)]
    else:
        closed = plc.closed()
        assert closed is not None
        assert closed.reason_code == ReasonCode.QUOTA_EXCEEDED
        assert plc.received() == []  # MQTT 3.1.1: closed without PUBACK
