"""Tests of edgehub.heads.mqtt.session: the sans-I/O MQTT state machine, driven with bytes and ``now``."""

from __future__ import annotations

import pytest

from edgehub.errors import AuthError
from edgehub.heads.mqtt.events import (
    Closed,
    Connected,
    DeliveryChanged,
    Event,
    Phase,
    PublishAcked,
    TelemetryReceived,
    WillReady,
)
from edgehub.heads.mqtt.policy import Authenticated, Authenticator, ConnectRequest, SessionConfig
from edgehub.heads.mqtt.session import MqttSession
from edgehub.heads.mqtt.sessions import SessionTable
from edgehub.message import Identity, Message
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
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
    Will,
)
from edgehub.mqtt.wire import encode_varint

MODULE = Identity("edge", "filter")
DEVICE = Identity("sensor1")
TELEMETRY = "devices/edge/modules/filter/messages/events/"
INPUTS = "devices/edge/modules/filter/inputs/#"


def authenticate(request: ConnectRequest) -> Identity:
    if request.password != b"secret":
        raise AuthError("bad SAS token")
    return Identity.parse(request.client_id)


class Peer:
    """A client's view of one session: encode what it sends, decode what the server sent."""

    def __init__(self, version: int = MQTT_311, *, table: SessionTable | None = None,
                 config: SessionConfig | None = None, now: float = 0.0,
                 authenticator: Authenticator = authenticate) -> None:
        self.version = version
        self.table = table or SessionTable()
        self.session = MqttSession(authenticator, self.table, now, config=config)
        self.decoder = Decoder(version=version)
        self.events: list[Event] = []

    def send(self, *packets: Packet, now: float = 0.0) -> list[Event]:
        data = b"".join(encode(p, self.version) for p in packets)
        events = self.session.receive_data(data, now)
        self.events.extend(events)
        return events

    def received(self) -> list[Packet]:
        return self.decoder.feed(self.session.data_to_send())

    def connect(self, client_id: str = MODULE.id, *, clean: bool = True, keep_alive: int = 0,
                will: Will | None = None, properties: Properties | None = None,
                password: bytes = b"secret") -> list[Packet]:
        self.send(Connect(self.version, client_id, clean, keep_alive, "hub/" + client_id, password, will,
                          properties or Properties()))
        return self.received()

    def telemetry(self, *packet_ids: int, topic: str = TELEMETRY, qos: int = 1) -> TelemetryReceived:
        events = self.send(*(Publish(topic, b"body%d" % i, qos, packet_id=i) for i in packet_ids))
        [event] = [e for e in events if isinstance(e, TelemetryReceived)]
        return event

    @property
    def closed(self) -> bool:
        return self.session.phase is Phase.CLOSED


both_versions = pytest.mark.parametrize("version", [MQTT_311, MQTT_5])


# --- CONNECT ---------------------------------------------------------------------------------


@both_versions
def test_connect_with_good_credentials_is_accepted(version: int) -> None:
    peer = Peer(version)
    [connack] = peer.connect()
    assert isinstance(connack, ConnAck)
    assert (connack.reason_code, connack.session_present) == (0, False)
    assert peer.events == [Connected(MODULE, MODULE.id, False, version, None)]


def test_v5_connack_advertises_the_limits() -> None:
    peer = Peer(MQTT_5, config=SessionConfig(max_message_size=1000, receive_maximum=10))
    [connack] = peer.connect()
    assert isinstance(connack, ConnAck)
    props = connack.properties
    assert props.receive_maximum == 10
    assert props.maximum_packet_size == 1000 + SessionConfig().packet_overhead
    assert (props.retain_available, props.shared_subscription_available) == (0, 0)


