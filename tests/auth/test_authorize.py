"""Tests for edgehub.auth.authorize: an identity publishes and subscribes only as itself."""

from __future__ import annotations

import pytest

from edgehub.auth.authorize import acts_for_others, may_publish, may_subscribe
from edgehub.message import Identity

DEVICE = Identity("sensor-1")
OTHER_DEVICE = Identity("sensor-2")
MODULE = Identity("edge", "filter")
EDGE_DEVICE = Identity("edge")
CHILD_HUB = Identity("child", "$edgeHub")


@pytest.mark.parametrize(
    ("identity", "topic"),
    [
        (DEVICE, "devices/sensor-1/messages/events/"),
        (DEVICE, "devices/sensor-1/messages/events"),
        (DEVICE, "devices/sensor-1/messages/events/%24.ct=application%2Fjson&temp=20"),
        (MODULE, "devices/edge/modules/filter/messages/events/"),
        (MODULE, "devices/edge/modules/filter/messages/events/%24.on=output1"),
        (Identity("dev:1"), "devices/dev%3A1/messages/events/"),  # azure-iot-device quotes ids
        (Identity("dev:1"), "devices/dev:1/messages/events/"),  # .NET and C SDKs do not
    ],
)
def test_identity_publishes_telemetry_as_itself(identity: Identity, topic: str) -> None:
    assert may_publish(identity, topic)


@pytest.mark.parametrize(
    ("identity", "topic"),
    [
        (DEVICE, "devices/sensor-2/messages/events/"),
        (DEVICE, "devices/Sensor-1/messages/events/"),  # ids are case-sensitive
        (DEVICE, "devices/edge/modules/filter/messages/events/"),
        (EDGE_DEVICE, "devices/edge/modules/filter/messages/events/"),
        (MODULE, "devices/edge/messages/events/"),  # a module posing as its device
        (MODULE, "devices/edge/modules/other/messages/events/"),
        (MODULE, "devices/other/modules/filter/messages/events/"),
    ],
)
def test_identity_cannot_publish_as_another_device_or_module(identity: Identity, topic: str) -> None:
    assert not may_publish(identity, topic)


@pytest.mark.parametrize(
    ("identity", "topic"),
    [
        (DEVICE, "devices/sensor-1/messages/devicebound/"),
        (MODULE, "devices/edge/modules/filter/inputs/input1/"),
        (DEVICE, "devices/edge/modules/filter/inputs/input1/"),  # injecting into a module input
        (DEVICE, "devices/sensor-1"),
        (DEVICE, "devices/sensor-1/messages"),
        (MODULE, "devices/edge/modules/filter/messages"),
    ],
)
def test_clients_cannot_publish_to_delivery_topics(identity: Identity, topic: str) -> None:
    assert not may_publish(identity, topic)


@pytest.mark.parametrize(
    "topic",
    [
        "$iothub/twin/GET/?$rid=1",
        "$iothub/twin/PATCH/properties/reported/?$rid=2",
        "$iothub/methods/res/200/?$rid=3",
    ],
)
def test_any_client_publishes_twin_requests_and_method_responses(topic: str) -> None:
    assert may_publish(DEVICE, topic)
    assert may_publish(MODULE, topic)


@pytest.mark.parametrize("topic", ["$iothub/methods/POST/reboot/?$rid=1", "$iothub/other/x", "$SYS/broker"])
def test_other_dollar_topics_cannot_be_published(topic: str) -> None:
    assert not may_publish(DEVICE, topic, generic_topics=True)


@pytest.mark.parametrize(
    "topic", ["devices/sensor-1/messages/events/+", "devices/sensor-1/messages/events/#", "", "a\x00b"]
)
def test_wildcards_empty_and_nul_topic_names_cannot_be_published(topic: str) -> None:
    assert not may_publish(DEVICE, topic, generic_topics=True)


def test_generic_topics_only_when_enabled() -> None:
    assert not may_publish(DEVICE, "factory/line1/temp")
    assert may_publish(DEVICE, "factory/line1/temp", generic_topics=True)
    assert not may_subscribe(DEVICE, "factory/#")
    assert may_subscribe(DEVICE, "factory/#", generic_topics=True)
    assert may_subscribe(DEVICE, "#", generic_topics=True)
    assert may_subscribe(DEVICE, "+/line1", generic_topics=True)


def test_generic_topics_do_not_open_iot_hub_topics() -> None:
    assert not may_publish(DEVICE, "devices/sensor-2/messages/events/", generic_topics=True)
    assert not may_subscribe(DEVICE, "devices/sensor-2/messages/devicebound/#", generic_topics=True)


@pytest.mark.parametrize(
    ("identity", "topic_filter"),
    [
        (DEVICE, "devices/sensor-1/messages/devicebound/#"),  # azure-iot-device, .NET, C
        (DEVICE, "devices/+/messages/devicebound/#"),  # Embedded C SDK: '+' is the session's own id
        (DEVICE, "devices/sensor%2D1/messages/devicebound/#"),
        (MODULE, "devices/edge/modules/filter/inputs/#"),  # azure-iot-device, C
        (MODULE, "devices/edge/modules/filter/#"),  # .NET SDK
        (MODULE, "devices/+/modules/+/inputs/#"),
        (MODULE, "devices/edge/modules/filter/inputs/+/#"),
    ],
)
def test_identity_subscribes_to_its_own_deliveries(identity: Identity, topic_filter: str) -> None:
    assert may_subscribe(identity, topic_filter)


