"""``storeAndForwardConfiguration`` of edgeHub's desired properties: time to live, the store limit
and the drain order (global and by endpoint), each problem reported with its JSON location.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from edgehub.config_json import (
    Report,
    child_path,
    json_integer,
    json_object,
    kind_of,
    unknown_keys,
)
from edgehub.store.base import DrainOrder

DEFAULT_TIME_TO_LIVE_SECS: Final = 7200
"""edgeHub's default ``storeAndForwardConfiguration.timeToLiveSecs``."""

_INT32_MAX: Final = 2**31 - 1
_INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class StoreAndForward:
    time_to_live_secs: int = DEFAULT_TIME_TO_LIVE_SECS
    max_size_bytes: int | None = None
    drain_order: DrainOrder = DrainOrder.FIFO
    drain_order_by_endpoint: Mapping[str, DrainOrder] = field(default_factory=dict)


_STORE_AND_FORWARD_KEYS: Final = (
    "timeToLiveSecs", "storeLimits", "maxStorageSpaceBytes", "drainOrder", "drainOrderByEndpoint",
)


def parse_store_and_forward(value: object, path: str, report: Report) -> StoreAndForward:
    """``timeToLiveSecs`` (default 7200), ``storeLimits.maxSizeBytes`` (default: no limit),
    ``drainOrder`` (default fifo) and ``drainOrderByEndpoint`` (default: none)."""
    if value is None:
        return StoreAndForward()
    obj = json_object(value, path, report)
    if obj is None:
        return StoreAndForward()
    unknown_keys(obj, path, _STORE_AND_FORWARD_KEYS, report)
    ttl = json_integer(
        obj.get("timeToLiveSecs", DEFAULT_TIME_TO_LIVE_SECS),
        child_path(path, "timeToLiveSecs"),
        report,
        low=1,
        high=_INT32_MAX,
        expected="a positive number of seconds (edgeHub's negative 'forever' is refused; give a big one)",
    )
    max_size = None
    if "storeLimits" in obj:
        max_size = _store_limits(obj["storeLimits"], child_path(path, "storeLimits"), report)
    if "maxStorageSpaceBytes" in obj:
        # edgeHub's earlier name for the same limit.
        legacy_path = child_path(path, "maxStorageSpaceBytes")
        if "storeLimits" in obj:
            report.problem(legacy_path, "give storeLimits.maxSizeBytes only (this is its older name)")
        else:
            max_size = _size_limit(obj["maxStorageSpaceBytes"], legacy_path, report)
    order = DrainOrder.FIFO
    if "drainOrder" in obj:
        order = _drain_order(obj["drainOrder"], child_path(path, "drainOrder"), report) or order
    by_endpoint: dict[str, DrainOrder] = {}
    if "drainOrderByEndpoint" in obj:
        by_endpoint = _drain_orders_by_endpoint(
            obj["drainOrderByEndpoint"], child_path(path, "drainOrderByEndpoint"), report,
        )
    return StoreAndForward(DEFAULT_TIME_TO_LIVE_SECS if ttl is None else ttl, max_size, order, by_endpoint)


_DRAIN_ORDERS: Final = {order.value.lower(): order for order in DrainOrder}
_MODULE_INPUT: Final = re.compile(r"/?modules/([^/]+)/inputs/([^/]+)/?", re.IGNORECASE)
_BROKERED_ENDPOINT: Final = re.compile(r'BrokeredEndpoint\(\s*"([^"]*)"\s*\)', re.IGNORECASE)


def _drain_order(value: object, path: str, report: Report) -> DrainOrder | None:
    """``fifo`` or ``newestFirst`` (any case, as edgeHub reads its enums)."""
    order = _DRAIN_ORDERS.get(value.strip().lower()) if isinstance(value, str) else None
    if order is None:
        report.problem(path, f"must be \"fifo\" or \"newestFirst\" (got {kind_of(value)})")
    return order


def _drain_orders_by_endpoint(value: object, path: str, report: Report) -> dict[str, DrainOrder]:
    """Endpoint → drain order; an endpoint is ``$upstream`` or a module input, written as
    ``/modules/{m}/inputs/{i}`` or as in a route, ``BrokeredEndpoint("/modules/{m}/inputs/{i}")``."""
    obj = json_object(value, path, report)
    if obj is None:
        return {}
    found: dict[str, DrainOrder] = {}
    for key, entry in obj.items():
        location = child_path(path, key)
        endpoint = _endpoint_name(key)
        if endpoint is None:
            report.problem(
                location, 'unknown endpoint: expected $upstream or /modules/<module>/inputs/<input> '
                '(or BrokeredEndpoint("/modules/<module>/inputs/<input>"))',
            )
            continue
        order = _drain_order(entry, location, report)
        if endpoint in found:
            report.problem(location, f"names the endpoint {endpoint} a second time")
        elif order is not None:
            found[endpoint] = order
    return found


def _endpoint_name(key: str) -> str | None:
    """The name the hub gives the endpoint's queues (as the route parser does), or None."""
    text = key.strip()
    if text.lower() == "$upstream":
        return "$upstream"
    brokered = _BROKERED_ENDPOINT.fullmatch(text)
    module_input = _MODULE_INPUT.fullmatch(brokered.group(1).strip() if brokered else text)
    if module_input is None:
        return None
    return f"/modules/{module_input.group(1)}/inputs/{module_input.group(2)}"


def _store_limits(value: object, path: str, report: Report) -> int | None:
    obj = json_object(value, path, report)
    if obj is None:
        return None
    unknown_keys(obj, path, ("maxSizeBytes",), report)
    if "maxSizeBytes" not in obj:
        report.problem(child_path(path, "maxSizeBytes"), "missing: storeLimits needs maxSizeBytes")
        return None
    return _size_limit(obj["maxSizeBytes"], child_path(path, "maxSizeBytes"), report)


def _size_limit(value: object, path: str, report: Report) -> int | None:
    return json_integer(value, path, report, low=1, high=_INT64_MAX, expected="a positive number of bytes")


