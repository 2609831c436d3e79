"""Tests of edgehub.iothub.topics: property bags, telemetry and delivery topics, as both sides use them."""

from __future__ import annotations

from types import MappingProxyType
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.iothub.topics import (
    DELIVERY_KEYS,
    SYSTEM_NAMES,
    TELEMETRY_KEYS,
    decode_property_bag,
    delivery_topic,
    devicebound_filter,
    encode_property_bag,
    module_inputs_filter,
    parse_delivery_topic,
    parse_telemetry_topic,
    telemetry_topic,
)
from edgehub.message import Identity, Message, SystemProperty

MODULE = Identity("edge", "filter")
DEVICE = Identity("sensor1")

# Keys that are not a system property's wire name once URL-decoded (those are system by definition).
application_keys = st.text(max_size=20).filter(lambda key: key not in SYSTEM_NAMES)
telemetry_system = st.sampled_from(sorted(name for name, _ in TELEMETRY_KEYS))
delivery_system = st.sampled_from(sorted(name for name, _ in DELIVERY_KEYS))
# IoT Hub ids: letters, digits and - . % _ * ? ! ( ) , : = @ $ ' (up to 128).
iot_hub_ids = st.text(
    "abcXYZ0189-.%_*?!(),:=@$'", min_size=1, max_size=12,
)


# --- property bags -----------------------------------------------------------------------------


@given(
    properties=st.dictionaries(application_keys, st.text(max_size=20), max_size=6),
    system=st.dictionaries(telemetry_system, st.text(max_size=20), max_size=6),
)
def test_property_bag_round_trips_any_text(properties: dict[str, str], system: dict[str, str]) -> None:
    bag = encode_property_bag(properties, system)
    assert "/" not in bag  # a bag is one topic level, whatever the values hold
    assert "+" not in bag
    assert "#" not in bag
    assert decode_property_bag(bag) == (properties, system)


def test_system_keys_are_written_as_the_python_and_embedded_c_sdks_write_them_values_encoded() -> None:
    bag = encode_property_bag(
        {"temp alert": "a&b=c"},
        {SystemProperty.CONTENT_TYPE: "application/json", SystemProperty.MESSAGE_ID: "m1"},
    )
    assert bag == "%24.mid=m1&%24.ct=application%2Fjson&temp%20alert=a%26b%3Dc"


def test_literal_and_percent_encoded_system_keys_decode_alike() -> None:
    literal = decode_property_bag("$.mid=1&$.ct=text&x=1")
    encoded = decode_property_bag("%24.mid=1&%24.ct=text&x=1")
    assert literal == encoded == ({"x": "1"}, {"messageId": "1", "contentType": "text"})


def test_all_system_keys_decode_and_plus_is_not_a_space() -> None:
    app, system = decode_property_bag(
        "%24.mid=42&%24.cid=c1&%24.uid=u&%24.to=%2Fdevices%2Fx&%24.ct=application%2Fjson&%24.ce=utf-8"
        "&%24.on=alerts&%24.ctime=2024-01-01T00%3A00%3A00Z&%24.schema=s1&%24.exp=2030-01-01"
        "&%24.cdid=d&%24.cmid=m&temp=21.5&a%20b=c+d"
    )
    assert system == {
        "messageId": "42", "correlationId": "c1", "userId": "u", "to": "/devices/x",
        "contentType": "application/json", "contentEncoding": "utf-8", "outputName": "alerts",
        "creationTime": "2024-01-01T00:00:00Z", "messageSchema": "s1", "absolute-expiry-time": "2030-01-01",
        "connectionDeviceId": "d", "connectionModuleId": "m",
    }
    assert app == {"temp": "21.5", "a b": "c+d"}  # quote, not quote_plus, as the SDKs say


def test_valueless_keys_and_a_leading_question_mark() -> None:
    assert decode_property_bag("?%24.mid&flag&&k=&$.ct=") == ({"flag": "", "k": ""}, {"contentType": ""})


def test_unknown_dollar_keys_stay_application_properties() -> None:
    assert decode_property_bag("%24.ifid=x&$.sub=c") == ({"$.ifid": "x", "$.sub": "c"}, {})


# --- telemetry topics --------------------------------------------------------------------------


def test_telemetry_topic_names_the_sender_and_ends_in_a_slash_even_without_a_bag() -> None:
    assert telemetry_topic(DEVICE, {}, {}) == "devices/sensor1/messages/events/"
    assert telemetry_topic(MODULE, {"a": "1"}, {SystemProperty.OUTPUT_NAME: "out"}) == (
        "devices/edge/modules/filter/messages/events/%24.on=out&a=1"
    )


def test_telemetry_bag_never_carries_connection_ids_the_topic_names_the_sender() -> None:
    system = {SystemProperty.CONNECTION_DEVICE_ID: "sensor1", SystemProperty.CONTENT_ENCODING: "utf-8"}
    assert telemetry_topic(DEVICE, {}, system) == "devices/sensor1/messages/events/%24.ce=utf-8"


def test_ids_are_percent_encoded_in_topics_as_azure_iot_device_does() -> None:
    hub = Identity("edge:1", "$edgeHub")
    assert telemetry_topic(hub, {}, {}) == "devices/edge%3A1/modules/%24edgeHub/messages/events/"


@given(
    device=iot_hub_ids,
    module=st.none() | iot_hub_ids,
    properties=st.dictionaries(application_keys, st.text(max_size=8), max_size=3),
    system=st.dictionaries(telemetry_system, st.text(max_size=8), max_size=3),
)
def test_telemetry_topic_round_trips_any_iot_hub_ids(
    device: str, module: str | None, properties: dict[str, str], system: dict[str, str],
) -> None:
    sender = Identity(device, module)
    parsed = parse_telemetry_topic(telemetry_topic(sender, properties, system))
    assert parsed is not None
    assert parsed.sender == sender
    assert parsed.names(sender)
    assert (parsed.properties, parsed.system_properties) == (properties, system)


