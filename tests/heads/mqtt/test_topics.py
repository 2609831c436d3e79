"""Tests of edgehub.heads.mqtt.topics: who a client's telemetry is from, topic filters, delivery filters."""

from __future__ import annotations

import pytest

from edgehub.heads.mqtt.topics import (
    DeliveryFilter,
    TelemetryParser,
    delivery_filter,
    filter_matches,
    is_valid_filter,
)
from edgehub.iothub.topics import delivery_topic
from edgehub.message import Identity, Message

MODULE = Identity("edge", "filter")
DEVICE = Identity("sensor1")
CHILD_HUB = Identity("child", "$edgeHub")


def test_parser_stamps_the_identity_and_refuses_other_senders() -> None:
    parser = TelemetryParser(MODULE)
    message = parser.message("devices/edge/modules/filter/messages/events/%24.on=out1", b"x")
    assert message == Message(b"x", {}, {
        "outputName": "out1", "connectionDeviceId": "edge", "connectionModuleId": "filter",
    })
    assert parser.message("devices/edge/messages/events/", b"x") is None
    assert parser.message("devices/other/modules/filter/messages/events/", b"x") is None


def test_parser_ignores_connection_ids_a_client_writes_in_its_bag() -> None:
    parser = TelemetryParser(DEVICE)
    message = parser.message("devices/sensor1/messages/events/%24.cdid=evil&%24.cmid=evil&k=v", b"x")
    assert message == Message(b"x", {"k": "v"}, {"connectionDeviceId": "sensor1"})


def test_parser_accepts_the_identitys_ids_percent_encoded_or_raw() -> None:
    odd = Identity("dev:1", "m$")
    parser = TelemetryParser(odd)
    for topic in ("devices/dev%3A1/modules/m%24/messages/events/",  # azure-iot-device
                  "devices/dev:1/modules/m$/messages/events/"):  # .NET and C SDKs
        message = parser.message(topic, b"x")
        assert message is not None
        assert message.source == odd


def test_child_edge_hub_sends_for_the_devices_and_modules_below_it() -> None:
    parser = TelemetryParser(CHILD_HUB)
    leaf = parser.message("devices/leaf1/messages/events/%24.mid=7&k=v", b"a")
    module = parser.message("devices/child/modules/filter/messages/events/%24.on=out1", b"b")
    own = parser.message("devices/child/modules/%24edgeHub/messages/events/", b"c")
    assert leaf == Message(b"a", {"k": "v"}, {"messageId": "7", "connectionDeviceId": "leaf1"})
    assert module is not None
    assert module.source == Identity("child", "filter")
    assert module.system_properties["outputName"] == "out1"
    assert own is not None
    assert own.source == CHILD_HUB


def test_child_edge_hub_messages_name_the_topics_sender_not_the_bags() -> None:
    parser = TelemetryParser(CHILD_HUB)
    message = parser.message("devices/leaf1/messages/events/%24.cdid=other&%24.cmid=m", b"x")
    assert message is not None
    assert message.source == Identity("leaf1")


def test_child_edge_hub_still_needs_a_telemetry_topic_and_the_policy() -> None:
    parser = TelemetryParser(CHILD_HUB, allowed=lambda topic: "blocked" not in topic)
    assert parser.message("devices/leaf1/messages/devicebound/", b"x") is None
    assert parser.message("devices/blocked/messages/events/", b"x") is None


def test_a_module_named_like_a_hub_on_another_id_does_not_act_for_others() -> None:
    parser = TelemetryParser(Identity("child", "edgeHub"))
    assert parser.message("devices/leaf1/messages/events/", b"x") is None


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
        (CHILD_HUB, "devices/child/modules/+/inputs/#", True),
        (CHILD_HUB, "devices/child/modules/%24edgeHub/inputs/#", True),
        (CHILD_HUB, "devices/+/messages/devicebound/#", False),
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
