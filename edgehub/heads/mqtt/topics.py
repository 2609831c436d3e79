"""The IoT Hub MQTT topic scheme: telemetry topics with URL-encoded property bags, delivery topics, filters.

Pure string work: no I/O, no session state, no authentication (the caller supplies the identity).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import quote, unquote

from edgehub.message import EMPTY_PROPERTIES, Identity, Message, SystemProperty

EXPIRY_TIME_UTC: Final = "absolute-expiry-time"
"""System property of ``$.exp``, named as edgeHub stores it (SystemProperties.ExpiryTimeUtc)."""

# Property bag keys on the wire (the IoT Hub device SDKs' IotHubWirePropertyNames; edgeHub
# SystemProperties.IncomingSystemPropertiesMap) and the system property each one sets.
INCOMING_SYSTEM_KEYS: Final[Mapping[str, str]] = MappingProxyType({
    "$.mid": SystemProperty.MESSAGE_ID,
    "$.cid": SystemProperty.CORRELATION_ID,
    "$.uid": SystemProperty.USER_ID,
    "$.to": SystemProperty.TO,
    "$.ct": SystemProperty.CONTENT_TYPE,
    "$.ce": SystemProperty.CONTENT_ENCODING,
    "$.on": SystemProperty.OUTPUT_NAME,
    "$.ctime": SystemProperty.CREATION_TIME,
    "$.schema": SystemProperty.MESSAGE_SCHEMA,
    "$.exp": EXPIRY_TIME_UTC,
})
SPOOFABLE_KEYS: Final = frozenset({"$.cdid", "$.cmid"})
"""Connection ids come from the authenticated identity, never from what a client writes in its topic."""

# What a delivered message carries back in its topic (edgeHub OutgoingSystemPropertiesMap, plus the
# ids and times IoT Hub puts on cloud-to-device messages).
OUTGOING_SYSTEM_KEYS: Final[tuple[tuple[str, str], ...]] = (
    (SystemProperty.MESSAGE_ID, "$.mid"),
    (SystemProperty.CORRELATION_ID, "$.cid"),
    (SystemProperty.USER_ID, "$.uid"),
    (SystemProperty.TO, "$.to"),
    (SystemProperty.CONTENT_TYPE, "$.ct"),
    (SystemProperty.CONTENT_ENCODING, "$.ce"),
    (SystemProperty.CONNECTION_DEVICE_ID, "$.cdid"),
    (SystemProperty.CONNECTION_MODULE_ID, "$.cmid"),
    (SystemProperty.MESSAGE_SCHEMA, "$.schema"),
    (SystemProperty.CREATION_TIME, "$.ctime"),
    (EXPIRY_TIME_UTC, "$.exp"),
)


_OUTGOING_QUOTED: Final = tuple((name, quote(key, safe="")) for name, key in OUTGOING_SYSTEM_KEYS)
"""Keys as IoT Hub writes them on cloud-to-device topics: ``%24.mid``."""


@dataclass(frozen=True, slots=True)
class TelemetryTopic:
    """A parsed ``devices/{d}[/modules/{m}]/messages/events/{bag}`` topic.

    ``system_properties`` hold what the bag says (message id, content type, output
    name...); the connection ids are added by ``to_message`` from the identity.
    """

    device_id: str
    module_id: str | None
    properties: Mapping[str, str]
    system_properties: Mapping[str, str]

    def sent_by(self, identity: Identity) -> bool:
        """Whether the topic names ``identity`` itself (DESIGN §4: publish only as yourself)."""
        return self.device_id == identity.device_id and self.module_id == identity.module_id


def parse_property_bag(bag: str) -> tuple[dict[str, str], dict[str, str]]:
    """(application properties, system properties) of a URL-encoded ``k=v&k2=v2`` bag.

    Percent-decoding only: ``+`` stays ``+`` (the SDKs encode with quote, not quote_plus).
    A key without ``=`` is an application property with an empty value; a system key
    without a value is ignored, as the Azure IoT SDKs do.
    """
    if bag.startswith("?"):
        bag = bag[1:]
    app: dict[str, str] = {}
    system: dict[str, str] = {}
    for pair in bag.split("&"):
        if not pair:
            continue
        raw_key, has_value, raw_value = pair.partition("=")
        key = unquote(raw_key)
        value = unquote(raw_value)
        system_name = INCOMING_SYSTEM_KEYS.get(key)
        if system_name is not None:
            if has_value:
                system[system_name] = value
        elif key not in SPOOFABLE_KEYS:
            app[key] = value
    return app, system


def parse_telemetry_topic(topic: str) -> TelemetryTopic | None:
    """The telemetry topic's parts, or None when ``topic`` is not an IoT Hub telemetry topic."""
    if not topic.startswith("devices/"):
        return None
    parts = topic.split("/")
    if len(parts) >= 4 and parts[2] == "messages" and parts[3] == "events":
        device, module, rest = parts[1], None, parts[4:]
    elif len(parts) >= 6 and parts[2] == "modules" and parts[4] == "messages" and parts[5] == "events":
        device, module, rest = parts[1], unquote(parts[3]), parts[6:]
    else:
        return None
    if not device or module == "":
        return None
    bag = "/".join(rest)
    if not bag or bag == "?":
        return TelemetryTopic(unquote(device), module, EMPTY_PROPERTIES, EMPTY_PROPERTIES)
    app, system = parse_property_bag(bag)
    return TelemetryTopic(
        unquote(device), module,
        MappingProxyType(app) if app else EMPTY_PROPERTIES,
        MappingProxyType(system) if system else EMPTY_PROPERTIES,
    )


