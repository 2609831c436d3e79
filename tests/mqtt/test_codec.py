"""Tests of edgehub.mqtt.encode, decode and wire together: round trips, incremental decoding, refusals."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub.errors import ProtocolError
from edgehub.mqtt.decode import Decoder, decode_all
from edgehub.mqtt.encode import concat, encode, encode_pubacks, encode_publish, encode_pubrecs
from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    Properties,
    PubAck,
    Publish,
    PubRec,
    ReasonCode,
    Subscribe,
    Subscription,
    UnsubAck,
)
from edgehub.mqtt.wire import (
    MalformedPacketError,
    MqttError,
    PacketTooLargeError,
    ProtocolViolationError,
    UnsupportedProtocolVersionError,
    encode_varint,
)
from tests.mqtt.strategies import packets

versions = pytest.mark.parametrize("version", [MQTT_311, MQTT_5])


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_packet_survives_encode_then_decode(version: int, data: st.DataObject) -> None:
    packet = data.draw(packets(version))
    assert decode_all(encode(packet, version), version) == [packet]


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_splitting_a_stream_anywhere_yields_the_same_packets(version: int, data: st.DataObject) -> None:
    sent = data.draw(st.lists(packets(version), min_size=1, max_size=8))
    stream = concat(sent, version)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = Decoder(version=version)
    received: list[Packet] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        received.extend(decoder.feed(stream[start:cut]))
        start = cut
    assert received == sent
    assert decoder.buffered == 0


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
@settings(max_examples=500, deadline=None)
@given(junk=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_the_codec_error(version: int, junk: bytes) -> None:
    decoder = Decoder(max_packet_size=1000, version=version)
    with contextlib.suppress(MqttError):  # anything else escapes and fails the test
        decoder.feed(junk)


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_corrupted_packets_raise_only_the_codec_error(version: int, data: st.DataObject) -> None:
    wire = bytearray(encode(data.draw(packets(version)), version))
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(MqttError):  # anything else escapes and fails the test
        Decoder(version=version).feed(bytes(wire))


def test_publish_matches_the_spec_layout() -> None:
    wire = encode_publish("a/b", b"hi", qos=1, packet_id=10)
    assert wire == b"\x32\x09\x00\x03a/b\x00\x0ahi"
    v5 = encode_publish("a/b", b"hi", qos=1, packet_id=10, version=MQTT_5)
    assert v5 == b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi"


def test_connect_bytes_of_a_311_client_decode() -> None:
    # CONNECT "MQTT" level 4, clean session, keep alive 60, client id "d1", user "u", password "p".
    wire = bytes.fromhex("101500044d51545404c2003c000264310001750001") + b"p"
    wire = bytes((wire[0], len(wire) - 2)) + wire[2:]
    [packet] = decode_all(wire)
    assert packet == Connect(MQTT_311, "d1", True, 60, "u", b"p")


def test_decoding_a_v5_connect_switches_the_decoder_to_v5() -> None:
    decoder = Decoder()
    connect = encode(Connect(MQTT_5, "c"), MQTT_5)
    ack = encode(PubAck(7, ReasonCode.QUOTA_EXCEEDED), MQTT_5)
    assert decoder.feed(connect + ack) == [Connect(MQTT_5, "c"), PubAck(7, ReasonCode.QUOTA_EXCEEDED)]
    assert decoder.version == MQTT_5


def test_codec_errors_are_hub_protocol_errors() -> None:
    assert issubclass(MqttError, ProtocolError)


def test_oversize_packet_is_refused_from_its_header_alone() -> None:
    decoder = Decoder(max_packet_size=100)
    header = b"\x30" + encode_varint(1000)
    with pytest.raises(PacketTooLargeError) as caught:
        decoder.feed(header)
    assert caught.value.reason_code == ReasonCode.PACKET_TOO_LARGE
    assert caught.value.size == 1000 + len(header)


def test_packet_exactly_at_the_limit_is_accepted() -> None:
    wire = encode_publish("t", b"x" * 50)
    assert Decoder(max_packet_size=len(wire)).feed(wire) == [Publish("t", b"x" * 50)]
    with pytest.raises(PacketTooLargeError):
        Decoder(max_packet_size=len(wire) - 1).feed(wire)


def test_large_packet_in_many_chunks_is_decoded_once_complete() -> None:
    wire = encode_publish("big", b"z" * 200_000, qos=1, packet_id=3)
    decoder = Decoder()
    chunks = [wire[i : i + 65536] for i in range(0, len(wire), 65536)]
    results = [decoder.feed(chunk) for chunk in chunks]
    assert results[:-1] == [[]] * (len(chunks) - 1)
    assert results[-1] == [Publish("big", b"z" * 200_000, 1, packet_id=3)]


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x36\x05\x00\x01t\x00\x01", ReasonCode.MALFORMED_PACKET),  # QoS 3 [MQTT-3.3.1-4]
        (b"\x38\x03\x00\x01t", ReasonCode.MALFORMED_PACKET),  # DUP on QoS 0 [MQTT-3.3.1-2]
        (b"\x32\x05\x00\x01t\x00\x00", ReasonCode.MALFORMED_PACKET),  # packet id 0 [MQTT-2.3.1-1]
        (b"\x30\x03\x00\x01#", ReasonCode.TOPIC_NAME_INVALID),  # wildcard [MQTT-3.3.2-2]
        (b"\x30\x04\x00\x02\xc3\x28", ReasonCode.MALFORMED_PACKET),  # ill-formed UTF-8
        (b"\x30\x03\x00\x01\x00", ReasonCode.MALFORMED_PACKET),  # U+0000 in a string
        (b"\x30\x80\x80\x80\x80\x01", ReasonCode.MALFORMED_PACKET),  # 5-byte remaining length
        (b"\x80\x03\x00\x01\x00", ReasonCode.MALFORMED_PACKET),  # SUBSCRIBE flags not 0010
        (b"\x00\x00", ReasonCode.MALFORMED_PACKET),  # reserved packet type 0
        (b"\xc0\x01\x00", ReasonCode.MALFORMED_PACKET),  # PINGREQ with a body
        (b"\x82\x02\x00\x01", ReasonCode.PROTOCOL_ERROR),  # SUBSCRIBE without a filter
        (b"\xf0\x00", ReasonCode.MALFORMED_PACKET),  # AUTH in MQTT 3.1.1
    ],
)
def test_malformed_311_input_carries_its_reason_code(wire: bytes, reason: int) -> None:
    with pytest.raises(MqttError) as caught:
        Decoder().feed(wire)
    assert caught.value.reason_code == reason


@pytest.mark.parametrize(
    ("head", "props", "error"),
    [
        (b"\x20\x00\x00", b"\x03\x21\x00\x00", ProtocolViolationError),  # CONNACK Receive Maximum 0
        (b"\x20\x00\x00", b"\x02\x24\x02", ProtocolViolationError),  # Maximum QoS must be 0 or 1
        (b"\x40\x00\x07\x80", b"\x02\x24\x00", MalformedPacketError),  # not a PUBACK property (§2.2.2.2)
        (b"\x40\x00\x07\x80", b"\x06\x1f\x00\x00\x1f\x00\x00", ProtocolViolationError),  # twice
        (b"\x40\x00\x07\x80", b"\x05\x1f\x00\x09ab", MalformedPacketError),  # string past the end
    ],
)
def test_bad_v5_properties_are_refused(head: bytes, props: bytes, error: type[MqttError]) -> None:
    body = head[1:] + props
    with pytest.raises(error):
        Decoder(version=MQTT_5).feed(bytes((head[0], len(body))) + body)


def test_unknown_protocol_level_is_an_unsupported_version() -> None:
    wire = encode(Connect(MQTT_311, "x"))
    wire = wire.replace(b"MQTT\x04", b"MQTT\x06")
    with pytest.raises(UnsupportedProtocolVersionError) as caught:
        Decoder().feed(wire)
    assert caught.value.level == 6


def test_mqtt_31_connect_decodes_as_level_3() -> None:
    wire = bytes.fromhex("100f00064d514973647003020000000161")
    wire = bytes((wire[0], len(wire) - 2)) + wire[2:]
    [packet] = decode_all(wire)
    assert isinstance(packet, Connect)
    assert (packet.protocol_name, packet.protocol_level, packet.client_id) == ("MQIsdp", 3, "a")


def test_311_password_without_user_name_is_malformed() -> None:
    wire = bytearray(encode(Connect(MQTT_311, "x", password=b"p", username="u")))
    wire[9] &= 0x7F  # drop the user name flag, keep the password flag
    with pytest.raises(MalformedPacketError):
        Decoder().feed(bytes(wire))


def test_batched_pubacks_equal_single_encodings() -> None:
    ids = [1, 255, 256, 65535]
    assert encode_pubacks(ids) == b"".join(encode(PubAck(i)) for i in ids)
    assert encode_pubrecs(ids) == b"".join(encode(PubRec(i)) for i in ids)


@versions
def test_success_acks_use_the_two_byte_form(version: int) -> None:
    assert encode(PubAck(5), version) == b"\x40\x02\x00\x05"


def test_v5_ack_with_reason_and_no_properties_omits_property_length() -> None:
    assert encode(PubAck(5, ReasonCode.NOT_AUTHORIZED), MQTT_5) == b"\x40\x03\x00\x05\x87"


def test_311_encoding_drops_v5_only_fields() -> None:
    props = Properties(reason_string="no")
    assert encode(ConnAck(False, 5, props), MQTT_311) == b"\x20\x02\x00\x05"
    assert encode(Disconnect(ReasonCode.PACKET_TOO_LARGE, props), MQTT_311) == b"\xe0\x00"
    assert encode(UnsubAck(9, (0x11,)), MQTT_311) == b"\xb0\x02\x00\x09"


def test_properties_keep_user_property_order_and_repeats() -> None:
    props = Properties(user_properties=(("k", "2"), ("a", "1"), ("k", "3")), content_type="json")
    packet = Publish("t", b"", properties=props)
    assert decode_all(encode(packet, MQTT_5), MQTT_5) == [packet]


def test_subscribe_options_round_trip_in_v5() -> None:
    packet = Subscribe(1, (Subscription("a/#", 1, True, True, 2),), Properties(subscription_identifiers=(9,)))
    assert decode_all(encode(packet, MQTT_5), MQTT_5) == [packet]


def test_empty_properties_decode_to_the_shared_object() -> None:
    [packet] = decode_all(encode(PubAck(1, 0x10), MQTT_5) + b"", MQTT_5)
    assert isinstance(packet, PubAck)
    assert packet.properties is NO_PROPERTIES


def test_data_ending_inside_a_packet_is_reported_by_decode_all() -> None:
    with pytest.raises(MalformedPacketError):
        decode_all(encode(PingReq())[:1])
