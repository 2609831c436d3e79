"""The MQTT topic filter matching rule (MQTT 5 §4.7), shared by the generic broker and by routes
with the source ``/topics/{filter}``.

One pure function; validation and the trie live in edgehub.broker.
"""

from __future__ import annotations


def filter_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (not a shared one): ``+`` one level, ``#`` the
    parent level and any below; a topic starting with ``$`` is not matched by a filter starting
    with a wildcard [MQTT-4.7.2-1]."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def level_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` breaks the wildcard rules, or None ([MQTT-4.7.1-1..3]; not shared ones)."""
    if not topic_filter:
        return "empty topic filter"
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            return "'#' must be the last level, alone"
        if "+" in level and level != "+":
            return "'+' must fill a whole level"
    return None