@pytest.mark.parametrize(
    ("version", "password", "code"),
    [
        (MQTT_311, b"wrong", 0x05),  # 3.1.1 not authorized
        (MQTT_5, b"wrong", ReasonCode.BAD_USER_NAME_OR_PASSWORD),
    ],
)
def test_bad_credentials_get_a_refusing_connack_and_close(version: int, password: bytes, code: int) -> None:
    peer = Peer(version)
    [connack] = peer.connect(password=password)
    assert connack == ConnAck(False, code)
    assert peer.closed
    assert isinstance(peer.events[-1], Closed)


def test_v5_connect_without_credentials_is_not_authorized() -> None:
    peer = Peer(MQTT_5)
    peer.send(Connect(MQTT_5, MODULE.id))
    assert peer.received() == [ConnAck(False, ReasonCode.NOT_AUTHORIZED)]


@pytest.mark.parametrize(
    ("version", "code"), [(MQTT_311, 0x02), (MQTT_5, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)],
)
def test_client_id_must_be_the_identity(version: int, code: int) -> None:
    table = SessionTable()
    session = MqttSession(lambda r: MODULE, table, 0.0)
    decoder = Decoder(version=version)
    session.receive_data(encode(Connect(version, "someone-else", username="u", password=b"x"), version), 0.0)
    assert decoder.feed(session.data_to_send()) == [ConnAck(False, code)]


def test_unknown_protocol_level_gets_connack_0x01() -> None:
    peer = Peer()
    wire = encode(Connect(MQTT_311, MODULE.id)).replace(b"MQTT\x04", b"MQTT\x07")
    events = peer.session.receive_data(wire, 0.0)
    assert peer.received() == [ConnAck(False, 0x01)]
    assert isinstance(events[-1], Closed)


def test_first_packet_other_than_connect_closes_without_reply() -> None:
    peer = Peer()
    peer.send(PingReq())
    assert peer.closed
    assert peer.session.data_to_send() == b""


def test_second_connect_is_a_protocol_error() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    peer.send(Connect(MQTT_5, MODULE.id, password=b"secret"))
    assert peer.received() == [Disconnect(ReasonCode.PROTOCOL_ERROR)]
    assert peer.closed


def test_enhanced_authentication_is_refused() -> None:
    peer = Peer(MQTT_5)
    [connack] = peer.connect(properties=Properties(authentication_method="SCRAM-SHA-1"))
    assert connack == ConnAck(False, ReasonCode.BAD_AUTHENTICATION_METHOD)


def test_connect_timeout_closes_a_silent_connection() -> None:
    peer = Peer(config=SessionConfig(connect_timeout=5.0), now=100.0)
    assert peer.session.tick(104.9) == []
    [closed] = peer.session.tick(105.0)
    assert isinstance(closed, Closed)


@both_versions
def test_keep_alive_closes_after_one_and_a_half_periods(version: int) -> None:
    peer = Peer(version)
    peer.connect(keep_alive=10)
    peer.send(PingReq(), now=100.0)
    assert peer.received() == [PingResp()]
    assert peer.session.tick(115.0) == []
    events = peer.session.tick(115.1)
    assert isinstance(events[-1], Closed)
    expected = [Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)] if version == MQTT_5 else []
    assert peer.received() == expected


def test_keep_alive_zero_never_times_out() -> None:
    peer = Peer()
    peer.connect(keep_alive=0)
    assert peer.session.tick(1e9) == []


def expiring_in(seconds: float) -> Authenticator:
    """An authenticator whose credentials expire ``seconds`` after the CONNECT."""

    def authenticated(request: ConnectRequest) -> Authenticated:
        return Authenticated(authenticate(request), seconds)

    return authenticated


@both_versions
def test_expired_credential_closes_the_connection_on_tick(version: int) -> None:
    peer = Peer(version, authenticator=expiring_in(60.0))
    peer.connect(will=Will(TELEMETRY, b"gone"))  # at now = 0
    assert peer.session.tick(59.9) == []
    events = peer.session.tick(60.0)
    assert isinstance(events[-1], Closed)
    assert events[-1].reason_code == ReasonCode.MAXIMUM_CONNECT_TIME
    assert any(isinstance(e, WillReady) for e in events)  # closed by the server without DISCONNECT 0x00
    # MQTT 5: DISCONNECT 0xA0 Maximum connect time first; MQTT 3.1.1 has no server DISCONNECT.
    assert peer.received() == ([Disconnect(ReasonCode.MAXIMUM_CONNECT_TIME)] if version == MQTT_5 else [])