def test_a_raw_id_as_the_dotnet_sdk_writes_it_still_names_its_identity() -> None:
    odd = Identity("dev%41")  # '%41' written raw would decode to 'A'
    parsed = parse_telemetry_topic("devices/dev%41/messages/events/")
    assert parsed is not None
    assert parsed.sender == Identity("devA")
    assert parsed.names(odd)
    assert not parsed.names(Identity("dev%42"))


def test_connection_ids_in_a_telemetry_bag_are_dropped() -> None:
    parsed = parse_telemetry_topic("devices/sensor1/messages/events/%24.cdid=evil&$.cmid=evil&k=v")
    assert parsed is not None
    assert (parsed.properties, parsed.system_properties) == ({"k": "v"}, {})


def test_device_topic_without_trailing_slash_is_telemetry() -> None:
    parsed = parse_telemetry_topic("devices/sensor1/messages/events")
    assert parsed is not None
    assert parsed.sender == DEVICE


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


# --- delivery topics ---------------------------------------------------------------------------


def test_delivery_topics_carry_properties_and_the_original_sender_back() -> None:
    message = Message(b"x", {"alert": "high temp"}, {
        "messageId": "m1", "contentType": "application/json", "connectionDeviceId": "sensor1",
        "connectionModuleId": "reader", "outputName": "out",
    })
    assert delivery_topic(MODULE, "input1", message) == (
        "devices/edge/modules/filter/inputs/input1/"
        "%24.mid=m1&%24.ct=application%2Fjson&%24.cdid=sensor1&%24.cmid=reader&alert=high%20temp"
    )
    assert delivery_topic(DEVICE, None, Message(b"")) == "devices/sensor1/messages/devicebound/"


def test_quoted_ids_in_delivery_topics() -> None:
    odd = Identity("dev/1", "m#")
    expected = f"devices/{quote('dev/1', safe='')}/modules/m%23/inputs/in/"
    assert delivery_topic(odd, "in", Message(b"")) == expected


@given(
    device=iot_hub_ids,
    module=iot_hub_ids,
    input_name=st.text(min_size=1, max_size=8),
    properties=st.dictionaries(application_keys, st.text(max_size=8), max_size=3),
    system=st.dictionaries(delivery_system, st.text(max_size=8), max_size=3),
)
def test_delivery_topic_round_trips(
    device: str, module: str, input_name: str, properties: dict[str, str], system: dict[str, str],
) -> None:
    message = Message(b"m", properties, system)
    to_module = parse_delivery_topic(delivery_topic(Identity(device, module), input_name, message), b"m")
    assert to_module is not None
    assert (to_module.recipient, to_module.input_name, to_module.message) == (
        Identity(device, module), input_name, message,
    )
    to_device = parse_delivery_topic(delivery_topic(Identity(device), None, message), b"m")
    assert to_device is not None
    assert (to_device.recipient, to_device.input_name, to_device.message) == (Identity(device), None, message)


def test_devicebound_topic_as_iot_hub_writes_it() -> None:
    parsed = parse_delivery_topic(
        "devices/leaf1/messages/devicebound/%24.mid=42&%24.to=%2Fdevices%2Fleaf1&iothub-ack=full", b"c2d",
    )
    assert parsed is not None
    assert parsed.recipient == Identity("leaf1")
    assert parsed.message == Message(
        b"c2d",
        {"iothub-ack": "full"},
        {SystemProperty.MESSAGE_ID: "42", SystemProperty.TO: "/devices/leaf1"},
    )


@pytest.mark.parametrize(
    "topic",
    [
        "devices/d/messages/events/",
        "devices//messages/devicebound/",
        "devices/edge1/modules/filter/inputs",
        "devices/edge1/modules//inputs/i/",
        "$iothub/twin/res/200/",
        "sensors/temp",
    ],
)
def test_other_topics_are_not_deliveries(topic: str) -> None:
    assert parse_delivery_topic(topic, b"") is None


def test_subscription_filters_cover_devicebound_and_module_inputs() -> None:
    assert devicebound_filter() == "devices/+/messages/devicebound/#"
    assert devicebound_filter("leaf:1") == "devices/leaf%3A1/messages/devicebound/#"
    assert module_inputs_filter("edge1") == "devices/edge1/modules/+/inputs/#"
    assert module_inputs_filter("edge1", "$edgeHub") == "devices/edge1/modules/%24edgeHub/inputs/#"


def test_a_delivery_bag_is_never_taken_from_another_message_s_properties() -> None:
    """Delivery bags are remembered per pair of read-only property mappings: a message built after
    another one was freed (its mappings may reuse the freed ones' addresses) still gets its own."""
    module = Identity("edge", "sink")
    for n in range(300):
        system = MappingProxyType({SystemProperty.MESSAGE_ID: f"m{n}"})
        message = Message(b"", MappingProxyType({"n": str(n)}), system)
        topic = delivery_topic(module, "in", message)
        assert topic == f"devices/edge/modules/sink/inputs/in/%24.mid=m{n}&n={n}"
        assert delivery_topic(module, "in", message) == topic
        del message


def test_a_delivery_bag_of_mutable_properties_is_encoded_from_what_they_hold_now() -> None:
    module = Identity("edge", "sink")
    properties = {"k": "1"}
    message = Message(b"", properties)
    assert delivery_topic(module, "in", message).endswith("/k=1")
    properties["k"] = "2"
    assert delivery_topic(module, "in", message).endswith("/k=2")