def connection_properties(
    identity: Identity, system: Mapping[str, str] = EMPTY_PROPERTIES,
) -> Mapping[str, str]:
    """``system`` plus connectionDeviceId / connectionModuleId of the authenticated ``identity``."""
    merged = dict(system)
    merged[SystemProperty.CONNECTION_DEVICE_ID] = identity.device_id
    if identity.module_id:
        merged[SystemProperty.CONNECTION_MODULE_ID] = identity.module_id
    return MappingProxyType(merged)


class TelemetryParser:
    """Turns (topic, payload) from one identity into Messages, caching repeated topics.

    Topics without per-message values (no bag, or a fixed bag like ``$.on=out1``) repeat
    on every publish; their parse, the ``allowed`` policy check and the property mappings
    are done once and shared by the messages (they are read-only mappings).
    """

    __slots__ = ("_allowed", "_cache", "_max_entries", "identity")

    def __init__(
        self, identity: Identity, allowed: Callable[[str], bool] | None = None, max_entries: int = 256,
    ) -> None:
        self.identity = identity
        self._allowed = allowed
        self._max_entries = max_entries
        self._cache: dict[str, tuple[Mapping[str, str], Mapping[str, str]] | None] = {}

    @property
    def cached_topics(self) -> int:
        return len(self._cache)

    def properties_of(self, topic: str) -> tuple[Mapping[str, str], Mapping[str, str]] | None:
        """(application, system) properties for a publish on ``topic`` by this identity, or None
        when the topic is not a telemetry topic of this very identity or ``allowed`` refuses it."""
        cache = self._cache
        if topic in cache:
            return cache[topic]
        parsed = parse_telemetry_topic(topic)
        entry = None
        allowed = self._allowed
        if parsed is not None and parsed.sent_by(self.identity) and (allowed is None or allowed(topic)):
            entry = (parsed.properties, connection_properties(self.identity, parsed.system_properties))
        if len(cache) >= self._max_entries:
            cache.clear()  # a stream of unique bags ($.mid per message) must not grow the cache
        cache[topic] = entry
        return entry

    def message(self, topic: str, payload: bytes) -> Message | None:
        entry = self.properties_of(topic)
        if entry is None:
            return None
        return Message(payload, entry[0], entry[1])


# --- outgoing topics ---------------------------------------------------------------------------


def _quote(text: str) -> str:
    return quote(text, safe="")


def encode_property_bag(message: Message) -> str:
    """The URL-encoded bag of a delivered message: its system properties as ``$.`` keys, then
    its application properties."""
    system = message.system_properties
    pairs = [f"{key}={_quote(system[name])}" for name, key in _OUTGOING_QUOTED if name in system]
    pairs.extend(f"{_quote(key)}={_quote(value)}" for key, value in message.properties.items())
    return "&".join(pairs)


def input_topic_prefix(identity: Identity) -> str:
    """``devices/{d}/modules/{m}/inputs/`` of a module identity."""
    return f"devices/{_quote(identity.device_id)}/modules/{_quote(identity.module_id or '')}/inputs/"


def devicebound_topic_prefix(identity: Identity) -> str:
    """``devices/{d}/messages/devicebound/`` (cloud-to-device messages of the device)."""
    return f"devices/{_quote(identity.device_id)}/messages/devicebound/"


def delivery_topic(identity: Identity, input_name: str | None, message: Message) -> str:
    """Where ``message`` goes: the module input ``input_name`` or, when None, devicebound."""
    if input_name is None:
        return devicebound_topic_prefix(identity) + encode_property_bag(message)
    return f"{input_topic_prefix(identity)}{_quote(input_name)}/{encode_property_bag(message)}"


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
    """A granted subscription that can receive the identity's inputs or devicebound messages."""

    __slots__ = ("_prefix", "topic_filter")

    def __init__(self, topic_filter: str) -> None:
        self.topic_filter = topic_filter
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


def delivery_filter(identity: Identity, topic_filter: str) -> DeliveryFilter | None:
    """A DeliveryFilter when ``topic_filter`` selects the identity's own delivery topics
    (module inputs for a module, devicebound for a device), else None."""
    prefix = input_topic_prefix(identity) if identity.module_id else devicebound_topic_prefix(identity)
    return DeliveryFilter(topic_filter) if _covers(topic_filter, prefix) else None