def test_nothing_is_taken_in_once_the_credential_expired() -> None:
    peer = Peer(MQTT_5, authenticator=expiring_in(60.0))
    peer.connect()
    assert peer.telemetry(1).messages
    events = peer.send(Publish(TELEMETRY, b"late", 1, packet_id=2), now=60.5)  # before the next tick
    assert not any(isinstance(e, TelemetryReceived) for e in events)
    assert peer.received() == [Disconnect(ReasonCode.MAXIMUM_CONNECT_TIME)]
    assert peer.closed


def test_a_credential_without_expiry_never_closes_the_connection() -> None:
    peer = Peer(authenticator=lambda request: Authenticated(authenticate(request)))
    peer.connect()
    assert peer.session.tick(1e9) == []


def test_expiry_counts_from_the_connect_of_this_connection() -> None:
    peer = Peer(MQTT_5, authenticator=expiring_in(30.0), now=100.0)
    peer.send(Connect(MQTT_5, MODULE.id, True, 0, "u", b"secret"), now=100.0)
    assert peer.session.tick(129.0) == []
    assert isinstance(peer.session.tick(130.0)[-1], Closed)


@pytest.mark.parametrize(("version", "code"), [(MQTT_311, 0x03), (MQTT_5, ReasonCode.QUOTA_EXCEEDED)])
def test_max_connected_clients_refuses_the_next_client(version: int, code: int) -> None:
    table = SessionTable(max_connected=1)
    Peer(version, table=table).connect(MODULE.id)
    late = Peer(version, table=table)
    assert late.connect(DEVICE.id) == [ConnAck(False, code)]
    assert late.closed


# --- inbound telemetry -----------------------------------------------------------------------


@both_versions
def test_pubacks_wait_for_the_ingest_then_go_out_in_order(version: int) -> None:
    peer = Peer(version)
    peer.connect()
    event = peer.telemetry(3, 1, 2)
    assert [m.body for m in event.messages] == [b"body3", b"body1", b"body2"]
    assert peer.received() == []
    peer.session.ack(event.token)
    assert peer.received() == [PubAck(3), PubAck(1), PubAck(2)]


def test_one_read_makes_one_telemetry_event() -> None:
    peer = Peer()
    peer.connect()
    events = peer.send(*(Publish(TELEMETRY, b"x", 1, packet_id=i) for i in range(1, 101)))
    assert [type(e) for e in events] == [TelemetryReceived]


def test_later_batch_acked_first_still_waits_for_the_earlier_one() -> None:
    # [MQTT-4.6.0-2]: PUBACKs in the order the PUBLISHes arrived.
    peer = Peer()
    peer.connect()
    first = peer.telemetry(1)
    second = peer.telemetry(2)
    peer.session.ack(second.token)
    assert peer.received() == []
    peer.session.ack(first.token)
    assert peer.received() == [PubAck(1), PubAck(2)]


def test_qos0_telemetry_is_ingested_without_acks() -> None:
    peer = Peer()
    peer.connect()
    event = peer.telemetry(0, qos=0)
    peer.session.ack(event.token)
    assert peer.received() == []
    assert len(event.messages) == 1


def test_message_carries_bag_properties_and_the_authenticated_identity() -> None:
    peer = Peer()
    peer.connect()
    topic = TELEMETRY + "%24.mid=m1&%24.ct=application%2Fjson&%24.on=out1&%24.cdid=spoofed&temp=hot"
    [message] = peer.telemetry(1, topic=topic).messages
    assert message.properties == {"temp": "hot"}
    assert message.system_properties == {
        "messageId": "m1", "contentType": "application/json", "outputName": "out1",
        "connectionDeviceId": "edge", "connectionModuleId": "filter",
    }
    assert message.source == MODULE


