"""The route language of edgeHub: parse routes, compile their conditions, match messages.

Sans-I/O: pure functions and values only; no asyncio, sockets or storage here. The condition
compiler (edgehub.routing.condition, its functions and operators) is loaded by the first route
with a WHERE clause only.
"""

from edgehub.routing.route import Route, RouteEndpoint, RouteSource, compile_routes, parse_route
from edgehub.routing.router import RouteMatch, Router
from edgehub.routing.spec import RouteSpec

__all__ = [
    "Route",
    "RouteEndpoint",
    "RouteMatch",
    "RouteSource",
    "RouteSpec",
    "Router",
    "compile_routes",
    "parse_route",
]
