"""Routes with the source ``/topics/{filter}``: generic MQTT messages by topic, nothing else."""

from __future__ import annotations

import pytest

from edgehub.errors import ConfigError
from edgehub.message import Message, SystemProperty
from edgehub.routing.route import MQTT_TOPIC, compile_routes, parse_route
from edgehub.routing.router import Router
from edgehub.routing.spec import RouteSpec


def generic(topic: str, **properties: str) -> Message:
    return Message(b"x", {MQTT_TOPIC: topic, **properties}, {MQTT_TOPIC: topic})


def telemetry() -> Message:
    return Message(b"x", {}, {SystemProperty.CONNECTION_DEVICE_ID: "d1"})


ROUTER = Router([
    parse_route('FROM /topics/factory/+/temp INTO BrokeredEndpoint("/modules/m/inputs/temps")', name="temps"),
    parse_route("FROM /topics/factory/# WHERE unit = 'C' INTO $upstream", name="celsius"),
    parse_route("FROM /* INTO BrokeredEndpoint(\"/modules/all/inputs/x\")", name="all"),
])


def endpoints(message: Message) -> list[str]:
    return [match.endpoint for match in ROUTER.match(message)]


def test_topic_routes_take_generic_messages_by_mqtt_filter() -> None:
    assert endpoints(generic("factory/line1/temp")) == ["/modules/m/inputs/temps"]
    assert endpoints(generic("factory/line1/temp", unit="C")) == ["/modules/m/inputs/temps", "$upstream"]
    assert endpoints(generic("factory", unit="C")) == ["$upstream"]  # '#' takes the parent level
    assert endpoints(generic("office/temp", unit="C")) == []


def test_topic_routes_take_no_telemetry_and_other_routes_no_generic_messages() -> None:
    assert endpoints(telemetry()) == ["/modules/all/inputs/x"]
    assert ROUTER.takes_topic("factory/a/temp")
    assert not ROUTER.takes_topic("office/temp")


def test_topic_filters_are_case_sensitive_and_dollar_topics_need_a_literal_level() -> None:
    router = Router([parse_route("FROM /topics/# INTO $upstream")])
    assert router.takes_topic("Factory/X")
    assert not router.takes_topic("$SYS/x")  # [MQTT-4.7.2-1]
    upper = Router([parse_route("FROM /topics/Factory/# INTO $upstream")])
    assert not upper.takes_topic("factory/x")


def test_invalid_topic_filter_in_a_route_is_refused() -> None:
    with pytest.raises(ConfigError, match="'#' must be the last level"):
        compile_routes([RouteSpec(name="bad", text="FROM /topics/a/#/b INTO $upstream")])
