"""The IoT Hub MQTT topics of twins and direct methods, in both dialects a hub meets.

Pure strings, shared by the MQTT head and the upstream link; no I/O, no authorization (the
caller decides whom an indirect topic's ids may stand for).

Own dialect, a client speaking for itself (IoT Hub MQTT support, "Retrieving a device twin's
properties", "Update device twin's reported properties", "Receiving desired properties update
notifications", "Respond to a direct method")::

    $iothub/twin/GET/?$rid={rid}                          client → hub
    $iothub/twin/PATCH/properties/reported/?$rid={rid}    client → hub
    $iothub/twin/res/{status}/?$rid={rid}[&$version={v}]  hub → client
    $iothub/twin/PATCH/properties/desired/?$version={v}   hub → client
    $iothub/methods/POST/{name}/?$rid={rid}               hub → client
    $iothub/methods/res/{status}/?$rid={rid}              client → hub

Indirect dialect, a child edge hub speaking for a device or module below it (edgeHub's
nested-hub bridge, MqttBrokerAdapter TwinHandler / DirectMethodHandler): the identity follows
``$iothub/`` and the operation names are lower case::

    $iothub/{d}[/{m}]/twin/get/?$rid={rid}        $iothub/{d}[/{m}]/twin/res/{status}/?$rid={rid}
    $iothub/{d}[/{m}]/twin/reported/?$rid={rid}   $iothub/{d}[/{m}]/twin/desired/?$version={v}
    $iothub/{d}[/{m}]/methods/post/{name}/?$rid={rid}
    $iothub/{d}[/{m}]/methods/res/{status}/?$rid={rid}
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, quote, unquote

from edgehub.message import Identity

PREFIX: Final = "$iothub/"


class Operation(enum.Enum):
    """What a client publishes on a twin or method topic."""

    GET_TWIN = "get"
    PATCH_REPORTED = "reported"
    METHOD_RESPONSE = "method-response"


class Feed(enum.Enum):
    """What a client subscribes to on a twin or method topic filter."""

    TWIN_RESPONSES = "twin-responses"
    DESIRED_PATCHES = "desired-patches"
    METHOD_REQUESTS = "method-requests"


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """A parsed client publish: the operation, for whom (None: the publisher itself), its request
    id and, for a method response, the status the client answered with."""

    operation: Operation
    target: Identity | None
    rid: str
    status: int = 0


@dataclass(frozen=True, slots=True)
class ServiceFeed:
    """A parsed subscription: which feed, for whom (None: the subscriber itself)."""

    feed: Feed
    target: Identity | None


def _split(topic: str) -> tuple[list[str], dict[str, str]] | None:
    if not topic.startswith(PREFIX):
        return None
    path, _, query = topic[len(PREFIX):].partition("?")
    levels = path.split("/")
    if levels and levels[-1] == "":
        levels.pop()
    return levels, dict(parse_qsl(query, keep_blank_values=True))


def _target(ids: list[str]) -> Identity | None:
    if len(ids) not in (1, 2) or any(not i or i in ("+", "#") for i in ids):
        return None
    return Identity(unquote(ids[0]), unquote(ids[1]) if len(ids) == 2 else None)


def parse_request(topic: str) -> ServiceRequest | None:
    """The twin or method operation a client publishes on ``topic``; None when it is none."""
    split = _split(topic)
    if split is None:
        return None
    levels, query = split
    rid = query.get("$rid")
    if rid is None:
        return None
    own = _parse_own(levels, rid)
    return own if own is not None else _parse_indirect(levels, rid)


def _parse_own(levels: list[str], rid: str) -> ServiceRequest | None:
    if levels == ["twin", "GET"]:
        return ServiceRequest(Operation.GET_TWIN, None, rid)
    if levels == ["twin", "PATCH", "properties", "reported"]:
        return ServiceRequest(Operation.PATCH_REPORTED, None, rid)
    if len(levels) == 3 and levels[:2] == ["methods", "res"] and levels[2].isdigit():
        return ServiceRequest(Operation.METHOD_RESPONSE, None, rid, int(levels[2]))
    return None


def _parse_indirect(levels: list[str], rid: str) -> ServiceRequest | None:
    for cut in (1, 2):
        target = _target(levels[:cut])
        rest = levels[cut:]
        if target is None:
            continue
        if rest == ["twin", "get"]:
            return ServiceRequest(Operation.GET_TWIN, target, rid)
        if rest == ["twin", "reported"]:
            return ServiceRequest(Operation.PATCH_REPORTED, target, rid)
        if len(rest) == 3 and rest[:2] == ["methods", "res"] and rest[2].isdigit():
            return ServiceRequest(Operation.METHOD_RESPONSE, target, rid, int(rest[2]))
    return None


_OWN_FEEDS: Final[dict[tuple[str, ...], Feed]] = {
    ("twin", "res", "#"): Feed.TWIN_RESPONSES,
    ("twin", "PATCH", "properties", "desired", "#"): Feed.DESIRED_PATCHES,
    ("methods", "POST", "#"): Feed.METHOD_REQUESTS,
}
_INDIRECT_FEEDS: Final[dict[tuple[str, ...], Feed]] = {
    ("twin", "res", "#"): Feed.TWIN_RESPONSES,
    ("twin", "desired", "#"): Feed.DESIRED_PATCHES,
    ("methods", "post", "#"): Feed.METHOD_REQUESTS,
}


def parse_feed(topic_filter: str) -> ServiceFeed | None:
    """The feed a subscription to ``topic_filter`` asks for (as the SDKs subscribe: ``…/#``)."""
    if not topic_filter.startswith(PREFIX):
        return None
    levels = tuple(topic_filter[len(PREFIX):].split("/"))
    own = _OWN_FEEDS.get(levels)
    if own is not None:
        return ServiceFeed(own, None)
    for cut in (1, 2):
        target = _target(list(levels[:cut]))
        feed = _INDIRECT_FEEDS.get(levels[cut:])
        if target is not None and feed is not None:
            return ServiceFeed(feed, target)
    return None


def _ids(target: Identity) -> str:
    device = quote(target.device_id, safe="")
    return f"{device}/{quote(target.module_id, safe='')}" if target.module_id else device


def twin_response_topic(
    status: int, rid: str, target: Identity | None = None, version: int | None = None,
) -> str:
    """Where the answer to a twin GET or reported PATCH goes (204 carries the new ``$version``)."""
    tail = f"?$rid={quote(rid, safe='')}" + (f"&$version={version}" if version is not None else "")
    if target is None:
        return f"{PREFIX}twin/res/{status}/{tail}"
    return f"{PREFIX}{_ids(target)}/twin/res/{status}/{tail}"


def desired_patch_topic(version: int, target: Identity | None = None) -> str:
    """Where a desired-properties patch goes."""
    if target is None:
        return f"{PREFIX}twin/PATCH/properties/desired/?$version={version}"
    return f"{PREFIX}{_ids(target)}/twin/desired/?$version={version}"


def method_request_topic(name: str, rid: str, target: Identity | None = None) -> str:
    """Where a direct-method call goes to the client that serves ``target``."""
    method = quote(name, safe="")
    if target is None:
        return f"{PREFIX}methods/POST/{method}/?$rid={quote(rid, safe='')}"
    return f"{PREFIX}{_ids(target)}/methods/post/{method}/?$rid={quote(rid, safe='')}"


def method_response_topic(status: int, rid: str, target: Identity | None = None) -> str:
    """Where a client publishes its answer to a method call."""
    if target is None:
        return f"{PREFIX}methods/res/{status}/?$rid={quote(rid, safe='')}"
    return f"{PREFIX}{_ids(target)}/methods/res/{status}/?$rid={quote(rid, safe='')}"


def twin_request_topic(operation: Operation, rid: str, target: Identity | None = None) -> str:
    """Where a client publishes a twin GET or reported PATCH (the upstream link uses this)."""
    quoted = quote(rid, safe="")
    if target is None:
        what = "GET" if operation is Operation.GET_TWIN else "PATCH/properties/reported"
        return f"{PREFIX}twin/{what}/?$rid={quoted}"
    what = "get" if operation is Operation.GET_TWIN else "reported"
    return f"{PREFIX}{_ids(target)}/twin/{what}/?$rid={quoted}"


def feed_filter(feed: Feed, target: Identity | None = None) -> str:
    """The filter a client subscribes with to get ``feed`` (for ``target``, indirect)."""
    if target is None:
        own = {v: k for k, v in _OWN_FEEDS.items()}[feed]
        return PREFIX + "/".join(own)
    indirect = {v: k for k, v in _INDIRECT_FEEDS.items()}[feed]
    return f"{PREFIX}{_ids(target)}/" + "/".join(indirect)


def parse_response(topic: str) -> tuple[Feed, Identity | None, str, int] | None:
    """What the hub sends back, as a client reads it: (feed, target, rid or version, status).

    For TWIN_RESPONSES the third item is the rid and the fourth the status; for DESIRED_PATCHES the
    third is the version as text and the status 0; for METHOD_REQUESTS the third is the rid and
    the method name is in the topic (see ``method_name``)."""
    split = _split(topic)
    if split is None:
        return None
    levels, query = split
    for cut in (0, 1, 2):
        target = _target(levels[:cut]) if cut else None
        if cut and target is None:
            continue
        rest = levels[cut:]
        if len(rest) == 3 and rest[:2] == ["twin", "res"] and rest[2].isdigit() and "$rid" in query:
            return Feed.TWIN_RESPONSES, target, query["$rid"], int(rest[2])
        if rest in (["twin", "PATCH", "properties", "desired"], ["twin", "desired"]) and "$version" in query:
            return Feed.DESIRED_PATCHES, target, query["$version"], 0
        if len(rest) == 3 and rest[0] == "methods" and rest[1] in ("POST", "post") and "$rid" in query:
            return Feed.METHOD_REQUESTS, target, query["$rid"], 0
    return None


def method_name(topic: str) -> str | None:
    """The method name of a method request topic in either dialect."""
    split = _split(topic)
    if split is None:
        return None
    levels, _ = split
    for i, level in enumerate(levels[:-1]):
        if level == "methods" and levels[i + 1] in ("POST", "post") and i + 2 < len(levels):
            return unquote(levels[i + 2])
    return None
