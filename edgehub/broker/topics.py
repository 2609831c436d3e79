"""Topic names and topic filters of the generic broker (MQTT 5 §4.7): validation, shared
subscription syntax, and the one matching rule everything else must agree with.

Pure string work; the trie (edgehub.broker.trie) is the fast matcher, ``filter_matches``
(edgehub.mqtt.topic_filters) the rule it is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from edgehub.mqtt.topic_filters import filter_matches, level_problem

__all__ = ["filter_covers", "filter_matches", "filter_problem", "parse_shared", "topic_name_problem"]

SHARE_PREFIX: Final = "$share/"
MAX_TOPIC_BYTES: Final = 65535
"""[MQTT-4.7.3-3]: a topic name or filter is a UTF-8 string of at most 65535 bytes."""


def topic_name_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be a PUBLISH topic name, or None ([MQTT-3.3.2-2], [MQTT-4.7.3-1/2])."""
    if not topic:
        return "empty topic name"
    if "+" in topic or "#" in topic:
        return "wildcard in a topic name"
    if "\x00" in topic:
        return "U+0000 in a topic name"
    return None


def filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid filter, or None ([MQTT-4.7.1-1..3], [MQTT-4.8.2-1/2])."""
    if not topic_filter:
        return "empty topic filter"
    if "\x00" in topic_filter:
        return "U+0000 in a topic filter"
    shared = parse_shared(topic_filter)
    if topic_filter.startswith(SHARE_PREFIX):
        if shared is None:
            return "a shared subscription needs $share/{group}/{filter} with a group free of + and #"
        topic_filter = shared.topic_filter
    return level_problem(topic_filter)


@dataclass(frozen=True, slots=True)
class SharedFilter:
    """``$share/{group}/{filter}`` (MQTT 5 §4.8.2)."""

    group: str
    topic_filter: str


def parse_shared(topic_filter: str) -> SharedFilter | None:
    """The group and filter of a shared subscription; None when it is not a valid one."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, sep, rest = topic_filter[len(SHARE_PREFIX):].partition("/")
    if not sep or not group or not rest or "+" in group or "#" in group:
        return None  # [MQTT-4.8.2-1], [MQTT-4.8.2-2]
    return SharedFilter(group, rest)


def filter_covers(outer: str, inner: str) -> bool:
    """Whether every topic ``inner`` can match is matched by ``outer`` (ACL checks of a
    subscription): a ``+`` or ``#`` of ``inner`` needs a wildcard at least as wide in ``outer``."""
    o_levels = outer.split("/")
    i_levels = inner.split("/")
    for i, level in enumerate(o_levels):
        if level == "#":
            return not (i == 0 and inner.startswith("$"))
        if i >= len(i_levels):
            return False
        inner_level = i_levels[i]
        if inner_level == "#":
            return False
        if level == "+":
            if i == 0 and inner.startswith("$"):
                return False
            continue
        if level != inner_level:
            return False
    return len(o_levels) == len(i_levels)
