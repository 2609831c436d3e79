"""Tests of the upstream topic scheme: property bags, telemetry topics of the sender, downstream topics."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgehub.message import Identity, Message, SystemProperty
from edgehub.upstream.topics import (
    SYSTEM_NAMES,
    WIRE_NAMES,
    decode_property_bag,
    devicebound_filter,
    encode_property_bag,
    module_inputs_filter,
    parse_downstream,
    telemetry_topic,
)

EDGE = Identity("edge1", "$edgeHub")

# Keys that are not a system property's wire name once URL-decoded (those are system by definition).
application_keys = st.text(max_size=20).filter(lambda key: key not in SYSTEM_NAMES)
sendable_system = st.sampled_from(
    sorted(set(WIRE_NAMES) - {SystemProperty.CONNECTION_DEVICE_ID, SystemProperty.CONNECTION_MODULE_ID})
)


@given(
    properties=st.dictionaries(application_keys, st.text(max_size=20), max_size=6),
    system=st.dictionaries(sendable_system, st.text(max_size=20), max_size=6),
)
def test_property_bag_round_trips_any_text(properties: dict[str, str], system: dict[str, str]) -> None:
    bag = encode_property_bag(properties, system)
    assert "/" not in bag  # a bag is one topic level, whatever the values hold
    assert decode_property_bag(bag) == (properties, system)


def test_system_properties_use_iot_hub_wire_names_and_values_are_percent_encoded() -> None:
    bag = encode_property_bag(
        {"temp alert": "a&b=c"},
        {SystemProperty.CONTENT_TYPE: "application/json", SystemProperty.MESSAGE_ID: "m1"},
    )
    assert bag == "$.ct=application%2Fjson&$.mid=m1&temp%20alert=a%26b%3Dc"


def test_telemetry_of_a_device_goes_on_that_devices_events_topic() -> None:
    message = Message(
        b"{}",
        {"alert": "1"},
        {SystemProperty.CONNECTION_DEVICE_ID: "sensor1", SystemProperty.CONTENT_ENCODING: "utf-8"},
    )
    assert telemetry_topic(message, EDGE) == "devices/sensor1/messages/events/$.ce=utf-8&alert=1"


def test_telemetry_of_a_module_carries_its_output_name_on_the_modules_topic() -> None:
    message = Message(
        b"x",
        system_properties={
            SystemProperty.CONNECTION_DEVICE_ID: "edge1",
            SystemProperty.CONNECTION_MODULE_ID: "filter",
            SystemProperty.OUTPUT_NAME: "alerts",
        },
    )
    assert telemetry_topic(message, EDGE) == "devices/edge1/modules/filter/messages/events/$.on=alerts"


def test_telemetry_without_a_sender_goes_out_as_the_hub_itself_with_a_trailing_slash() -> None:
    assert telemetry_topic(Message(b"x"), EDGE) == "devices/edge1/modules/$edgeHub/messages/events/"


def test_devicebound_topic_maps_to_the_devices_local_queue_with_its_properties() -> None:
    parsed = parse_downstream(
        "devices/leaf1/messages/devicebound/%24.mid=42&%24.to=%2Fdevices%2Fleaf1&iothub-ack=full&k=v",
        b"c2d",
        "edge1",
    )
    assert parsed is not None
    assert parsed.endpoint == "/devices/leaf1/messages/devicebound"
    assert parsed.message == Message(
        b"c2d",
        {"iothub-ack": "full", "k": "v"},
        {SystemProperty.MESSAGE_ID: "42", SystemProperty.TO: "/devices/leaf1"},
    )


def test_module_input_topic_maps_to_the_local_modules_input_queue() -> None:
    parsed = parse_downstream("devices/edge1/modules/filter/inputs/input1/$.cdid=s1&a=b", b"m", "edge1")
    assert parsed is not None
    assert parsed.endpoint == "/modules/filter/inputs/input1"
    assert parsed.message.properties == {"a": "b"}
    assert parsed.message.system_properties == {SystemProperty.CONNECTION_DEVICE_ID: "s1"}


def test_devicebound_topic_without_a_bag_has_no_properties() -> None:
    parsed = parse_downstream("devices/leaf1/messages/devicebound", b"", "edge1")
    assert parsed is not None
    assert parsed.message == Message(b"")


def test_inputs_of_another_edge_devices_module_are_not_ours() -> None:
    assert parse_downstream("devices/other/modules/filter/inputs/input1/", b"m", "edge1") is None


def test_topics_outside_the_downstream_scheme_are_not_ours() -> None:
    for topic in (
        "devices/d/messages/events/",
        "devices//messages/devicebound/",
        "devices/edge1/modules/filter/inputs",
        "$iothub/twin/res/200/",
        "sensors/temp",
    ):
        assert parse_downstream(topic, b"", "edge1") is None, topic


def test_subscription_filters_cover_devicebound_and_module_inputs() -> None:
    assert devicebound_filter() == "devices/+/messages/devicebound/#"
    assert devicebound_filter("leaf1") == "devices/leaf1/messages/devicebound/#"
    assert module_inputs_filter("edge1") == "devices/edge1/modules/+/inputs/#"