def test_v5_user_properties_and_content_type_map_onto_the_message() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    props = Properties(content_type="text/plain", correlation_data=b"c-7", user_properties=(("k", "v"),))
    [event] = peer.send(Publish(TELEMETRY, b"x", 1, packet_id=1, properties=props))
    assert isinstance(event, TelemetryReceived)
    [message] = event.messages
    assert message.properties == {"k": "v"}
    assert message.system_properties["contentType"] == "text/plain"
    assert message.system_properties["correlationId"] == "c-7"


@pytest.mark.parametrize(
    "topic",
    [
        "devices/other/modules/filter/messages/events/",  # another identity
        "devices/edge/modules/other/messages/events/",  # another module of the same device
        "devices/edge/messages/events/",  # the device, not the module
        "some/generic/topic",  # outside the IoT Hub scheme
    ],
)
def test_v5_publish_outside_own_telemetry_gets_puback_not_authorized(topic: str) -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    pending = peer.telemetry(1)
    events = peer.send(Publish(topic, b"x", 1, packet_id=2))
    assert events == []
    assert peer.received() == []  # the refusal waits behind packet 1 [MQTT-4.6.0-2]
    peer.session.ack(pending.token)
    assert peer.received() == [PubAck(1), PubAck(2, ReasonCode.NOT_AUTHORIZED)]
    assert not peer.closed


def test_311_publish_as_another_identity_closes_the_connection() -> None:
    peer = Peer()
    peer.connect()
    events = peer.send(Publish("devices/other/messages/events/", b"x", 1, packet_id=1))
    assert isinstance(events[-1], Closed)
    assert peer.received() == []


@both_versions
def test_store_full_refusal_depends_on_the_version(version: int) -> None:
    peer = Peer(version)
    peer.connect()
    event = peer.telemetry(1, 2)
    events = peer.session.refuse(event.token)
    if version == MQTT_5:
        assert peer.received() == [PubAck(1, ReasonCode.QUOTA_EXCEEDED), PubAck(2, ReasonCode.QUOTA_EXCEEDED)]
        assert not peer.closed
    else:
        assert peer.received() == []  # docs/architecture.md §1 inv. 6: no PUBACK, disconnect
        assert isinstance(events[-1], Closed)


@both_versions
def test_message_above_max_message_size_closes(version: int) -> None:
    peer = Peer(version, config=SessionConfig(max_message_size=100))
    peer.connect()
    events = peer.send(Publish(TELEMETRY, b"x" * 101, 1, packet_id=1))
    assert isinstance(events[-1], Closed)
    assert events[-1].reason_code == ReasonCode.PACKET_TOO_LARGE
    expected = [Disconnect(ReasonCode.PACKET_TOO_LARGE)] if version == MQTT_5 else []
    assert peer.received() == expected


def test_packet_above_maximum_packet_size_is_refused_from_its_header() -> None:
    peer = Peer(MQTT_5, config=SessionConfig(max_message_size=100, packet_overhead=10))
    peer.connect()
    events = peer.session.receive_data(b"\x32" + encode_varint(100_000), 0.0)
    assert peer.received() == [Disconnect(ReasonCode.PACKET_TOO_LARGE)]
    assert isinstance(events[-1], Closed)


@both_versions
def test_malformed_packet_closes_with_0x81(version: int) -> None:
    peer = Peer(version)
    peer.connect()
    peer.session.receive_data(b"\x36\x05\x00\x01t\x00\x01", 0.0)  # QoS 3
    expected = [Disconnect(ReasonCode.MALFORMED_PACKET)] if version == MQTT_5 else []
    assert peer.received() == expected
    assert peer.closed


