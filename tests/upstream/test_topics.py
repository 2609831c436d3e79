"""Tests of edgehub.upstream.topics: the original sender's topic going up, the local queue coming down."""

from __future__ import annotations

from edgehub.message import Identity, Message, SystemProperty
from edgehub.upstream.topics import parse_downstream, upstream_topic

EDGE = Identity("edge1", "$edgeHub")


def test_telemetry_of_a_device_goes_on_that_devices_events_topic_without_connection_ids() -> None:
    message = Message(
        b"{}",
        {"alert": "1"},
        {SystemProperty.CONNECTION_DEVICE_ID: "sensor1", SystemProperty.CONTENT_ENCODING: "utf-8"},
    )
    assert upstream_topic(message, EDGE) == "devices/sensor1/messages/events/%24.ce=utf-8&alert=1"


def test_telemetry_of_a_module_carries_its_output_name_on_the_modules_topic() -> None:
    message = Message(
        b"x",
        system_properties={
            SystemProperty.CONNECTION_DEVICE_ID: "edge1",
            SystemProperty.CONNECTION_MODULE_ID: "filter",
            SystemProperty.OUTPUT_NAME: "alerts",
        },
    )
    assert upstream_topic(message, EDGE) == "devices/edge1/modules/filter/messages/events/%24.on=alerts"


def test_telemetry_without_a_sender_goes_out_as_the_hub_itself_with_a_trailing_slash() -> None:
    assert upstream_topic(Message(b"x"), EDGE) == "devices/edge1/modules/%24edgeHub/messages/events/"


def test_a_generic_message_goes_up_on_the_configured_topic_with_its_own_topic_in_place() -> None:
    generic = Message(b"21.5", {"mqttTopic": "factory/line1/temp"},
                      {"mqttTopic": "factory/line1/temp", SystemProperty.CONNECTION_DEVICE_ID: "plc"})
    assert upstream_topic(generic, EDGE, "site1/{topic}") == "site1/factory/line1/temp"
    assert upstream_topic(generic, EDGE).startswith("devices/plc/messages/events/")  # not configured
    telemetry = Message(b"x", system_properties={SystemProperty.CONNECTION_DEVICE_ID: "sensor1"})
    assert upstream_topic(telemetry, EDGE, "site1/{topic}") == "devices/sensor1/messages/events/"


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


def test_module_input_topic_maps_to_the_local_modules_input_queue_with_its_sender() -> None:
    parsed = parse_downstream("devices/edge1/modules/filter/inputs/input1/$.cdid=s1&a=b", b"m", "edge1")
    assert parsed is not None
    assert parsed.endpoint == "/modules/filter/inputs/input1"
    assert parsed.message.properties == {"a": "b"}
    assert parsed.message.system_properties == {SystemProperty.CONNECTION_DEVICE_ID: "s1"}


def test_encoded_ids_name_the_decoded_local_queue() -> None:
    bound = parse_downstream("devices/leaf%3A1/messages/devicebound/", b"", "edge:1")
    module = parse_downstream("devices/edge%3A1/modules/f%24/inputs/in%201/", b"", "edge:1")
    assert bound is not None
    assert module is not None
    assert bound.endpoint == "/devices/leaf:1/messages/devicebound"
    assert module.endpoint == "/modules/f$/inputs/in 1"


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
