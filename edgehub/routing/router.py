"""Decides where a message goes: every route whose source and condition match, one match per endpoint.

Owns route selection (edgeHub Routing.Core Evaluator); it must not store or send messages,
and it keeps no per-message state beyond the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

from edgehub.message import Message, SystemProperty
from edgehub.routing.route import (
    MESSAGE_TYPE,
    MQTT_TOPIC,
    TOPIC_SOURCE,
    TWIN_CHANGE_MESSAGE_TYPE,
    TWIN_CHANGE_SOURCE,
    Route,
    compile_routes,
    message_source,
)
from edgehub.routing.values import MessageView

if TYPE_CHECKING:
    from edgehub.routing.condition import Evaluator

__all__ = ["RouteMatch", "Router", "compile_routes"]

MAX_CACHED_SOURCES: Final = 1024
"""Plans cached per (connectionModuleId, outputName); output names come from clients, so bounded."""

_RouteKey = tuple[int, int]
"""(priority, position of the route): lower wins; on equal priority the earlier route."""


class RouteMatch(NamedTuple):
    """A message must go to ``endpoint`` (``$upstream`` or ``/modules/{m}/inputs/{i}``).

    A NamedTuple: the hub keys its per-message plan cache on tuples of these, and a tuple hashes in
    C where a frozen dataclass runs its generated Python ``__hash__``."""

    endpoint: str
    priority: int
    time_to_live_secs: int


@dataclass(frozen=True, slots=True)
class _SourcePlan:
    """The routes that can match messages of one source, prepared once."""

    fixed: tuple[RouteMatch, ...]
    """Matches of routes without condition: the answer when no conditional route matches."""
    fixed_keys: dict[str, tuple[_RouteKey, RouteMatch]]
    conditional: tuple[tuple[Evaluator, RouteMatch, _RouteKey], ...]
    """Conditional routes that could still win their endpoint, in route order."""
    endpoints: tuple[str, ...]
    """Every endpoint this plan can produce, in output order."""


class Router:
    """Routes messages by a fixed set of compiled routes (build a new Router on config change).

    Several routes to one endpoint give one RouteMatch with the lowest priority number
    and that route's time to live (edgeHub), the earliest route on a tie. Matches come in
    the order their endpoints first appear in the route list.
    """

    def __init__(self, routes: Sequence[Route], max_cached_sources: int = MAX_CACHED_SOURCES) -> None:
        self.routes = tuple(routes)
        self._max_cached_sources = max_cached_sources
        self._rank: dict[str, int] = {}
        self._live: list[tuple[int, Route, Evaluator | None]] = []
        for index, route in enumerate(self.routes):
            self._rank.setdefault(route.endpoint.address, index)
            condition = route.condition
            if condition is None:
                self._live.append((index, route, None))
            elif not condition.is_constant:
                self._live.append((index, route, condition.evaluator))
            elif condition.evaluator(_NO_VIEW) is True:  # WHERE true: decided by source alone
                self._live.append((index, route, None))
            # a condition that is never true (WHERE false, 1 = 2) drops the route
        self._plans: dict[tuple[str | None, str | None], _SourcePlan] = {}

    @property
    def cached_sources(self) -> int:
        """How many (module, output) plans are cached now (at most ``max_cached_sources``)."""
        return len(self._plans)

    def takes_topic(self, topic: str) -> bool:
        """Whether some route's ``/topics/{filter}`` source matches ``topic`` (its condition aside)."""
        return bool(self._plan_of_topic(topic).endpoints)

    def match(self, message: Message) -> tuple[RouteMatch, ...]:
        system = message.system_properties
        topic = system.get(MQTT_TOPIC)
        if topic is not None:
            return self._decide(self._plan_of_topic(topic), message)
        message_type = system.get(MESSAGE_TYPE)
        module_id: str | None
        output_name: str | None
        if message_type is not None and message_type.lower() == _TWIN_CHANGE_TYPE:
            # edgeHub: a twin change notification's source is /twinChangeNotifications, though
            # it carries connectionModuleId $edgeHub; (None, source) is no device's key.
            module_id, output_name = None, TWIN_CHANGE_SOURCE
        else:
            module_id = system.get(SystemProperty.CONNECTION_MODULE_ID) or None
            # edgeHub: a device message's source is /messages whatever its outputName says
            output_name = (system.get(SystemProperty.OUTPUT_NAME) or None) if module_id else None
        plan = self._plans.get((module_id, output_name))
        if plan is None:
            plan = self._plan(module_id, output_name)
        return self._decide(plan, message)

    def _decide(self, plan: _SourcePlan, message: Message) -> tuple[RouteMatch, ...]:
        if not plan.conditional:
            return plan.fixed
        view = MessageView(message)
        chosen: dict[str, tuple[_RouteKey, RouteMatch]] | None = None
        for evaluate, route_match, key in plan.conditional:
            if evaluate(view) is True:
                if chosen is None:
                    chosen = dict(plan.fixed_keys)
                current = chosen.get(route_match.endpoint)
                if current is None or key < current[0]:
                    chosen[route_match.endpoint] = (key, route_match)
        if chosen is None:
            return plan.fixed
        return tuple(chosen[endpoint][1] for endpoint in plan.endpoints if endpoint in chosen)

    def _plan_of_topic(self, topic: str) -> _SourcePlan:
        key = (TOPIC_SOURCE, topic)  # no module id is "/topics/": no clash with the other keys
        plan = self._plans.get(key)
        return plan if plan is not None else self._plan(None, None, topic)

    def _plan(self, module_id: str | None, output_name: str | None, topic: str | None = None) -> _SourcePlan:
        fixed: dict[str, tuple[_RouteKey, RouteMatch]] = {}
        conditional: list[tuple[Evaluator, RouteMatch, _RouteKey]] = []
        if module_id is None and output_name == TWIN_CHANGE_SOURCE:
            source = message_source(None, None, twin_change=True)
        else:
            source = message_source(module_id, output_name)
        for index, route, evaluate in self._live:
            if topic is not None:
                if not route.source.matches_topic(topic):
                    continue
            elif not route.source.matches_source(source):
                continue
            endpoint = route.endpoint.address
            key = (route.priority, index)
            route_match = RouteMatch(endpoint, route.priority, route.time_to_live_secs)
            if evaluate is not None:
                conditional.append((evaluate, route_match, key))
            elif endpoint not in fixed or key < fixed[endpoint][0]:
                fixed[endpoint] = (key, route_match)
        # A conditional route cannot beat an unconditional one with a lower key.
        useful = tuple(
            candidate
            for candidate in conditional
            if candidate[1].endpoint not in fixed or candidate[2] < fixed[candidate[1].endpoint][0]
        )
        reachable = {*fixed, *(candidate[1].endpoint for candidate in useful)}
        endpoints = sorted(reachable, key=self._rank.__getitem__)
        plan = _SourcePlan(
            fixed=tuple(fixed[endpoint][1] for endpoint in endpoints if endpoint in fixed),
            fixed_keys=fixed,
            conditional=useful,
            endpoints=tuple(endpoints),
        )
        if len(self._plans) >= self._max_cached_sources:  # rebuilt on demand; a flood of names cannot grow it
            self._plans.clear()
        self._plans[(module_id, output_name) if topic is None else (TOPIC_SOURCE, topic)] = plan
        return plan


_TWIN_CHANGE_TYPE: Final = TWIN_CHANGE_MESSAGE_TYPE.lower()

_NO_VIEW: Final = MessageView(Message(b""))
"""Evaluates constant conditions, which read nothing from the message."""