def test_topic_alias_sets_then_replaces_the_topic() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    set_alias = Publish(TELEMETRY, b"a", 1, packet_id=1, properties=Properties(topic_alias=3))
    use_alias = Publish("", b"b", 1, packet_id=2, properties=Properties(topic_alias=3))
    [event] = peer.send(set_alias, use_alias)
    assert isinstance(event, TelemetryReceived)
    assert [m.source for m in event.messages] == [MODULE, MODULE]


@pytest.mark.parametrize(
    ("alias", "reason"), [(65, ReasonCode.TOPIC_ALIAS_INVALID), (5, ReasonCode.PROTOCOL_ERROR)],
)
def test_bad_topic_alias_disconnects(alias: int, reason: int) -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    peer.send(Publish("", b"b", 1, packet_id=2, properties=Properties(topic_alias=alias)))
    assert peer.received() == [Disconnect(reason)]


def test_v5_receive_maximum_exceeded_disconnects() -> None:
    peer = Peer(MQTT_5, config=SessionConfig(receive_maximum=2))
    peer.connect()
    peer.telemetry(1, 2)
    peer.send(Publish(TELEMETRY, b"x", 1, packet_id=3))
    assert peer.received() == [Disconnect(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)]


def test_receive_maximum_counts_only_unacked_publishes() -> None:
    peer = Peer(MQTT_5, config=SessionConfig(receive_maximum=2))
    peer.connect()
    peer.session.ack(peer.telemetry(1, 2).token)
    peer.session.ack(peer.telemetry(3, 4).token)
    assert not peer.closed
    assert peer.session.unacked_inbound == 0


def test_v5_retain_is_not_available() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    peer.send(Publish(TELEMETRY, b"x", 1, retain=True, packet_id=1))
    assert peer.received() == [Disconnect(ReasonCode.RETAIN_NOT_SUPPORTED)]


def test_qos2_is_stored_once_and_completed() -> None:
    peer = Peer()
    peer.connect()
    event = peer.telemetry(7, qos=2)
    resend = peer.send(Publish(TELEMETRY, b"again", 2, dup=True, packet_id=7))
    assert resend == []  # a resend before PUBREL is not stored twice
    peer.session.ack(event.token)
    assert peer.received() == [PubRec(7), PubRec(7)]
    peer.send(PubRel(7))
    assert peer.received() == [PubComp(7)]


def test_pubrel_for_an_unknown_id_reports_not_found_in_v5() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    peer.send(PubRel(9))
    assert peer.received() == [PubComp(9, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)]


# --- subscriptions and delivery ----------------------------------------------------------------


@both_versions
def test_subscribing_to_own_inputs_is_granted_and_starts_delivery(version: int) -> None:
    peer = Peer(version)
    peer.connect()
    events = peer.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    assert peer.received() == [SubAck(1, (1,))]
    assert events == [DeliveryChanged(True)]


def test_device_subscribes_to_devicebound() -> None:
    peer = Peer()
    peer.connect(DEVICE.id)
    peer.send(Subscribe(1, (Subscription("devices/sensor1/messages/devicebound/#", 2),)))
    assert peer.received() == [SubAck(1, (1,))]  # QoS 2 requested, 1 granted


@pytest.mark.parametrize(
    ("version", "topic_filter", "code"),
    [
        (MQTT_311, "devices/edge/modules/other/inputs/#", 0x80),
        (MQTT_5, "devices/edge/modules/other/inputs/#", ReasonCode.NOT_AUTHORIZED),
        (MQTT_5, "$iothub/edge/other/twin/res/#", ReasonCode.NOT_AUTHORIZED),  # another module's twin
        (MQTT_5, "$iothub/twin/other/#", ReasonCode.NOT_AUTHORIZED),
        (MQTT_5, "a/#/b", ReasonCode.TOPIC_FILTER_INVALID),
        (MQTT_5, "$share/g/" + INPUTS, ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED),
    ],
)
def test_other_subscriptions_are_refused(version: int, topic_filter: str, code: int) -> None:
    peer = Peer(version)
    peer.connect()
    events = peer.send(Subscribe(1, (Subscription(topic_filter, 1),)))
    assert peer.received() == [SubAck(1, (code,))]
    assert events == []


