"""Router match cost per message for typical route sets (docs/architecture.md §1: Router.match).

Prints a table; asserts nothing about speed.
"""

from __future__ import annotations

import json

from bench.common import Row, print_table, timed
from edgehub.message import Message, SystemProperty
from edgehub.routing.router import Router, compile_routes
from edgehub.routing.spec import RouteSpec

ROUTE_SETS: dict[str, list[str]] = {
    "1 route, no condition": ["FROM /messages/* INTO $upstream"],
    "10 routes, sources only": [
        f"FROM /messages/modules/m{i}/outputs/* INTO BrokeredEndpoint(\"/modules/sink{i}/inputs/in\")"
        for i in range(9)
    ] + ["FROM /messages/* INTO $upstream"],
    "10 routes, property conditions": [
        f"FROM /messages/* WHERE AS_NUMBER(temperature) > {i * 10} AND kind = 'telemetry' "
        f"INTO BrokeredEndpoint(\"/modules/alert{i}/inputs/in\")"
        for i in range(9)
    ] + ["FROM /messages/* INTO $upstream"],
    "3 routes, $body conditions": [
        "FROM /messages/* WHERE $body.sensor.temperature > 30 "
        "INTO BrokeredEndpoint(\"/modules/hot/inputs/in\")",
        "FROM /messages/* WHERE STARTS_WITH($body.sensor.name, 'boiler') INTO $upstream",
        "FROM /messages/* WHERE $contentType = 'application/json' "
        "INTO BrokeredEndpoint(\"/modules/log/inputs/in\")",
    ],
}


def _message() -> Message:
    body = json.dumps({"sensor": {"temperature": 42.5, "name": "boiler-7"}}).encode()
    return Message(
        body,
        {"temperature": "55", "kind": "telemetry"},
        {
            SystemProperty.CONNECTION_DEVICE_ID: "sensor1",
            SystemProperty.CONTENT_TYPE: "application/json",
            SystemProperty.CONTENT_ENCODING: "utf-8",
        },
    )


def run(quick: bool = False) -> None:
    count = 20_000 if quick else 200_000
    rows = []
    for name, texts in ROUTE_SETS.items():
        router = Router(compile_routes([RouteSpec(f"r{i}", t) for i, t in enumerate(texts)]))
        # A fresh message each time: a $body route must parse JSON once per message.
        messages = [_message() for _ in range(1000)]

        def loop(router: Router = router, messages: list[Message] = messages) -> int:
            match = router.match
            for i in range(count):
                match(messages[i % 1000])
            return count

        n, seconds = timed(loop)
        matched = len(router.match(_message()))
        rows.append(Row(name, n, seconds, f"{seconds / n * 1e6:.2f} µs/msg, {matched} endpoints hit"))
    print_table("Router.match per message", rows)
