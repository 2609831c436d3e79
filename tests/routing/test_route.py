"""Tests for edgehub.routing.route: what sources take, endpoint forms, route validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.errors import ConfigError, RouteSyntaxError
from edgehub.routing.route import (
    UPSTREAM_ENDPOINT,
    Route,
    RouteEndpoint,
    RouteSource,
    compile_routes,
    message_source,
    parse_route,
)
from edgehub.routing.spec import RouteSpec
from edgehub.store.base import DEFAULT_PRIORITY

DEVICE = (None, None)
FILTER_BARE = ("filter", None)
FILTER_ALERTS = ("filter", "alerts")
FILTER_OTHER = ("filter", "other")
SENSOR_ALERTS = ("sensor", "alerts")
ALL = [DEVICE, FILTER_BARE, FILTER_ALERTS, FILTER_OTHER, SENSOR_ALERTS]


@pytest.mark.parametrize(
    ("path", "taken"),
    [
        ("/*", ALL),
        ("/messages", ALL),
        ("/messages/*", ALL),
        ("/messages/modules", [FILTER_BARE, FILTER_ALERTS, FILTER_OTHER, SENSOR_ALERTS]),
        ("/messages/modules/*", [FILTER_BARE, FILTER_ALERTS, FILTER_OTHER, SENSOR_ALERTS]),
        ("/messages/modules/filter", [FILTER_BARE, FILTER_ALERTS, FILTER_OTHER]),
        ("/messages/modules/filter/*", [FILTER_BARE, FILTER_ALERTS, FILTER_OTHER]),
        ("/messages/modules/filter/outputs/*", [FILTER_ALERTS, FILTER_OTHER]),
        ("/messages/modules/filter/outputs/alerts", [FILTER_ALERTS]),
        ("/messages/modules/FILTER/outputs/Alerts", [FILTER_ALERTS]),
        ("/messages/modules/filt", []),
        ("/messages/modules/filter/outputs/alert", []),
        ("/twinChangeNotifications", []),
        ("/message", []),
        ("/*/messages/*", []),
    ],
)
def test_sources_match_message_sources_by_prefix_as_edgehub(
    path: str, taken: list[tuple[str | None, str | None]]
) -> None:
    source = RouteSource.parse(path)
    assert [origin for origin in ALL if source.matches(*origin)] == taken
    assert str(source) == path


def test_message_sources_follow_edgehub() -> None:
    assert message_source(None, "ignored") == "/messages/"
    assert message_source("filter", None) == "/messages/modules/filter/"
    assert message_source("filter", "") == "/messages/modules/filter/"
    assert message_source("filter", "alerts") == "/messages/modules/filter/outputs/alerts/"


def test_upstream_endpoint() -> None:
    endpoint = parse_route("FROM /* INTO $UpStream").endpoint
    assert endpoint == UPSTREAM_ENDPOINT
    assert endpoint.is_upstream
    assert (endpoint.module_id, endpoint.input_name) == (None, None)
    assert str(endpoint) == "$upstream"


@pytest.mark.parametrize(
    "sink",
    [
        'BrokeredEndpoint("/modules/filter/inputs/input1")',
        "brokeredendpoint('/modules/filter/inputs/input1')",
        'BrokeredEndpoint(" modules/filter/inputs/input1/ ")',
        'BrokeredEndpoint("/Modules/filter/Inputs/input1")',
    ],
)
def test_module_input_endpoints_are_normalized(sink: str) -> None:
    endpoint = parse_route(f"FROM /* INTO {sink}").endpoint
    assert endpoint == RouteEndpoint("/modules/filter/inputs/input1")
    assert not endpoint.is_upstream
    assert (endpoint.module_id, endpoint.input_name) == ("filter", "input1")
    assert str(endpoint) == 'BrokeredEndpoint("/modules/filter/inputs/input1")'


@pytest.mark.parametrize(
    ("sink", "reason"),
    [
        ("$downstream", "unknown endpoint '$downstream'"),
        ('Endpoint("/modules/m/inputs/i")', "unknown endpoint 'Endpoint'"),
        ('BrokeredEndpoint("/modules/m/inputs")', "expected /modules/<module>/inputs/<input>"),
        ('BrokeredEndpoint("/modules/m/outputs/i")', "expected /modules/<module>/inputs/<input>"),
        ('BrokeredEndpoint("/modules//inputs/i")', "expected /modules/<module>/inputs/<input>"),
        ('BrokeredEndpoint("/modules/m/inputs/i/x")', "expected /modules/<module>/inputs/<input>"),
        ('BrokeredEndpoint("")', "expected /modules/<module>/inputs/<input>"),
    ],
)
def test_bad_endpoints_are_refused_at_the_endpoint(sink: str, reason: str) -> None:
    with pytest.raises(RouteSyntaxError) as raised:
        parse_route(f"FROM /messages/* INTO {sink}")
    assert raised.value.position == 22
    assert reason in raised.value.reason


def test_parse_route_keeps_name_priority_ttl_and_compiles_the_condition() -> None:
    route = parse_route(
        "FROM /messages/modules/filter/* WHERE level = 'hot' INTO $upstream",
        name="hot",
        priority=1,
        time_to_live_secs=30,
    )
    assert isinstance(route, Route)
    assert (route.name, route.priority, route.time_to_live_secs) == ("hot", 1, 30)
    assert route.source.prefix == "/messages/modules/filter/"
    assert route.condition is not None
    assert route.condition.text == "level = 'hot'"
    assert parse_route("FROM /* INTO $upstream").condition is None
    assert parse_route("FROM /* INTO $upstream").priority == DEFAULT_PRIORITY


def test_condition_errors_are_positioned_in_the_route_text() -> None:
    text = "FROM /messages/* WHERE temperature > 30 INTO $upstream"
    with pytest.raises(RouteSyntaxError) as raised:
        parse_route(text)
    assert raised.value.position == text.index(">")
    assert raised.value.text == text


def test_compile_routes_compiles_every_spec_in_order() -> None:
    routes = compile_routes(
        [
            RouteSpec("a", "FROM /messages/* INTO $upstream"),
            RouteSpec(
                "b", 'FROM /* INTO BrokeredEndpoint("/modules/m/inputs/i")', priority=0, time_to_live_secs=5
            ),
        ]
    )
    assert [(route.name, route.priority, route.time_to_live_secs) for route in routes] == [
        ("a", DEFAULT_PRIORITY, 0),
        ("b", 0, 5),
    ]


def test_compile_routes_reports_every_bad_route_with_location_and_position() -> None:
    with pytest.raises(ConfigError) as raised:
        compile_routes(
            [
                RouteSpec("good", "FROM /messages/* INTO $upstream"),
                RouteSpec("typo", "FROM /messages/* INTO upstream"),
                RouteSpec("types", "FROM /messages/* WHERE temp > 30 INTO $upstream"),
                RouteSpec("urgent", "FROM /* INTO $upstream", priority=10),
                RouteSpec("negative", "FROM /* INTO $upstream", priority=-1, time_to_live_secs=-5),
                RouteSpec("flag", "FROM /* INTO $upstream", priority=True),
            ]
        )
    assert raised.value.problems == [
        ("routes.typo", "expected $upstream or BrokeredEndpoint(\"/modules/<module>/inputs/<input>\") "
         "but found 'upstream' at position 22"),
        ("routes.types", "invalid operands of '>': have string and number, expected string and string "
         "(properties are strings: compare numbers with AS_NUMBER(property)) at position 28"),
        ("routes.urgent", "priority must be 0-9, got 10"),
        ("routes.negative", "priority must be 0-9, got -1"),
        ("routes.negative", "timeToLiveSecs must be an integer >= 0, got -5"),
        ("routes.flag", "priority must be 0-9, got True"),
    ]  # fmt: skip


def test_non_integer_priority_and_ttl_are_refused_not_crashed_on() -> None:
    odd: Any = ("1", 1.5)  # as a config loader without validation might pass them
    spec = RouteSpec("odd", "FROM /* INTO $upstream", priority=odd[0], time_to_live_secs=odd[1])
    with pytest.raises(ConfigError) as raised:
        compile_routes([spec])
    assert raised.value.problems == [
        ("routes.odd", "priority must be 0-9, got '1'"),
        ("routes.odd", "timeToLiveSecs must be an integer >= 0, got 1.5"),
    ]


@pytest.mark.parametrize("priority", [0, 9, DEFAULT_PRIORITY])
def test_valid_priorities(priority: int) -> None:
    [route] = compile_routes([RouteSpec("r", "FROM /* INTO $upstream", priority=priority)])
    assert route.priority == priority


@given(st.text(max_size=80))
def test_parse_route_raises_only_route_syntax_errors(text: str) -> None:
    try:
        parse_route(text)
    except RouteSyntaxError:
        return


CONDITION_WORDS = st.sampled_from(
    [
        "temp",
        "$to",
        "$body.a",
        "'x'",
        "1",
        "null",
        "undefined",
        "true",
        "=",
        "<",
        "+",
        "||",
        "??",
        "AND",
        "NOT",
        "(",
        ")",
        "ABS(",
        "CONCAT(",
        "LENGTH(",
        ",",
    ]
)


@given(st.lists(CONDITION_WORDS, max_size=12).map(" ".join))
def test_compiling_any_condition_raises_only_route_syntax_errors(condition: str) -> None:
    try:
        parse_route(f"FROM /messages/* WHERE {condition} INTO $upstream")
    except RouteSyntaxError:
        return