def test_unsubscribing_the_last_delivery_filter_stops_delivery() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    peer.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    peer.received()
    events = peer.send(Unsubscribe(2, (INPUTS, "never/subscribed")))
    assert peer.received() == [UnsubAck(2, (0, ReasonCode.NO_SUBSCRIPTION_EXISTED))]
    assert events == [DeliveryChanged(False)]


@both_versions
def test_outbound_publish_is_acked_by_the_client(version: int) -> None:
    peer = Peer(version)
    peer.connect()
    topic = "devices/edge/modules/filter/inputs/in1/"
    packet_id = peer.session.publish(topic, b"hello")
    assert peer.received() == [Publish(topic, b"hello", 1, packet_id=packet_id)]
    assert peer.send(PubAck(packet_id)) == [PublishAcked(packet_id)]
    assert peer.session.inflight == 0


def test_outbound_window_honors_the_client_receive_maximum() -> None:
    peer = Peer(MQTT_5)
    peer.connect(properties=Properties(receive_maximum=2))
    assert peer.session.publish_window == 2
    peer.session.publish("t/1", b"")
    peer.session.publish("t/2", b"")
    assert peer.session.publish_window == 0
    with pytest.raises(RuntimeError):
        peer.session.publish("t/3", b"")


def test_outbound_message_above_client_maximum_packet_size_is_discarded() -> None:
    peer = Peer(MQTT_5)
    peer.connect(properties=Properties(maximum_packet_size=50))
    assert peer.session.publish("t", b"x" * 100) == 0
    assert peer.received() == []
    assert peer.session.inflight == 0


def test_packet_ids_skip_those_in_flight() -> None:
    peer = Peer()
    peer.connect()
    ids = {peer.session.publish("t", b"") for _ in range(200)}
    assert len(ids) == 200
    assert 0 not in ids


# --- persistent sessions, takeover, will -------------------------------------------------------


def test_persistent_311_session_keeps_subscriptions_across_reconnects() -> None:
    table = SessionTable()
    first = Peer(table=table)
    first.connect(clean=False)
    first.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    first.session.connection_lost(10.0)
    again = Peer(table=table)
    [connack] = again.connect(clean=False)
    assert connack == ConnAck(True, 0)
    assert DeliveryChanged(True) in again.events


def test_clean_session_discards_the_stored_subscriptions() -> None:
    table = SessionTable()
    first = Peer(table=table)
    first.connect(clean=False)
    first.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    first.session.connection_lost(10.0)
    again = Peer(table=table)
    assert again.connect(clean=True) == [ConnAck(False, 0)]
    state = table.get(MODULE.id)
    assert state is not None
    assert state.subscriptions == {}


def test_v5_session_without_expiry_ends_with_the_connection() -> None:
    table = SessionTable()
    peer = Peer(MQTT_5, table=table)
    peer.connect(clean=False)
    peer.session.connection_lost(1.0)
    assert table.get(MODULE.id) is None


def test_v5_session_expires_after_its_interval() -> None:
    table = SessionTable()
    peer = Peer(MQTT_5, table=table)
    peer.connect(clean=False, properties=Properties(session_expiry_interval=60))
    peer.session.connection_lost(100.0)
    assert table.expire(159.0) == 0
    assert table.expire(160.0) == 1
    assert table.get(MODULE.id) is None


def test_second_connection_with_the_same_client_id_takes_over() -> None:
    table = SessionTable()
    first = Peer(MQTT_5, table=table)
    first.connect()
    second = Peer(MQTT_5, table=table)
    second.connect()
    [connected] = [e for e in second.events if isinstance(e, Connected)]
    assert connected.displaced is first.session
    events = first.session.take_over()
    assert first.received() == [Disconnect(ReasonCode.SESSION_TAKEN_OVER)]
    assert isinstance(events[-1], Closed)
    assert table.connected == 1  # the old connection's close does not release the new owner


