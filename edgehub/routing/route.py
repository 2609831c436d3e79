"""A compiled route: where messages come from (source), the condition, where they go (endpoint).

Owns the meaning of sources and endpoints (edgeHub CustomMessageSource, EndpointFactory)
and the validation of configured routes; it must not evaluate messages (router.py does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from edgehub.errors import ConfigError, RouteSyntaxError
from edgehub.message import DEFAULT_PRIORITY
from edgehub.mqtt.topic_filters import filter_matches, level_problem
from edgehub.routing.parser import parse_route_syntax
from edgehub.routing.spec import RouteSpec

if TYPE_CHECKING:  # the condition compiler is loaded by the first route with a WHERE clause
    from edgehub.routing.condition import RouteCondition

UPSTREAM: Final = "$upstream"
BROKERED_ENDPOINT: Final = "BrokeredEndpoint"
MAX_PRIORITY: Final = 9
TWIN_CHANGE_SOURCE: Final = "/twinChangeNotifications/"
"""edgeHub's TwinChangeEventMessageSource: reported-property changes of local clients."""
MESSAGE_TYPE: Final = "messageType"
TWIN_CHANGE_MESSAGE_TYPE: Final = "twinChangeNotification"
"""System property ``messageType`` with this value (case-insensitive) makes a message a twin
change notification (edgeHub RoutingMessageConverter.GetMessageSource; Core Constants)."""
TOPIC_SOURCE: Final = "/topics/"
"""``FROM /topics/{filter}``: plain MQTT messages (generic broker mode) whose topic matches the
MQTT filter; only these routes take them, and these take nothing else."""
MQTT_TOPIC: Final = "mqttTopic"
"""System property holding a generic message's MQTT topic."""


@dataclass(frozen=True, slots=True)
class RouteSource:
    """``FROM`` path. As edgeHub, it is a case-insensitive prefix of the message's source:
    ``/messages/`` for device telemetry, ``/messages/modules/{m}/`` for a module output
    without a name, ``/messages/modules/{m}/outputs/{o}/`` with one, ``/twinChangeNotifications/``
    for reported-property changes. So ``/*`` takes every message and notification,
    ``/messages/*`` every message, ``/messages/modules/*`` every module output,
    ``/messages/modules/{m}/*`` all of module m, ``.../outputs/*`` m's named outputs.
    """

    path: str
    """As written, without white space, e.g. ``/messages/modules/filter/*``."""
    prefix: str
    """Lower-cased prefix the message source must start with, e.g. ``/messages/modules/filter/``."""
    topic_filter: str | None = None
    """For ``/topics/{filter}``: the MQTT topic filter (case-sensitive, as MQTT topics are)."""

    @classmethod
    def parse(cls, path: str) -> RouteSource:
        stripped = path.strip()
        if stripped.lower().startswith(TOPIC_SOURCE) and len(stripped) > len(TOPIC_SOURCE):
            return cls(path, TOPIC_SOURCE, stripped[len(TOPIC_SOURCE):])
        # CustomMessageSource.Create: trailing '*' and '/' dropped, one '/' appended.
        trimmed = path.strip().rstrip("*")
        if len(trimmed) > 1:
            trimmed = trimmed.rstrip("/")
        return cls(path, trimmed.rstrip("/").lower() + "/")

    def matches(self, module_id: str | None, output_name: str | None) -> bool:
        """Does a message from ``module_id`` (None: a device) on ``output_name`` come from here?"""
        return message_source(module_id, output_name).lower().startswith(self.prefix)

    def matches_source(self, source: str) -> bool:
        """Does a message whose source is ``source`` (see ``message_source``) come from here?"""
        if self.topic_filter is not None:
            return False  # only generic messages, by topic (matches_topic)
        return source.lower().startswith(self.prefix)

    def matches_topic(self, topic: str) -> bool:
        """Does a generic message on MQTT ``topic`` come from here?"""
        return self.topic_filter is not None and filter_matches(self.topic_filter, topic)

    @property
    def is_twin_changes(self) -> bool:
        """True for ``/twinChangeNotifications`` (where TWIN_CHANGE_INCLUDES may be used)."""
        return self.prefix.startswith(TWIN_CHANGE_SOURCE.lower())

    def __str__(self) -> str:
        return self.path


def message_source(module_id: str | None, output_name: str | None, *, twin_change: bool = False) -> str:
    """edgeHub's message source of a message (RoutingMessageConverter.GetMessageSource):
    a twin change notification first, whoever sent it, then module outputs, then telemetry."""
    if twin_change:
        return TWIN_CHANGE_SOURCE
    if not module_id:
        return "/messages/"
    if not output_name:
        return f"/messages/modules/{module_id}/"
    return f"/messages/modules/{module_id}/outputs/{output_name}/"


