"""The /twinChangeNotifications source and TWIN_CHANGE_INCLUDES, as edgeHub's Routing.Core has them."""

from __future__ import annotations

import json

import pytest

from edgehub.errors import RouteSyntaxError
from edgehub.message import Message
from edgehub.routing.route import RouteSource, message_source, parse_route
from edgehub.routing.router import Router

TO_WATCH = 'INTO BrokeredEndpoint("/modules/watch/inputs/twins")'
# edgeHub TwinChangeIncludesTest's notification body
BODY = {"properties": {"reported": {
    "WeatherTwin": {"Temperature": 50, "Location": {"Street": "One Microsoft Way", "City": "Redmond"}},
    "Gone": None, "$version": 4,
}}}


def notification(body: object = BODY, **system: str) -> Message:
    properties = {"messageType": "twinChangeNotification", "contentType": "application/json",
                  "connectionDeviceId": "edge", "connectionModuleId": "$edgeHub", **system}
    return Message(json.dumps(body).encode(), {}, properties)


def matches(condition: str, message: Message | None = None) -> bool:
    router = Router([parse_route(f"FROM /twinChangeNotifications WHERE {condition} {TO_WATCH}")])
    return bool(router.match(message or notification()))


def test_twin_change_source_is_its_own_and_taken_by_the_catch_all() -> None:
    source = message_source(None, None, twin_change=True)
    assert source == "/twinChangeNotifications/"
    assert RouteSource.parse("/twinChangeNotifications").matches_source(source)
    assert RouteSource.parse("/*").matches_source(source)
    assert not RouteSource.parse("/messages/*").matches_source(source)
    assert not RouteSource.parse("/twinChangeNotifications").matches_source("/messages/")


def test_notification_is_routed_by_its_message_type_not_its_sender() -> None:
    router = Router([
        parse_route(f"FROM /twinChangeNotifications {TO_WATCH}"),
        parse_route("FROM /messages/modules/* INTO $upstream"),
    ])
    assert [match.endpoint for match in router.match(notification())] == ["/modules/watch/inputs/twins"]
    folded = notification(messageType="TwinChangeNotification")  # the type is case-insensitive
    assert [match.endpoint for match in router.match(folded)] == ["/modules/watch/inputs/twins"]
    telemetry = Message(b"{}", {}, {"connectionDeviceId": "edge", "connectionModuleId": "$edgeHub"})
    assert [match.endpoint for match in router.match(telemetry)] == ["$upstream"]


@pytest.mark.parametrize("condition", [
    "twin_change_includes(properties.reported.WeatherTwin)",
    "TWIN_CHANGE_INCLUDES(properties.reported.WeatherTwin)",
    "Twin_Change_Includes(properties.reported.WeatherTwin.Temperature)",
    "twin_change_includes(properties.reported.WeatherTwin.Location.City)",
    "twin_change_includes(properties.reported.WeatherTwin.Location.City) AND "
    "twin_change_includes(properties.reported.WeatherTwin.Temperature) = true",
    "twin_change_includes(properties.reported.WeatherTwin) AND "
    "NOT(twin_change_includes(properties.reported.X))",
])
def test_included_paths_match(condition: str) -> None:
    assert matches(condition)


@pytest.mark.parametrize("condition", [
    "twin_change_includes(properties.desired.WeatherTwin)",
    "twin_change_includes(properties.reported.WeatherTwin.Temperature123)",
    "twin_change_includes(properties.reported.Gone)",  # null (a removed key) is not included
    "twin_change_includes(properties.reported.weathertwin)",  # paths are case-sensitive
])
def test_absent_or_null_paths_do_not_match(condition: str) -> None:
    assert not matches(condition)


def test_body_that_is_not_json_makes_the_condition_undefined() -> None:
    system = {"messageType": "twinChangeNotification", "contentType": "application/json"}
    broken = Message(b"not json", {}, system)
    assert not matches("twin_change_includes(properties.reported.WeatherTwin)", broken)
    assert not matches("NOT twin_change_includes(properties.reported.WeatherTwin)", broken)


@pytest.mark.parametrize("condition", [
    "twin_change_includes()",
    "twin_change_includes(properties.)",
    "twin_change_includes(123123)",
    "twin_change_includes(properties.abcd123)",
    "twin_change_includes(properties.desired.twin, abc)",
    "twin_change_includes('properties.reported.a')",
    "twin_change_includes(properties[0])",
])
def test_unsupported_arguments_are_refused_when_the_route_loads(condition: str) -> None:
    with pytest.raises(RouteSyntaxError):
        parse_route(f"FROM /twinChangeNotifications WHERE {condition} {TO_WATCH}")


def test_twin_change_includes_is_refused_on_other_sources() -> None:
    with pytest.raises(RouteSyntaxError, match="twin change notifications are not routed here"):
        parse_route(f"FROM /messages/* WHERE twin_change_includes(properties.reported.a) {TO_WATCH}")
