"""A route as configured: name, route text, priority and time to live (schema 1.0/1.1).

Plain data only; parsing and evaluation live in the rest of edgehub.routing.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgehub.message import DEFAULT_PRIORITY


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One entry of ``routes`` in the edgeHub desired properties.

    Schema 1.0 gives only the text (priority DEFAULT_PRIORITY, ttl 0); schema 1.1
    adds ``priority`` 0-9 and ``timeToLiveSecs`` (0 = the global
    ``storeAndForwardConfiguration.timeToLiveSecs``).
    """

    name: str
    text: str
    priority: int = DEFAULT_PRIORITY
    time_to_live_secs: int = 0
