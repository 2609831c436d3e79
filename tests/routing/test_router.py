"""Tests for edgehub.routing.router: which endpoints a message goes to, with what priority and ttl."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub.message import Message, SystemProperty
from edgehub.routing.route import Route, compile_routes
from edgehub.routing.router import RouteMatch, Router
from edgehub.routing.spec import RouteSpec
from edgehub.store.base import DEFAULT_PRIORITY

UPSTREAM = "$upstream"
FILTER_INPUT = "/modules/filter/inputs/input1"


def router(*texts: str | tuple[str, int, int]) -> Router:
    specs = []
    for index, entry in enumerate(texts):
        text, priority, ttl = (entry, DEFAULT_PRIORITY, 0) if isinstance(entry, str) else entry
        specs.append(RouteSpec(f"r{index}", text, priority, ttl))
    return Router(compile_routes(specs))


def device(properties: dict[str, str] | None = None, body: bytes = b"") -> Message:
    return Message(body, properties or {}, {SystemProperty.CONNECTION_DEVICE_ID: "sensor1"})


def module(module_id: str, output: str | None = None, properties: dict[str, str] | None = None) -> Message:
    system = {SystemProperty.CONNECTION_DEVICE_ID: "edge", SystemProperty.CONNECTION_MODULE_ID: module_id}
    if output is not None:
        system[SystemProperty.OUTPUT_NAME] = output
    return Message(b"", properties or {}, system)


def endpoints(matches: tuple[RouteMatch, ...]) -> list[str]:
    return [match.endpoint for match in matches]


def test_the_default_deployment_sends_device_telemetry_to_filter_and_filter_output_upstream() -> None:
    routes = router(
        "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) "
        'INTO BrokeredEndpoint("/modules/filter/inputs/input1")',
        "FROM /messages/modules/filter/outputs/* INTO $upstream",
    )
    assert routes.match(device()) == (RouteMatch(FILTER_INPUT, DEFAULT_PRIORITY, 0),)
    assert routes.match(module("filter", "output1")) == (RouteMatch(UPSTREAM, DEFAULT_PRIORITY, 0),)
    assert routes.match(module("filter")) == ()
    assert routes.match(module("other", "output1")) == ()


def test_a_device_message_is_telemetry_whatever_its_output_name() -> None:
    routes = router("FROM /messages/modules/* INTO $upstream")
    message = Message(b"", {}, {SystemProperty.CONNECTION_DEVICE_ID: "d", SystemProperty.OUTPUT_NAME: "x"})
    assert routes.match(message) == ()


def test_no_routes_route_nothing() -> None:
    assert Router([]).match(device()) == ()


def test_several_routes_to_one_endpoint_keep_the_lowest_priority_and_its_ttl() -> None:
    routes = router(
        ("FROM /messages/* INTO $upstream", 5, 50),
        ("FROM /messages/* INTO $upstream", 1, 10),
        ("FROM /messages/* INTO $upstream", 3, 30),
    )
    assert routes.match(device()) == (RouteMatch(UPSTREAM, 1, 10),)


def test_on_equal_priority_the_earlier_route_wins() -> None:
    routes = router(("FROM /messages/* INTO $upstream", 2, 20), ("FROM /messages/* INTO $upstream", 2, 99))
    assert routes.match(device()) == (RouteMatch(UPSTREAM, 2, 20),)


def test_a_matching_conditional_route_can_beat_an_unconditional_one() -> None:
    routes = router(
        ("FROM /messages/* INTO $upstream", 5, 50),
        ("FROM /messages/* WHERE level = 'critical' INTO $upstream", 0, 5),
    )
    assert routes.match(device({"level": "critical"})) == (RouteMatch(UPSTREAM, 0, 5),)
    assert routes.match(device({"level": "info"})) == (RouteMatch(UPSTREAM, 5, 50),)
    assert routes.match(device()) == (RouteMatch(UPSTREAM, 5, 50),)


def test_a_conditional_route_that_cannot_win_does_not_change_the_result() -> None:
    routes = router(
        ("FROM /messages/* INTO $upstream", 0, 1),
        ("FROM /messages/* WHERE level = 'critical' INTO $upstream", 4, 2),
    )
    assert routes.match(device({"level": "critical"})) == (RouteMatch(UPSTREAM, 0, 1),)


def test_matches_come_in_the_order_endpoints_first_appear_in_the_routes() -> None:
    routes = router(
        "FROM /messages/* WHERE a = '1' INTO BrokeredEndpoint(\"/modules/x/inputs/in\")",
        "FROM /messages/* INTO $upstream",
        'FROM /messages/* INTO BrokeredEndpoint("/modules/y/inputs/in")',
        "FROM /messages/* WHERE a = '1' INTO BrokeredEndpoint(\"/modules/y/inputs/in\")",
    )
    assert endpoints(routes.match(device({"a": "1"}))) == [
        "/modules/x/inputs/in",
        UPSTREAM,
        "/modules/y/inputs/in",
    ]
    assert endpoints(routes.match(device())) == [UPSTREAM, "/modules/y/inputs/in"]


def test_constant_conditions_are_decided_once() -> None:
    routes = router(
        'FROM /messages/* WHERE 1 = 2 INTO BrokeredEndpoint("/modules/never/inputs/in")',
        "FROM /messages/* WHERE true OR x = 'y' INTO $upstream",
    )
    assert routes.match(device()) == (RouteMatch(UPSTREAM, DEFAULT_PRIORITY, 0),)


def test_conditions_see_properties_system_properties_and_body() -> None:
    routes = router(
        'FROM /messages/* WHERE $body.reading.value > 100 INTO BrokeredEndpoint("/modules/hot/inputs/in")',
        "FROM /messages/* WHERE AS_NUMBER(temperature) > 30 AND $connectionDeviceId = 'sensor1' "
        "INTO $upstream",
    )
    body = json.dumps({"reading": {"value": 120}}).encode()
    message = Message(
        body,
        {"temperature": "35"},
        {SystemProperty.CONNECTION_DEVICE_ID: "sensor1", SystemProperty.CONTENT_TYPE: "application/json"},
    )
    assert endpoints(routes.match(message)) == ["/modules/hot/inputs/in", UPSTREAM]


def test_the_body_is_parsed_once_per_message_for_all_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_loads = json.loads

    def counting_loads(text: str, **kwargs: Any) -> Any:
        calls.append(text)
        return real_loads(text, **kwargs)

    routes = router(
        'FROM /messages/* WHERE $body.a = 1 INTO BrokeredEndpoint("/modules/a/inputs/in")',
        'FROM /messages/* WHERE $body.b = 2 INTO BrokeredEndpoint("/modules/b/inputs/in")',
        "FROM /messages/* WHERE key = 'x' INTO $upstream",
    )
    monkeypatch.setattr(json, "loads", counting_loads)
    system = {SystemProperty.CONNECTION_DEVICE_ID: "d", SystemProperty.CONTENT_TYPE: "application/json"}
    assert len(routes.match(Message(b'{"a": 1, "b": 2}', {}, system))) == 2
    assert len(calls) == 1
    routes.match(Message(b"{}", {"key": "x"}, {SystemProperty.CONNECTION_DEVICE_ID: "d"}))
    assert len(calls) == 1  # no JSON content type: never parsed


def test_the_plan_cache_is_bounded_and_stays_correct() -> None:
    spec = RouteSpec("r0", "FROM /messages/modules/m/outputs/o7 INTO $upstream", DEFAULT_PRIORITY, 0)
    routes = Router(compile_routes([spec]), max_cached_sources=3)
    for round_ in range(2):
        for output in range(10):
            expected = [UPSTREAM] if output == 7 else []
            assert endpoints(routes.match(module("m", f"o{output}"))) == expected, round_
        assert routes.cached_sources <= 3


def test_route_matches_are_hashable_values() -> None:
    assert {RouteMatch(UPSTREAM, 1, 2), RouteMatch(UPSTREAM, 1, 2)} == {RouteMatch(UPSTREAM, 1, 2)}


# --- agreement with a naive router (Hypothesis) ---

ROUTE_POOL = [
    "FROM /messages/* INTO {endpoint}",
    "FROM /* WHERE level = 'hot' INTO {endpoint}",
    "FROM /messages/modules/* INTO {endpoint}",
    "FROM /messages/modules/m1/* WHERE NOT IS_DEFINED(level) INTO {endpoint}",
    "FROM /messages/modules/m1/outputs/* INTO {endpoint}",
    "FROM /messages/modules/m1/outputs/o1 WHERE level <> 'hot' INTO {endpoint}",
    "FROM /messages/modules/m2 INTO {endpoint}",
    "FROM /messages WHERE NOT IS_DEFINED($connectionModuleId) INTO {endpoint}",
    "FROM /messages/* WHERE false INTO {endpoint}",
]
ENDPOINTS = [
    "$upstream",
    'BrokeredEndpoint("/modules/a/inputs/in")',
    'BrokeredEndpoint("/modules/b/inputs/in")',
]


def naive_match(routes: Sequence[Route], message: Message) -> tuple[RouteMatch, ...]:
    """Every route in order; per endpoint the lowest (priority, position); endpoints by first mention."""
    system = message.system_properties
    module_id = system.get(SystemProperty.CONNECTION_MODULE_ID)
    output = system.get(SystemProperty.OUTPUT_NAME) if module_id else None
    best: dict[str, tuple[int, int, RouteMatch]] = {}
    for index, route in enumerate(routes):
        if not route.source.matches(module_id, output):
            continue
        if route.condition is not None and not route.condition.matches(message):
            continue
        candidate = (
            route.priority,
            index,
            RouteMatch(route.endpoint.address, route.priority, route.time_to_live_secs),
        )
        current = best.get(route.endpoint.address)
        if current is None or candidate[:2] < current[:2]:
            best[route.endpoint.address] = candidate
    order = list(dict.fromkeys(route.endpoint.address for route in routes))
    return tuple(best[endpoint][2] for endpoint in order if endpoint in best)


ROUTE_SPECS = st.lists(
    st.tuples(
        st.sampled_from(ROUTE_POOL),
        st.sampled_from(ENDPOINTS),
        st.sampled_from([0, 1, 5, DEFAULT_PRIORITY]),
        st.integers(0, 3),
    ),
    max_size=8,
)
MESSAGES = st.builds(
    lambda module_id, output, level: Message(
        b"",
        {} if level is None else {"Level": level},
        {
            SystemProperty.CONNECTION_DEVICE_ID: "d",
            **({} if module_id is None else {SystemProperty.CONNECTION_MODULE_ID: module_id}),
            **({} if output is None else {SystemProperty.OUTPUT_NAME: output}),
        },
    ),
    st.sampled_from([None, "m1", "m2", "M1"]),
    st.sampled_from([None, "o1", "o2"]),
    st.sampled_from([None, "hot", "cold"]),
)


@settings(max_examples=150)
@given(ROUTE_SPECS, st.lists(MESSAGES, min_size=1, max_size=6))
def test_router_agrees_with_a_naive_router(
    specs: list[tuple[str, str, int, int]], messages: list[Message]
) -> None:
    routes = compile_routes(
        [
            RouteSpec(f"r{index}", text.format(endpoint=endpoint), priority, ttl)
            for index, (text, endpoint, priority, ttl) in enumerate(specs)
        ]
    )
    fast = Router(routes)
    for message in messages * 2:  # the second pass uses the cached plans
        assert fast.match(message) == naive_match(routes, message)
