"""Tests of edgehub.mqtt.client: the sans-I/O MQTT client session, driven with bytes and ``now``, against a
scripted server and against the hub's own server session (heads/mqtt/session.py), the same rules both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.errors import AuthError
from edgehub.heads.mqtt.events import Closed, PublishAcked, TelemetryReceived
from edgehub.heads.mqtt.policy import ConnectRequest
from edgehub.heads.mqtt.session import MqttSession
from edgehub.heads.mqtt.sessions import SessionTable
from edgehub.message import Identity
from edgehub.mqtt.client import (
    KEEP_ALIVE_TIMEOUT,
    ClientEvent,
    ClientPhase,
    ConnectionAccepted,
    ConnectionRefused,
    MessageReceived,
    MqttClientSession,
    PublishesAcked,
    SessionClosed,
    Subscribed,
)
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode, encode_pubacks
from edgehub.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from edgehub.mqtt.session_rules import PacketIdsExhaustedError

TOPIC = "devices/sensor1/messages/events/"


def sent(session: MqttClientSession, now: float = 0.0) -> list[Packet]:
    """What the client queued, decoded as a server decodes it."""
    return Decoder().feed(session.data_to_send(now))


def connected(keep_alive: int = 0) -> MqttClientSession:
    session = MqttClientSession("sensor1", username="hub/sensor1/?api-version=2021-04-12", password=b"sas",
                                keep_alive=keep_alive)
    session.connect(0.0)
    session.data_to_send(0.0)
    assert session.receive_data(encode(ConnAck(False, 0)), 0.0) == [ConnectionAccepted(False)]
    return session


def test_connect_carries_the_client_id_credentials_keep_alive_and_a_persistent_session() -> None:
    session = MqttClientSession("edge/$edgeHub", username="u", password=b"p", keep_alive=30)
    session.connect(0.0)
    [connect] = sent(session)
    assert connect == Connect(4, "edge/$edgeHub", clean_start=False, keep_alive=30, username="u",
                              password=b"p")
    assert session.phase is ClientPhase.AWAITING_CONNACK


@pytest.mark.parametrize(("code", "credentials"), [(1, False), (2, False), (3, False), (4, True), (5, True)])
def test_a_refusing_connack_closes_and_says_whether_the_credentials_were_refused(
    code: int, credentials: bool
) -> None:
    session = MqttClientSession("d")
    session.connect(0.0)
    assert session.receive_data(encode(ConnAck(False, code)), 0.0) == [ConnectionRefused(code, credentials)]
    assert session.closed


@pytest.mark.parametrize("first", [PubAck(1), PingResp(), SubAck(1, (1,)), Publish("t", b"x", 0)])
def test_anything_but_connack_first_is_a_protocol_error(first: Packet) -> None:
    session = MqttClientSession("d")
    session.connect(0.0)
    [event] = session.receive_data(encode(first), 0.0)
    assert isinstance(event, SessionClosed)
    assert event.reason.startswith("protocol error")
    assert "before CONNACK" in event.reason


def test_a_second_connack_is_a_protocol_error() -> None:
    session = connected()
    assert session.receive_data(encode(ConnAck(False, 0)), 1.0) == [
        SessionClosed("protocol error: a second CONNACK")
    ]


def test_publish_is_qos1_with_fresh_packet_ids_and_pubacks_settle_them_in_wire_order() -> None:
    session = connected()
    ids = [session.publish(TOPIC, b"%d" % n) for n in range(3)]
    assert ids == [1, 2, 3]
    assert [p.packet_id for p in sent(session) if isinstance(p, Publish)] == ids
    assert session.receive_data(encode_pubacks([2, 1]), 1.0) == [PublishesAcked([2, 1])]
    assert session.inflight == 1
    assert session.receive_data(encode_pubacks([2]), 1.0) == []  # already settled: ignored


@given(st.integers(min_value=1, max_value=15))
def test_pubacks_settle_however_the_bytes_are_split(cut: int) -> None:
    session = connected()
    for _ in range(4):
        session.publish(TOPIC, b"x")
    data = encode(PingResp()) + encode_pubacks([1, 2]) + encode(PingResp()) + encode_pubacks([3, 4])
    acked: list[int] = []
    for chunk in (data[:cut], data[cut:]):
        for event in session.receive_data(chunk, 1.0):
            assert isinstance(event, PublishesAcked)
            acked += event.packet_ids
    assert acked == [1, 2, 3, 4]


def test_packet_ids_wrap_and_skip_those_awaiting_a_puback_or_a_suback() -> None:
    session = connected()
    assert session.publish(TOPIC, b"a") == 1
    assert session.subscribe(["devices/sensor1/messages/devicebound/#"]) == 2
    session._next_id = 65_535  # near the end, without 65535 publishes
    assert [session.publish(TOPIC, b"b") for _ in range(2)] == [65_535, 3]


def test_when_every_packet_id_is_in_flight_publish_refuses() -> None:
    session = connected()
    session._inflight.update(range(1, 65_536))
    with pytest.raises(PacketIdsExhaustedError):
        session.publish(TOPIC, b"x")


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#"])
def test_a_topic_a_publish_cannot_carry_raises_value_error(topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        connected().publish(topic, b"x")


def test_subscribe_sends_qos1_filters_and_the_suback_reports_each_grant() -> None:
    session = connected()
    packet_id = session.subscribe(["a/#", "b/#"])
    assert sent(session) == [Subscribe(packet_id, (Subscription("a/#", 1), Subscription("b/#", 1)))]
    suback = encode(SubAck(packet_id, (1, 0x80)))
    assert session.receive_data(suback, 1.0) == [Subscribed(packet_id, (1, 0x80))]


def test_an_incoming_qos1_publish_is_acked_only_when_the_caller_says() -> None:
    session = connected()
    publish = encode(Publish("devices/d/messages/devicebound/", b"c2d", 1, packet_id=9))
    events = session.receive_data(publish, 1.0)
    assert events == [MessageReceived("devices/d/messages/devicebound/", b"c2d", 9, 1)]
    assert sent(session) == []
    session.ack(9)
    assert sent(session) == [PubAck(9)]


def test_a_qos2_publish_on_a_qos1_subscription_closes() -> None:
    session = connected()
    [event] = session.receive_data(encode(Publish("t", b"x", 2, packet_id=1)), 1.0)
    assert event == SessionClosed("protocol error: QoS 2 PUBLISH on a QoS 1 subscription")


def test_pubacks_before_a_protocol_error_in_the_same_read_still_settle() -> None:
    session = connected()
    session.publish(TOPIC, b"x")
    events = session.receive_data(encode_pubacks([1]) + encode(Subscribe(5, (Subscription("x", 0),))), 1.0)
    assert events[0] == PublishesAcked([1])
    assert isinstance(events[1], SessionClosed)


def test_malformed_bytes_close_with_a_protocol_error() -> None:
    session = connected()
    [event] = session.receive_data(b"\x00\x00", 1.0)
    assert isinstance(event, SessionClosed)
    assert event.reason.startswith("protocol error")


def test_keep_alive_pings_when_idle_and_gives_a_silent_server_up_after_one_and_a_half() -> None:
    session = connected(keep_alive=10)
    assert session.tick(7.0) == []
    assert sent(session, 7.0) == []
    assert session.tick(7.5) == []  # 0.75 x Keep Alive idle [MQTT-3.1.2-23]
    assert sent(session, 7.5) == [PingReq()]
    session.receive_data(encode(PingResp()), 8.0)
    assert session.tick(15.0) == []
    assert session.tick(23.0) == []
    assert session.tick(23.1) == [SessionClosed(KEEP_ALIVE_TIMEOUT)]  # 15.1 s > 1.5 x 10 s


def test_disconnect_is_sent_then_nothing_more() -> None:
    session = connected()
    session.disconnect()
    assert sent(session) == [Disconnect()]
    assert session.closed
    with pytest.raises(RuntimeError):
        session.publish(TOPIC, b"x")


# --- against the hub's own server session ------------------------------------------------------


def _authenticate(request: ConnectRequest) -> Identity:
    if request.password != b"secret":
        raise AuthError("bad SAS token")
    return Identity.parse(request.client_id)


def pump(
    client: MqttClientSession, server: MqttSession, now: float
) -> tuple[list[ClientEvent], list[object]]:
    """Move bytes both ways until neither side has any; every event of both."""
    client_events: list[ClientEvent] = []
    server_events: list[object] = []
    while True:
        up = client.data_to_send(now)
        if up:
            server_events += server.receive_data(up, now)
        down = server.data_to_send()
        if down:
            client_events += client.receive_data(down, now)
        if not up and not down:
            return client_events, server_events


def test_the_client_session_and_the_server_session_agree_on_connect_publish_and_acks() -> None:
    server = MqttSession(_authenticate, SessionTable(), 0.0)
    client = MqttClientSession("sensor1", username="hub/sensor1/?api-version=2021-04-12",
                               password=b"secret", keep_alive=30)
    client.connect(0.0)
    client_events, _ = pump(client, server, 0.0)
    assert client_events == [ConnectionAccepted(False)]
    ids = [client.publish(TOPIC, b"%d" % n) for n in range(3)]
    _, server_events = pump(client, server, 1.0)
    [received] = [e for e in server_events if isinstance(e, TelemetryReceived)]
    assert [m.body for m in received.messages] == [b"0", b"1", b"2"]
    server.ack(received.token)  # stored: the server PUBACKs
    client_events, _ = pump(client, server, 1.0)
    assert client_events == [PublishesAcked(ids)]
    # The server delivers at QoS 1 with its own packet ids; the client's PUBACK settles them.
    server.publish("devices/sensor1/messages/devicebound/", b"c2d")
    client_events, _ = pump(client, server, 2.0)
    [delivery] = client_events
    assert isinstance(delivery, MessageReceived)
    client.ack(delivery.packet_id)
    _, server_events = pump(client, server, 2.0)
    assert server_events == [PublishAcked(delivery.packet_id, 0)]


def test_the_server_s_refusal_of_bad_credentials_is_a_credential_refusal_for_the_client() -> None:
    server = MqttSession(_authenticate, SessionTable(), 0.0)
    client = MqttClientSession("sensor1", username="u", password=b"wrong")
    client.connect(0.0)
    client_events, server_events = pump(client, server, 0.0)
    assert client_events == [ConnectionRefused(5, True)]
    assert any(isinstance(e, Closed) for e in server_events)


def test_both_sessions_count_keep_alive_silence_the_same_way() -> None:
    server = MqttSession(_authenticate, SessionTable(), 0.0)
    client = MqttClientSession("sensor1", username="u", password=b"secret", keep_alive=10)
    client.connect(0.0)
    assert pump(client, server, 0.0)[0] == [ConnectionAccepted(False)]
    assert client.tick(15.0) == []
    assert not any(isinstance(e, Closed) for e in server.tick(15.0))
    assert client.tick(15.1) == [SessionClosed(KEEP_ALIVE_TIMEOUT)]
    assert any(isinstance(e, Closed) for e in server.tick(15.1))
