"""Tests of edgehub.heads.mqtt.topics: the IoT Hub telemetry / delivery topic scheme and topic filters."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.heads.mqtt.topics import (
    DeliveryFilter,
    TelemetryParser,
    delivery_filter,
    delivery_topic,
    encode_property_bag,
    filter_matches,
    is_valid_filter,
    parse_property_bag,
    parse_telemetry_topic,
)
from edgehub.message import Identity, Message

MODULE = Identity("edge", "filter")
DEVICE = Identity("sensor1")


def test_device_topic_without_bag() -> None:
    parsed = parse_telemetry_topic("devices/sensor1/messages/events/")
    assert parsed is not None
    assert (parsed.device_id, parsed.module_id) == ("sensor1", None)
    assert parsed.properties == {}
    assert parsed.system_properties == {}


def test_device_topic_without_trailing_slash() -> None:
    parsed = parse_telemetry_topic("devices/sensor1/messages/events")
    assert parsed is not None
    assert parsed.device_id == "sensor1"


def test_module_topic_with_system_and_application_properties() -> None:
    topic = (
        "devices/edge/modules/filter/messages/events/"
        "%24.mid=42&%24.cid=c1&%24.uid=u&%24.to=%2Fdevices%2Fx&%24.ct=application%2Fjson&%24.ce=utf-8"
        "&%24.on=alerts&%24.ctime=2024-01-01T00%3A00%3A00Z&%24.schema=s1&%24.exp=2030-01-01"
        "&temp=21.5&a%20b=c+d"
    )
    parsed = parse_telemetry_topic(topic)
    assert parsed is not None
    assert (parsed.device_id, parsed.module_id) == ("edge", "filter")
    assert parsed.system_properties == {
        "messageId": "42", "correlationId": "c1", "userId": "u", "to": "/devices/x",
        "contentType": "application/json", "contentEncoding": "utf-8", "outputName": "alerts",
        "creationTime": "2024-01-01T00:00:00Z", "messageSchema": "s1", "absolute-expiry-time": "2030-01-01",
    }
    assert parsed.properties == {"temp": "21.5", "a b": "c+d"}  # '+' is not a space (quote, not quote_plus)


def test_bag_with_unencoded_dollar_keys_and_question_mark() -> None:
    app, system = parse_property_bag("?$.ct=text&x=1")
    assert (app, system) == ({"x": "1"}, {"contentType": "text"})


def test_connection_ids_in_the_bag_are_ignored() -> None:
    app, system = parse_property_bag("%24.cdid=evil&%24.cmid=evil&k=v")
    assert (app, system) == ({"k": "v"}, {})


def test_valueless_keys() -> None:
    app, system = parse_property_bag("%24.mid&flag&&k=")
    assert (app, system) == ({"flag": "", "k": ""}, {})


@pytest.mark.parametrize(
    "topic",
    [
        "devices/sensor1/messages/devicebound/",
        "devices//messages/events/",
        "devices/edge/modules//messages/events/",
        "devices/edge/modules/filter/inputs/x/",
        "$iothub/twin/PATCH/properties/reported/?$rid=1",
        "telemetry/sensor1",
    ],
)
def test_other_topics_are_not_telemetry(topic: str) -> None:
    assert parse_telemetry_topic(topic) is None


def test_url_encoded_device_id_is_decoded() -> None:
    parsed = parse_telemetry_topic("devices/dev%23one/messages/events/")
    assert parsed is not None
    assert parsed.device_id == "dev#one"


def test_parser_stamps_the_identity_and_refuses_other_senders() -> None:
    parser = TelemetryParser(MODULE)
    message = parser.message("devices/edge/modules/filter/messages/events/%24.on=out1", b"x")
    assert message == Message(b"x", {}, {
        "outputName": "out1", "connectionDeviceId": "edge", "connectionModuleId": "filter",
    })
    assert parser.message("devices/edge/messages/events/", b"x") is None
    assert parser.message("devices/other/modules/filter/messages/events/", b"x") is None


def test_parser_shares_property_mappings_for_a_repeated_topic() -> None:
    parser = TelemetryParser(DEVICE)
    first = parser.message("devices/sensor1/messages/events/", b"1")
    second = parser.message("devices/sensor1/messages/events/", b"2")
    assert first is not None
    assert second is not None
    assert first.system_properties is second.system_properties


def test_parser_cache_stays_bounded_under_unique_bags() -> None:
    parser = TelemetryParser(DEVICE, max_entries=8)
    for i in range(100):
        assert parser.message(f"devices/sensor1/messages/events/%24.mid={i}", b"") is not None
    assert parser.cached_topics <= 8


def test_delivery_topics_carry_properties_back() -> None:
    message = Message(b"x", {"alert": "high temp"}, {
        "messageId": "m1", "contentType": "application/json", "connectionDeviceId": "sensor1",
        "connectionModuleId": "reader", "outputName": "out",
    })
    topic = delivery_topic(MODULE, "input1", message)
    assert topic == (
        "devices/edge/modules/filter/inputs/input1/"
        "%24.mid=m1&%24.ct=application%2Fjson&%24.cdid=sensor1&%24.cmid=reader&alert=high%20temp"
    )
    assert delivery_topic(DEVICE, None, Message(b"")) == "devices/sensor1/messages/devicebound/"


@given(
    st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: not k.startswith("$.")),
                    st.text(max_size=8), max_size=4),
    st.text(max_size=8),
)
def test_property_bag_round_trips(app: dict[str, str], message_id: str) -> None:
    message = Message(b"", app, {"messageId": message_id} if message_id else {})
    parsed_app, parsed_system = parse_property_bag(encode_property_bag(message))
    assert parsed_app == app
    assert parsed_system == ({"messageId": message_id} if message_id else {})


@pytest.mark.parametrize(
    ("topic_filter", "valid"),
    [("a/b", True), ("a/+/c", True), ("#", True), ("a/#", True), ("+", True), ("/", True),
     ("", False), ("a/#/b", False), ("a#", False), ("a/b+", False)],
)
def test_filter_validity(topic_filter: str, valid: bool) -> None:
    assert is_valid_filter(topic_filter) is valid


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),  # '#' also matches the parent level (MQTT 5 §4.7.1.2)
        ("a/#", "a/b/c", True),
        ("+/+", "a/b", True),
        ("+", "a/b", False),
        ("#", "$SYS/x", False),  # [MQTT-4.7.2-1]
        ("$SYS/#", "$SYS/x", True),
    ],
)
def test_filter_matching(topic_filter: str, topic: str, matches: bool) -> None:
    assert filter_matches(topic_filter, topic) is matches
    assert DeliveryFilter(topic_filter).matches(topic) is matches


@pytest.mark.parametrize(
    ("identity", "topic_filter", "delivers"),
    [
        (MODULE, "devices/edge/modules/filter/inputs/#", True),
        (MODULE, "devices/edge/modules/filter/inputs/in1/#", True),
        (MODULE, "devices/edge/modules/filter/#", True),
        (MODULE, "devices/edge/modules/+/inputs/#", True),
        (MODULE, "devices/edge/modules/other/inputs/#", False),
        (MODULE, "devices/edge/messages/devicebound/#", False),
        (DEVICE, "devices/sensor1/messages/devicebound/#", True),
        (DEVICE, "devices/sensor2/messages/devicebound/#", False),
        (DEVICE, "devices/sensor1/messages/events/#", False),
        (DEVICE, "$iothub/methods/POST/#", False),
    ],
)
def test_delivery_filter_selects_only_own_delivery_topics(
    identity: Identity, topic_filter: str, delivers: bool,
) -> None:
    assert (delivery_filter(identity, topic_filter) is not None) is delivers


def test_delivery_filter_for_one_input_matches_only_it() -> None:
    only_in1 = delivery_filter(MODULE, "devices/edge/modules/filter/inputs/in1/#")
    assert only_in1 is not None
    assert only_in1.matches(delivery_topic(MODULE, "in1", Message(b"")))
    assert not only_in1.matches(delivery_topic(MODULE, "in2", Message(b"")))


def test_quoted_ids_in_delivery_topics() -> None:
    odd = Identity("dev/1", "m#")
    expected = f"devices/{quote('dev/1', safe='')}/modules/m%23/inputs/in/"
    assert delivery_topic(odd, "in", Message(b"")) == expected