@dataclass(frozen=True, slots=True)
class RouteEndpoint:
    """``INTO`` target: ``$upstream`` or ``/modules/{m}/inputs/{i}`` (a module input)."""

    address: str

    @classmethod
    def module_input(cls, module_id: str, input_name: str) -> RouteEndpoint:
        return cls(f"/modules/{module_id}/inputs/{input_name}")

    @property
    def is_upstream(self) -> bool:
        return self.address == UPSTREAM

    @property
    def module_id(self) -> str | None:
        return None if self.is_upstream else self.address.split("/")[2]

    @property
    def input_name(self) -> str | None:
        return None if self.is_upstream else self.address.split("/")[4]

    def __str__(self) -> str:
        return UPSTREAM if self.is_upstream else f'{BROKERED_ENDPOINT}("{self.address}")'


UPSTREAM_ENDPOINT: Final = RouteEndpoint(UPSTREAM)


@dataclass(frozen=True, slots=True)
class Route:
    """One route, compiled. ``condition`` None: decided by the source alone."""

    name: str
    text: str
    source: RouteSource
    condition: RouteCondition | None
    endpoint: RouteEndpoint
    priority: int = DEFAULT_PRIORITY
    time_to_live_secs: int = 0
    """0: the global ``storeAndForwardConfiguration.timeToLiveSecs`` applies."""


def parse_route(
    text: str, *, name: str = "", priority: int = DEFAULT_PRIORITY, time_to_live_secs: int = 0
) -> Route:
    """Parse and compile one route's text; raises RouteSyntaxError (0-based position)."""
    syntax = parse_route_syntax(text)
    endpoint = _endpoint(syntax.sink_function, syntax.sink, syntax.sink_position, text)
    source = RouteSource.parse(syntax.source)
    if source.topic_filter is not None and (problem := level_problem(source.topic_filter)) is not None:
        raise RouteSyntaxError(f"invalid MQTT topic filter in {syntax.source}: {problem}",
                               syntax.source_position, text)
    condition = None
    if syntax.condition is not None:
        from edgehub.routing.condition import RouteCondition

        condition = RouteCondition(
            syntax.condition, syntax.condition_text, source=text, twin_changes=source.is_twin_changes,
        )
    return Route(name, text, source, condition, endpoint, priority, time_to_live_secs)


def _endpoint(function: str | None, argument: str, position: int, text: str) -> RouteEndpoint:
    # edgeHub EndpointFactory: "$upstream" and BrokeredEndpoint, both case-insensitive.
    if function is None:
        if argument.lower() != UPSTREAM:
            raise RouteSyntaxError(f"unknown endpoint '{argument}': expected {UPSTREAM}", position, text)
        return UPSTREAM_ENDPOINT
    if function.lower() != BROKERED_ENDPOINT.lower():
        raise RouteSyntaxError(f"unknown endpoint '{function}': expected {BROKERED_ENDPOINT}", position, text)
    # edgeHub trims, drops one leading and one trailing '/', splits into 4 parts; it does
    # not check the words "modules" and "inputs" (we do) nor empty names (we do).
    address = argument.strip()
    address = address.removeprefix("/").removesuffix("/")
    parts = address.split("/")
    if len(parts) != 4 or parts[0].lower() != "modules" or parts[2].lower() != "inputs" or not all(parts):
        raise RouteSyntaxError(
            f"invalid {BROKERED_ENDPOINT} address '{argument}': expected /modules/<module>/inputs/<input>",
            position,
            text,
        )
    return RouteEndpoint.module_input(parts[1], parts[3])


def compile_routes(specs: Sequence[RouteSpec]) -> list[Route]:
    """Compile configured routes; raises ConfigError with one (``routes.<name>``, reason)
    per bad route, all of them at once."""
    routes: list[Route] = []
    problems: list[tuple[str, str]] = []
    for spec in specs:
        location = f"routes.{spec.name}"
        priority, ttl = spec.priority, spec.time_to_live_secs
        # schema 1.1: priority 0-9 (schema 1.0 routes carry DEFAULT_PRIORITY), ttl >= 0
        if type(priority) is not int or not (0 <= priority <= MAX_PRIORITY or priority == DEFAULT_PRIORITY):
            problems.append((location, f"priority must be 0-{MAX_PRIORITY}, got {priority!r}"))
        if type(ttl) is not int or ttl < 0:
            problems.append((location, f"timeToLiveSecs must be an integer >= 0, got {ttl!r}"))
        try:
            route = parse_route(
                spec.text, name=spec.name, priority=spec.priority, time_to_live_secs=spec.time_to_live_secs
            )
        except RouteSyntaxError as error:
            problems.append((location, str(error)))
            continue
        routes.append(route)
    if problems:
        raise ConfigError(problems)
    return routes
