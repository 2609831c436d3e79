"""The MQTT head's use of the IoT Hub topic scheme: who a client's publish is from, what it may receive.

Pure string work over edgehub.iothub.topics (which owns the topic shapes and property bags):
per-connection telemetry caches, topic filters, delivery filters; no I/O, no session state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from edgehub.auth.authorize import acts_for_others
from edgehub.broker.topics import parse_shared
from edgehub.iothub.topics import (
    devicebound_topic_prefix,
    input_topic_prefix,
    parse_telemetry_topic,
)
from edgehub.message import EMPTY_PROPERTIES, Identity, Message, SystemProperty

IOT_HUB_FIRST_LEVELS: Final = frozenset({"devices", "$iothub"})
"""First topic levels of the IoT Hub scheme; with generic topics on, every other topic is generic."""


def is_generic_filter(topic_filter: str) -> bool:
    """Whether a filter belongs to the generic tree: anything but ``devices/…`` and ``$iothub/…``
    (those keep the IoT Hub rules), a shared subscription by the filter it shares."""
    shared = parse_shared(topic_filter)
    first = (shared.topic_filter if shared else topic_filter).split("/", 1)[0]
    return first not in IOT_HUB_FIRST_LEVELS


def connection_properties(
    sender: Identity, system: Mapping[str, str] = EMPTY_PROPERTIES,
) -> Mapping[str, str]:
    """``system`` plus connectionDeviceId / connectionModuleId of ``sender``."""
    merged = dict(system)
    merged[SystemProperty.CONNECTION_DEVICE_ID] = sender.device_id
    if sender.module_id:
        merged[SystemProperty.CONNECTION_MODULE_ID] = sender.module_id
    return MappingProxyType(merged)


class TelemetryParser:
    """Turns (topic, payload) from one identity into Messages, caching repeated topics.

    The sender of a message is the authenticated identity, and a client may publish only on its
    own telemetry topics (docs/architecture.md §4; edgeHub does not check this). A child edge hub (module
    ``$edgeHub``) publishes for the devices and modules below it, as IoT Edge nested hubs do: its
    messages' connection ids come from the topic. A ``$.cdid``/``$.cmid`` in the bag never counts.

    Topics without per-message values (no bag, or a fixed bag like ``$.on=out1``) repeat
    on every publish; their parse, the ``allowed`` policy check and the property mappings
    are done once and shared by the messages (they are read-only mappings).
    """

    __slots__ = ("_acts_for_others", "_allowed", "_cache", "_max_entries", "identity")

    def __init__(
        self, identity: Identity, allowed: Callable[[str], bool] | None = None, max_entries: int = 256,
    ) -> None:
        self.identity = identity
        self._allowed = allowed
        self._max_entries = max_entries
        self._acts_for_others = acts_for_others(identity)
        self._cache: dict[str, tuple[Mapping[str, str], Mapping[str, str]] | None] = {}

    @property
    def cached_topics(self) -> int:
        return len(self._cache)

    def properties_of(self, topic: str) -> tuple[Mapping[str, str], Mapping[str, str]] | None:
        """(application, system) properties for a publish on ``topic`` by this identity, or None
        when the topic is not a telemetry topic this identity may send on or ``allowed`` refuses it."""
        cache = self._cache
        if topic in cache:
            return cache[topic]
        entry = None
        parsed = parse_telemetry_topic(topic)
        if parsed is not None and (self._allowed is None or self._allowed(topic)):
            if parsed.names(self.identity):
                entry = (parsed.properties, connection_properties(self.identity, parsed.system_properties))
            elif self._acts_for_others:
                entry = (parsed.properties, connection_properties(parsed.sender, parsed.system_properties))
        if len(cache) >= self._max_entries:
            cache.clear()  # a stream of unique bags ($.mid per message) must not grow the cache
        cache[topic] = entry
        return entry

    def message(self, topic: str, payload: bytes) -> Message | None:
        entry = self.properties_of(topic)
        if entry is None:
            return None
        return Message(payload, entry[0], entry[1])


# --- topic filters (MQTT 5 §4.7) ---------------------------------------------------------------


def is_valid_filter(topic_filter: str) -> bool:
    """[MQTT-4.7.1-1..3], [MQTT-4.7.3-1]: non-empty, ``#`` last and alone, ``+`` a whole level."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def filter_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 5 §4.7; ``$`` topics need a literal first level)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


class DeliveryFilter:
    """A granted subscription that can receive the identity's inputs or devicebound messages, and the
    QoS granted to it (0 or 1): deliveries go out at the highest QoS of the filters matching them."""

    __slots__ = ("_prefix", "qos", "topic_filter")

    def __init__(self, topic_filter: str, qos: int = 1) -> None:
        self.topic_filter = topic_filter
        self.qos = qos
        simple = topic_filter.endswith("/#") and "+" not in topic_filter
        self._prefix = topic_filter[:-1] if simple else None

    def matches(self, topic: str) -> bool:
        if self._prefix is not None:
            return topic.startswith(self._prefix) or topic == self._prefix[:-1]
        return filter_matches(self.topic_filter, topic)


def _covers(topic_filter: str, prefix: str) -> bool:
    """Whether some topic under ``prefix`` (ending in ``/``) can match ``topic_filter``."""
    f_levels = topic_filter.split("/")
    p_levels = prefix.split("/")[:-1]
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(p_levels):
            return True  # the filter goes deeper than the prefix: it selects some of its topics
        if level not in ("+", p_levels[i]):
            return False
    return False


def delivery_filter(identity: Identity, topic_filter: str, qos: int = 1) -> DeliveryFilter | None:
    """A DeliveryFilter granted ``qos`` when ``topic_filter`` selects the identity's own delivery
    topics (module inputs for a module, devicebound for a device), else None."""
    prefix = input_topic_prefix(identity) if identity.module_id else devicebound_topic_prefix(identity)
    return DeliveryFilter(topic_filter, qos) if _covers(topic_filter, prefix) else None