@both_versions
def test_will_is_published_when_the_connection_drops(version: int) -> None:
    peer = Peer(version)
    peer.connect(will=Will(TELEMETRY + "kind=will", b"gone"))
    events = peer.session.connection_lost(5.0)
    [will] = [e for e in events if isinstance(e, WillReady)]
    assert will.message == Message(b"gone", {"kind": "will"},
                                   {"connectionDeviceId": "edge", "connectionModuleId": "filter"})


def test_normal_disconnect_discards_the_will() -> None:
    peer = Peer()
    peer.connect(will=Will(TELEMETRY, b"gone"))
    events = peer.send(Disconnect())
    assert not any(isinstance(e, WillReady) for e in events)
    assert peer.session.connection_lost(1.0) == []


def test_v5_disconnect_with_will_message_publishes_it() -> None:
    peer = Peer(MQTT_5)
    peer.connect(will=Will(TELEMETRY, b"gone"))
    events = peer.send(Disconnect(ReasonCode.DISCONNECT_WITH_WILL))
    assert any(isinstance(e, WillReady) for e in events)


def test_will_on_a_foreign_topic_is_ignored() -> None:
    peer = Peer()
    peer.connect(will=Will("devices/other/messages/events/", b"x"))
    assert not any(isinstance(e, WillReady) for e in peer.session.connection_lost(1.0))


def test_v5_disconnect_cannot_make_a_session_persistent() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    peer.send(Disconnect(properties=Properties(session_expiry_interval=30)))
    assert peer.received() == [Disconnect(ReasonCode.PROTOCOL_ERROR)]


# --- a child edge hub (nested IoT Edge) ----------------------------------------------------------

CHILD_HUB = Identity("child", "$edgeHub")


def test_child_edge_hub_publishes_for_its_children_with_their_connection_ids() -> None:
    peer = Peer(MQTT_5)
    peer.connect(CHILD_HUB.id)
    events = peer.send(
        Publish("devices/leaf1/messages/events/%24.mid=m1&%24.cdid=spoof&k=v", b"a", 1, packet_id=1),
        Publish("devices/child/modules/filter/messages/events/%24.on=out1", b"b", 1, packet_id=2),
    )
    [received] = [e for e in events if isinstance(e, TelemetryReceived)]
    assert received.messages == [
        Message(b"a", {"k": "v"}, {"messageId": "m1", "connectionDeviceId": "leaf1"}),
        Message(b"b", {}, {
            "outputName": "out1", "connectionDeviceId": "child", "connectionModuleId": "filter",
        }),
    ]


def test_child_edge_hub_subscriptions_to_its_childrens_topics_are_granted() -> None:
    peer = Peer(MQTT_5)
    peer.connect(CHILD_HUB.id)
    events = peer.send(Subscribe(1, (
        Subscription("devices/+/messages/devicebound/#", 1),
        Subscription("devices/child/modules/+/inputs/#", 1),
        Subscription("devices/+/messages/events/#", 1),
    )))
    assert peer.received() == [SubAck(1, (1, 1, ReasonCode.NOT_AUTHORIZED))]
    assert events == [DeliveryChanged(True)]  # its own inputs are under devices/child/modules/+/inputs
    assert peer.session.accepts("devices/child/modules/%24edgeHub/inputs/in1/")


def test_child_edge_hub_devicebound_filter_alone_delivers_nothing_here() -> None:
    peer = Peer(MQTT_5)
    peer.connect(CHILD_HUB.id)
    events = peer.send(Subscribe(1, (Subscription("devices/+/messages/devicebound/#", 1),)))
    assert peer.received() == [SubAck(1, (1,))]
    assert events == []


def test_a_module_cannot_subscribe_to_other_devices_devicebound() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    peer.send(Subscribe(1, (Subscription("devices/+/messages/devicebound/#", 1),)))
    assert peer.received() == [SubAck(1, (ReasonCode.NOT_AUTHORIZED,))]