@pytest.mark.parametrize(
    ("identity", "topic_filter"),
    [
        (DEVICE, "devices/sensor-2/messages/devicebound/#"),
        (DEVICE, "devices/#"),
        (DEVICE, "devices/+/#"),
        (DEVICE, "devices/sensor-1/#"),  # would reach modules of a device with that id
        (DEVICE, "devices/sensor-1/+/devicebound/#"),
        (DEVICE, "devices/sensor-1/modules/filter/inputs/#"),
        (EDGE_DEVICE, "devices/edge/modules/filter/inputs/#"),  # a device reading its module's inputs
        (EDGE_DEVICE, "devices/edge/modules/+/inputs/#"),
        (MODULE, "devices/edge/modules/other/inputs/#"),
        (MODULE, "devices/edge/messages/devicebound/#"),  # a module reading its device's C2D
        (MODULE, "devices/edge/modules/#"),
        (MODULE, "devices/edge/+/filter/inputs/#"),
        (MODULE, "devices/other/modules/filter/inputs/#"),
    ],
)
def test_identity_cannot_subscribe_to_another_identitys_deliveries(
    identity: Identity, topic_filter: str
) -> None:
    assert not may_subscribe(identity, topic_filter, generic_topics=True)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
        "$iothub/methods/POST/#",
    ],
)
def test_any_client_subscribes_to_session_scoped_twin_and_method_topics(topic_filter: str) -> None:
    assert may_subscribe(DEVICE, topic_filter)
    assert may_subscribe(MODULE, topic_filter)


@pytest.mark.parametrize("topic_filter", ["$iothub/#", "$iothub/+/res/#", "$SYS/#", "$share/g/devices/#"])
def test_other_dollar_filters_are_refused(topic_filter: str) -> None:
    assert not may_subscribe(DEVICE, topic_filter, generic_topics=True)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "",
        "devices/sensor-1/messages/devicebound/a#",
        "devices/sensor-1/messages/#/x",
        "devices/sensor-1+/messages/devicebound/#",
        "devices/sensor-1/messages/devicebound/\x00",
        "factory/#/x",
    ],
)
def test_malformed_filters_are_refused(topic_filter: str) -> None:
    assert not may_subscribe(DEVICE, topic_filter, generic_topics=True)


# --- a child edge hub (nested IoT Edge) ----------------------------------------------------------


def test_only_an_edge_hub_module_acts_for_others() -> None:
    assert acts_for_others(CHILD_HUB)
    assert not acts_for_others(Identity("child", "edgeHub"))
    assert not acts_for_others(Identity("$edgeHub"))
    assert not acts_for_others(MODULE)


@pytest.mark.parametrize(
    "topic",
    [
        "devices/leaf1/messages/events/%24.mid=1",
        "devices/leaf%3A1/messages/events/",
        "devices/child/modules/filter/messages/events/%24.on=out1",
        "devices/child/modules/%24edgeHub/messages/events/",
        "devices/grandchild/modules/$edgeHub/messages/events/",
    ],
)
def test_child_edge_hub_publishes_telemetry_for_any_sender_below_it(topic: str) -> None:
    assert may_publish(CHILD_HUB, topic)


@pytest.mark.parametrize(
    "topic",
    [
        "devices/leaf1/messages/devicebound/",
        "devices/child/modules/filter/inputs/input1/",
        "devices/child/modules//messages/events/",
        "devices//messages/events/",
        "devices/leaf1",
    ],
)
def test_child_edge_hub_cannot_publish_outside_telemetry(topic: str) -> None:
    assert not may_publish(CHILD_HUB, topic)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "devices/+/messages/devicebound/#",
        "devices/leaf1/messages/devicebound/#",
        "devices/child/modules/+/inputs/#",
        "devices/child/modules/filter/inputs/#",
        "devices/child/modules/%24edgeHub/inputs/#",
        "devices/+/modules/+/inputs/#",  # '+' for the device is its own device, as for every identity
    ],
)
def test_child_edge_hub_subscribes_to_its_childrens_deliveries(topic_filter: str) -> None:
    assert may_subscribe(CHILD_HUB, topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "devices/#",
        "devices/+/#",
        "devices/+/messages/#",  # would reach every device's telemetry
        "devices/+/messages/events/#",
        "devices/other/modules/+/inputs/#",  # modules of another edge device
    ],
)
def test_child_edge_hub_cannot_subscribe_to_telemetry_or_other_edge_devices(topic_filter: str) -> None:
    assert not may_subscribe(CHILD_HUB, topic_filter)


def test_other_identities_keep_the_only_as_itself_rule_for_children_topics() -> None:
    assert not may_publish(MODULE, "devices/leaf1/messages/events/")
    assert not may_subscribe(MODULE, "devices/+/messages/devicebound/#")
    assert not may_subscribe(DEVICE, "devices/leaf1/messages/devicebound/#")
