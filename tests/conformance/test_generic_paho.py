"""The generic MQTT broker with paho-mqtt 2.x, MQTT 3.1.1 and 5, against a real hub: wildcards,
retained messages, wills, QoS 2, persistent sessions across a hub restart and kill -9, ACLs,
anonymous clients, shared subscriptions, MQTT 5 properties and routes from /topics."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    SUBACK_FAILURE_311,
    ConnAck,
    Connect,
    Disconnect,
    Publish,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
)
from tests.conformance.generic_broker import VERSIONS, Broker, connect, properties_of, quiet, run_broker

pytestmark = pytest.mark.conformance


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with run_broker(tmp_path_factory.mktemp("generic")) as running:
        yield running


@pytest.fixture(params=sorted(VERSIONS), ids=lambda v: f"mqtt{v}")
def v(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_wildcard_subscriptions_receive_plain_publishes(broker: Broker, v: str) -> None:
    sub = connect(broker.port, f"dash-{v}", VERSIONS[v])
    assert sub.subscribe((f"w{v}/+/temp", 1), (f"w{v}/line2/#", 1)) == [1, 1]
    pub = connect(broker.port, f"plc-{v}", VERSIONS[v])
    pub.publish(f"w{v}/line1/temp", b"21", 1)
    pub.publish(f"w{v}/line2/pressure/inlet", b"3", 1)
    pub.publish(f"w{v}/line1/humidity", b"no", 1)
    pub.publish(f"w{v}/line2/temp", b"once", 1)  # matches both filters: delivered once
    got = sub.wait_messages(3)
    quiet(sub)
    assert sorted((m.topic, m.payload) for m in got) == [
        (f"w{v}/line1/temp", b"21"), (f"w{v}/line2/pressure/inlet", b"3"), (f"w{v}/line2/temp", b"once")]
    sub.stop()
    pub.stop()


def test_retained_message_is_set_replaced_and_cleared(broker: Broker, v: str) -> None:
    pub = connect(broker.port, f"ret-pub-{v}", VERSIONS[v])
    pub.publish(f"r{v}/status", b"first", 1, retain=True)
    pub.publish(f"r{v}/status", b"second", 1, retain=True)
    late = connect(broker.port, f"ret-sub-{v}", VERSIONS[v])
    late.subscribe((f"r{v}/#", 1))
    [got] = late.wait_messages(1)
    assert (got.payload, got.retain) == (b"second", True)
    late.stop()
    pub.publish(f"r{v}/status", b"", 1, retain=True)
    later = connect(broker.port, f"ret-sub2-{v}", VERSIONS[v])
    later.subscribe((f"r{v}/#", 1))
    quiet(later)
    assert later.messages == []
    later.stop()
    pub.stop()


def test_will_is_published_when_a_client_vanishes(broker: Broker, v: str) -> None:
    watcher = connect(broker.port, f"will-watch-{v}", VERSIONS[v])
    watcher.subscribe((f"will{v}/#", 1))
    doomed = connect(broker.port, f"will-plc-{v}", VERSIONS[v], will=(f"will{v}/plc", b"offline", 1, False))
    doomed.stop(graceful=False)
    [got] = watcher.wait_messages(1)
    assert (got.topic, got.payload) == (f"will{v}/plc", b"offline")
    polite = connect(broker.port, f"will-polite-{v}", VERSIONS[v], will=(f"will{v}/polite", b"x", 1, False))
    polite.stop()
    quiet(watcher)
    watcher.stop()


def test_mqtt5_will_delay_holds_the_will_back(broker: Broker) -> None:
    watcher = connect(broker.port, "delay-watch", mqtt.MQTTv5)
    watcher.subscribe(("delay/#", 1))
    doomed = connect(broker.port, "delay-plc", mqtt.MQTTv5, expiry=60, will=("delay/plc", b"late", 1, False),
                     will_delay=2)
    gone = time.monotonic()
    doomed.stop(graceful=False)
    [got] = watcher.wait_messages(1, timeout=8)
    assert got.payload == b"late"
    assert time.monotonic() - gone >= 1.5
    watcher.stop()


def test_qos_2_is_exactly_once_both_ways(broker: Broker, v: str) -> None:
    sub = connect(broker.port, f"q2-sub-{v}", VERSIONS[v])
    assert sub.subscribe((f"q2{v}/#", 2)) == [2]
    pub = connect(broker.port, f"q2-pub-{v}", VERSIONS[v])
    for i in range(20):
        pub.publish(f"q2{v}/m", str(i).encode(), 2)
    got = sub.wait_messages(20)
    quiet(sub)
    assert [m.payload for m in got] == [str(i).encode() for i in range(20)]
    assert {m.qos for m in got} == {2}
    sub.stop()
    pub.stop()


def test_acl_refuses_a_subscription_and_drops_a_publish(broker: Broker, v: str) -> None:
    client = connect(broker.port, f"acl-{v}", VERSIONS[v])
    codes = client.subscribe(("secret/#", 1), (f"clients/acl-{v}/#", 1))
    assert codes == [0x87 if v == "5" else 0x80, 1]
    client.publish(f"clients/acl-{v}/x", b"own", 1)  # %c: its own branch
    client.publish("clients/someone-else/x", b"foreign", 1)  # denied: not delivered
    [got] = client.wait_messages(1)
    assert got.payload == b"own"
    quiet(client)
    client.stop()


def test_shared_subscription_splits_messages_between_members(broker: Broker) -> None:
    members = [connect(broker.port, f"worker-{i}", mqtt.MQTTv5) for i in range(2)]
    for member in members:
        assert member.subscribe(("$share/workers/jobs/#", 1)) == [1]
    pub = connect(broker.port, "dispatcher", mqtt.MQTTv5)
    for i in range(10):
        pub.publish("jobs/build", str(i).encode(), 1)
    for member in members:
        member.wait_for(lambda: sum(len(m.messages) for m in members) >= 10)
    counts = [len(m.messages) for m in members]
    assert sum(counts) == 10, counts
    assert min(counts) >= 3, counts
    for client in (*members, pub):
        client.stop()


def test_mqtt5_properties_and_subscription_identifiers_pass_through(broker: Broker) -> None:
    sub = connect(broker.port, "props-sub", mqtt.MQTTv5)
    sub_props = properties_of(PacketTypes.SUBSCRIBE)
    sub_props.SubscriptionIdentifier = 17
    sub.subscribe(("props/#", 1), properties=sub_props)
    pub = connect(broker.port, "props-pub", mqtt.MQTTv5)
    props = properties_of(PacketTypes.PUBLISH)
    props.UserProperty = [("unit", "C"), ("line", "1")]
    props.ResponseTopic = "props/reply"
    props.CorrelationData = b"req-1"
    props.ContentType = "text/plain"
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 120
    pub.publish("props/temp", b"21", 1, properties=props)
    [got] = sub.wait_messages(1)
    received = got.properties
    assert received.UserProperty == [("unit", "C"), ("line", "1")]
    assert (received.ResponseTopic, received.CorrelationData) == ("props/reply", b"req-1")
    assert (received.ContentType, received.PayloadFormatIndicator) == ("text/plain", 1)
    assert received.SubscriptionIdentifier == [17]
    assert 0 < received.MessageExpiryInterval <= 120
    sub.stop()
    pub.stop()


def test_mqtt5_no_local_and_retain_handling(broker: Broker) -> None:
    me = connect(broker.port, "nolocal", mqtt.MQTTv5)
    me.subscribe(("nl/chat", 1), options=SubscribeOptions(qos=1, noLocal=True))
    me.publish("nl/chat", b"mine", 1)
    other = connect(broker.port, "nolocal-other", mqtt.MQTTv5)
    other.publish("nl/chat", b"theirs", 1)
    [got] = me.wait_messages(1)
    assert got.payload == b"theirs"
    other.publish("nl/kept", b"retained", 1, retain=True)
    me.subscribe(("nl/kept", 1), options=SubscribeOptions(
        qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
    quiet(me)
    me.stop()
    other.stop()


def test_mqtt5_topic_alias_from_the_client(broker: Broker) -> None:
    sub = connect(broker.port, "alias-sub", mqtt.MQTTv5)
    sub.subscribe(("alias/#", 0))
    pub = connect(broker.port, "alias-pub", mqtt.MQTTv5)
    first = properties_of(PacketTypes.PUBLISH)
    first.TopicAlias = 3
    pub.publish("alias/long/topic", b"1", 1, properties=first)
    pub.publish("", b"2", 1, properties=first)  # the alias alone names the topic
    got = sub.wait_messages(2)
    assert [(m.topic, m.payload) for m in got] == [("alias/long/topic", b"1"), ("alias/long/topic", b"2")]
    sub.stop()
    pub.stop()


def test_mqtt5_expired_message_is_not_delivered_to_a_returning_session(broker: Broker) -> None:
    sub = connect(broker.port, "expiry-sub", mqtt.MQTTv5, clean=False, expiry=300)
    sub.subscribe(("expiry/#", 1))
    sub.stop()
    pub = connect(broker.port, "expiry-pub", mqtt.MQTTv5)
    props = properties_of(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 1
    pub.publish("expiry/short", b"stale", 1, properties=props)
    expired_at = time.time() + 2.1  # past the 1 s expiry at whole-second granularity, on the same clock
    pub.publish("expiry/long", b"fresh", 1)
    while time.time() < expired_at:  # the message's own expiry is the thing under test: it must pass
        time.sleep(0.05)
    again = connect(broker.port, "expiry-sub", mqtt.MQTTv5, clean=False, expiry=300)
    [got] = again.wait_messages(1)
    quiet(again)
    assert got.payload == b"fresh"
    again.stop()
    pub.stop()


def test_mqtt5_empty_client_id_gets_one_assigned(broker: Broker) -> None:
    client = connect(broker.port, "", mqtt.MQTTv5)
    _, reason, props = client.connack[0]
    assert reason == 0
    assert props.AssignedClientIdentifier.startswith("auto-")
    client.stop()


def _raw_session(port: int, level: int, wire: bytes) -> list[object]:
    """CONNECT, wait for the CONNACK, send ``wire``; every packet until the hub closes."""
    decoder = Decoder(version=level)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(encode(Connect(level, f"raw-{level}", True, 30), level))
        packets: list[object] = []
        while not packets:
            packets += decoder.feed(sock.recv(4096))
        sock.sendall(wire)
        while chunk := sock.recv(4096):
            packets += decoder.feed(chunk)
    return packets


@pytest.mark.parametrize("level", [MQTT_311, MQTT_5], ids=["mqtt311", "mqtt5"])
def test_wildcard_in_a_publish_topic_is_refused(broker: Broker, level: int) -> None:
    packets = _raw_session(broker.port, level, encode(Publish("bad/+/topic", b"x", 1, packet_id=1), level))
    assert isinstance(packets[0], ConnAck)
    if level == MQTT_5:
        assert packets[1:] == [Disconnect(ReasonCode.TOPIC_NAME_INVALID)]
    else:
        assert packets[1:] == []  # MQTT 3.1.1: the connection closes, nothing acked


@pytest.mark.parametrize("level", [MQTT_311, MQTT_5], ids=["mqtt311", "mqtt5"])
def test_qos_3_publish_is_refused_as_malformed(broker: Broker, level: int) -> None:
    bad = bytearray(encode(Publish("ok/topic", b"x", 1, packet_id=1), level))
    bad[0] |= 0x06  # QoS bits 11 [MQTT-3.3.1-4]
    packets = _raw_session(broker.port, level, bytes(bad))
    assert isinstance(packets[0], ConnAck)
    assert packets[1:] == ([Disconnect(ReasonCode.MALFORMED_PACKET)] if level == MQTT_5 else [])


@pytest.mark.parametrize("level", [MQTT_311, MQTT_5], ids=["mqtt311", "mqtt5"])
def test_invalid_filters_are_refused_with_their_reason_code(broker: Broker, level: int) -> None:
    # paho refuses these filters itself: raw packets, as a careless client would send them
    subscribe = Subscribe(1, (Subscription("a/#/b", 0), Subscription("a/b+", 0), Subscription("fine/#", 0)))
    packets = _raw_session(broker.port, level, encode(subscribe, level) + encode(Disconnect(), level))
    failure = ReasonCode.TOPIC_FILTER_INVALID if level == MQTT_5 else SUBACK_FAILURE_311
    assert packets[1:] == [SubAck(1, (failure, failure, 0))]


def test_iot_hub_topics_are_not_open_to_anonymous_clients(broker: Broker) -> None:
    client = connect(broker.port, "anon-iot", mqtt.MQTTv5)
    assert client.subscribe(("devices/anon-iot/messages/devicebound/#", 1)) == [0x87]
    client.stop()


# --- persistent sessions across restarts ------------------------------------------------------------


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "kill-9"])
def test_persistent_session_keeps_subscriptions_and_queued_messages_across_a_hub_restart(
    tmp_path: Path, v: str, kill: bool,
) -> None:
    with run_broker(tmp_path / "hub") as broker:
        sub = connect(broker.port, f"persist-{v}", VERSIONS[v], clean=False, expiry=3600)
        assert sub.subscribe(("plant/#", 2)) == [2]
        sub.stop()
        pub = connect(broker.port, "persist-pub", VERSIONS[v])
        for i in range(5):
            pub.publish("plant/m", str(i).encode(), 1 + i % 2)
        pub.publish("plant/state", b"retained", 1, retain=True)
        pub.stop()
        broker.restart(kill=kill)
        again = connect(broker.port, f"persist-{v}", VERSIONS[v], clean=False, expiry=3600)
        assert again.connack[0][0] is True  # session present
        got = again.wait_messages(6)
        quiet(again)
        # in order per QoS (paho hands a QoS 2 message over at PUBREL, so QoS 1 ones overtake them)
        assert [m.payload for m in got if m.qos == 1] == [b"0", b"2", b"4", b"retained"]
        assert [m.payload for m in got if m.qos == 2] == [b"1", b"3"]
        late = connect(broker.port, f"persist-late-{v}", VERSIONS[v])
        late.subscribe(("plant/state", 1))
        assert late.wait_messages(1)[0].payload == b"retained"
        for client in (again, late):
            client.stop()


def test_routes_from_topics_carry_plain_messages_to_a_module_input(tmp_path: Path) -> None:
    import base64
    import os

    from edgehub.auth.sas import make_sas_token, sas_resource
    from edgehub.message import Identity

    key = base64.b64encode(os.urandom(32)).decode()
    sink = Identity("edge", "sink")
    routes = {"plain": 'FROM /topics/factory/# INTO BrokeredEndpoint("/modules/sink/inputs/plain")'}
    identities = [{"deviceId": "edge", "moduleId": "sink", "primaryKey": key}]
    with run_broker(tmp_path / "hub", routes=routes, identities=identities) as broker:
        token = make_sas_token(sas_resource("hub.local", sink), key, int(time.time()) + 3600)
        module = connect(broker.port, "edge/sink", mqtt.MQTTv311,
                         username="hub.local/edge/sink/?api-version=2021-04-12", password=token)
        assert module.connack[0][1] == 0
        module.subscribe(("devices/edge/modules/sink/inputs/#", 1))
        plc = connect(broker.port, "plc-route", mqtt.MQTTv5)
        props = properties_of(PacketTypes.PUBLISH)
        props.UserProperty = [("unit", "C")]
        plc.publish("factory/line1/temp", b"21.5", 1, properties=props)
        plc.publish("office/temp", b"not routed", 1)
        [got] = module.wait_messages(1)
        quiet(module)
        assert got.payload == b"21.5"
        assert got.topic.startswith("devices/edge/modules/sink/inputs/plain/")
        assert "unit=C" in got.topic
        for client in (module, plc):
            client.stop()
