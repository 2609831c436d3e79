"""The IoT Hub MQTT topic scheme: telemetry and delivery topics, their URL-encoded property bags, filters.

The one owner of these shapes for the MQTT head and the upstream link; pure strings over Message values,
no I/O and no authorization (the caller decides who may use which topic, and whom a topic's ids stand for).

Encoding follows azure-iot-device (``mqtt_topic_iothub``) and the Embedded C SDK
(``AZ_IOT_MESSAGE_PROPERTIES_MESSAGE_ID "%24.mid"``), which is also how IoT Hub writes cloud-to-device
topics: every key, value and id is percent-encoded with no safe character (RFC 3986 unreserved
characters stay), so ``$.mid`` is written ``%24.mid`` and a device id ``dev:1`` is ``dev%3A1``. Decoding
takes both spellings: keys are percent-decoded before they are looked up, ids are percent-decoded
(the .NET SDK writes ``$.mid`` and raw ids; ``TelemetryTopic.names`` also accepts a raw id as written).
``+`` is never a space (quote, not quote_plus: the SDKs say so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Final
from urllib.parse import quote, unquote

from edgehub.message import EMPTY_PROPERTIES, Identity, Message, SystemProperty

EXPIRY_TIME_UTC: Final = "absolute-expiry-time"
"""System property of ``$.exp``, named as edgeHub stores it (SystemProperties.ExpiryTimeUtc)."""

WireKeys = tuple[tuple[str, str], ...]
"""(system property, its key as written in a bag) pairs, in the order they are written."""


@lru_cache(maxsize=4096)
def _quote(text: str) -> str:
    # Cached: ids, content types, input and property names repeat on every message.
    return quote(text, safe="")


def _written(pairs: WireKeys) -> WireKeys:
    return tuple((name, _quote(wire)) for name, wire in pairs)


_MESSAGE_KEYS: Final = (
    (SystemProperty.MESSAGE_ID, "$.mid"),
    (SystemProperty.CORRELATION_ID, "$.cid"),
    (SystemProperty.USER_ID, "$.uid"),
    (SystemProperty.TO, "$.to"),
    (SystemProperty.CONTENT_TYPE, "$.ct"),
    (SystemProperty.CONTENT_ENCODING, "$.ce"),
)

TELEMETRY_KEYS: Final = _written((
    *_MESSAGE_KEYS,
    (SystemProperty.OUTPUT_NAME, "$.on"),
    (SystemProperty.CREATION_TIME, "$.ctime"),
    (SystemProperty.MESSAGE_SCHEMA, "$.schema"),
    (EXPIRY_TIME_UTC, "$.exp"),
))
"""What a sender's telemetry bag carries (the SDKs' IotHubWirePropertyNames; edgeHub
IncomingSystemPropertiesMap). No ``$.cdid``/``$.cmid``: the topic itself names the sender."""

DELIVERY_KEYS: Final = _written((
    *_MESSAGE_KEYS,
    (SystemProperty.CONNECTION_DEVICE_ID, "$.cdid"),
    (SystemProperty.CONNECTION_MODULE_ID, "$.cmid"),
    (SystemProperty.MESSAGE_SCHEMA, "$.schema"),
    (SystemProperty.CREATION_TIME, "$.ctime"),
    (EXPIRY_TIME_UTC, "$.exp"),
))
"""What a delivered message (module input, devicebound) carries back: edgeHub
OutgoingSystemPropertiesMap, with the original sender's connection ids."""

SYSTEM_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {unquote(wire): name for name, wire in TELEMETRY_KEYS + DELIVERY_KEYS}
)
"""Decoded wire key (``$.mid``) → system property, for every key either direction writes."""

_CONNECTION_IDS: Final = (SystemProperty.CONNECTION_DEVICE_ID, SystemProperty.CONNECTION_MODULE_ID)


# --- property bags ----------------------------------------------------------------------------


def encode_property_bag(
    properties: Mapping[str, str], system_properties: Mapping[str, str], keys: WireKeys = TELEMETRY_KEYS,
) -> str:
    """``%24.mid=…&%24.ct=…&key=value``: the system properties ``keys`` names, then the application ones.

    Everything is percent-encoded, so ``&``, ``=``, ``/``, ``#`` and ``+`` inside keys or
    values can break neither the bag nor the topic level it fills.
    """
    pairs = [f"{wire}={_quote(system_properties[name])}" for name, wire in keys if name in system_properties]
    pairs.extend(f"{_quote(key)}={_quote(value)}" for key, value in properties.items())
    return "&".join(pairs)


def decode_property_bag(bag: str) -> tuple[dict[str, str], dict[str, str]]:
    """(application properties, system properties) of a bag; the inverse of ``encode_property_bag``.

    A leading ``?`` is skipped (some clients write ``/?k=v``). Keys are percent-decoded before they
    are looked up, so ``$.mid`` and ``%24.mid`` are one key. A key without ``=`` is an application
    property with the empty value; a system key without a value is ignored, as the SDKs do. Unknown
    ``$.`` keys stay application properties, so nothing a sender wrote is lost.
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
        name = SYSTEM_NAMES.get(key)
        if name is None:
            app[key] = unquote(raw_value)
        elif has_value:
            system[name] = unquote(raw_value)
    return app, system


def _frozen(mapping: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(mapping) if mapping else EMPTY_PROPERTIES


# --- telemetry: devices/{d}[/modules/{m}]/messages/events/{bag} ------------------------------


def identity_topic(identity: Identity) -> str:
    """``devices/{d}`` or ``devices/{d}/modules/{m}``, ids percent-encoded."""
    if identity.module_id:
        return f"devices/{_quote(identity.device_id)}/modules/{_quote(identity.module_id)}"
    return f"devices/{_quote(identity.device_id)}"


def telemetry_topic(
    sender: Identity, properties: Mapping[str, str], system_properties: Mapping[str, str],
) -> str:
    """The telemetry topic ``sender`` publishes a message with these properties on.

    The trailing ``/`` after ``events`` is always there, as IoT Hub expects even for an empty bag.
    """
    return f"{identity_topic(sender)}/messages/events/{encode_property_bag(properties, system_properties)}"


@dataclass(frozen=True, slots=True)
class TelemetryTopic:
    """A parsed telemetry topic: the sender it names and what its bag says.

    ``system_properties`` never hold connection ids: a ``$.cdid``/``$.cmid`` in the bag is
    dropped, since who sent a message is for the receiver to decide (from the connection's
    identity, or from ``sender`` when that identity may act for others).
    """

    sender: Identity
    properties: Mapping[str, str]
    system_properties: Mapping[str, str]
    written_ids: tuple[str, str | None]
    """The id levels exactly as the topic spells them."""

    def names(self, identity: Identity) -> bool:
        """Whether the topic is ``identity``'s own, its ids written percent-encoded or raw."""
        return self.sender == identity or self.written_ids == (identity.device_id, identity.module_id)


def parse_telemetry_topic(topic: str) -> TelemetryTopic | None:
    """The parts of a telemetry topic, or None when ``topic`` is not one."""
    if not topic.startswith("devices/"):
        return None
    parts = topic.split("/")
    if len(parts) >= 4 and parts[2] == "messages" and parts[3] == "events":
        module, bag_at = None, 4
    elif len(parts) >= 6 and parts[2] == "modules" and parts[4] == "messages" and parts[5] == "events":
        module, bag_at = parts[3], 6
    else:
        return None
    device = parts[1]
    if not device or module == "":
        return None
    sender = Identity(unquote(device), None if module is None else unquote(module))
    bag = "/".join(parts[bag_at:])
    if not bag or bag == "?":
        return TelemetryTopic(sender, EMPTY_PROPERTIES, EMPTY_PROPERTIES, (device, module))
    app, system = decode_property_bag(bag)
    for name in _CONNECTION_IDS:
        system.pop(name, None)
    return TelemetryTopic(sender, _frozen(app), _frozen(system), (device, module))


# --- delivery: module inputs and devicebound (cloud-to-device) --------------------------------


def input_topic_prefix(identity: Identity) -> str:
    """``devices/{d}/modules/{m}/inputs/`` of a module identity."""
    return f"{identity_topic(identity)}/inputs/"


def devicebound_topic_prefix(identity: Identity) -> str:
    """``devices/{d}/messages/devicebound/``: the cloud-to-device messages of the identity's device."""
    return f"devices/{_quote(identity.device_id)}/messages/devicebound/"


def delivery_topic_head(identity: Identity, input_name: str | None) -> str:
    """The topic of every delivery to ``identity``'s input ``input_name`` (devicebound when None) up to
    its property bag: computed once per delivered batch, not per message."""
    if input_name is None:
        return devicebound_topic_prefix(identity)
    return f"{input_topic_prefix(identity)}{_quote(input_name)}/"


_delivery_bags: Final[dict[tuple[int, int], tuple[Mapping[str, str], Mapping[str, str], str]]] = {}
"""(id of properties, id of system properties) -> (both, their delivery bag): a head shares one
pair of read-only mappings among the messages of one topic, so their bag repeats. Each entry keeps
its mappings alive, so their ids cannot be reused while it exists."""
DELIVERY_BAG_CACHE: Final = 1024


def delivery_topic(identity: Identity, input_name: str | None, message: Message, head: str = "") -> str:
    """Where ``message`` goes to ``identity``: its input ``input_name`` or, when None, devicebound.
    ``head`` is ``delivery_topic_head(identity, input_name)`` when the caller has it already."""
    properties, system = message.properties, message.system_properties
    key = (id(properties), id(system))
    known = _delivery_bags.get(key)
    if known is not None and known[0] is properties and known[1] is system:
        bag = known[2]
    else:
        bag = encode_property_bag(properties, system, DELIVERY_KEYS)
        if type(properties) is MappingProxyType and type(system) is MappingProxyType:  # read-only views
            if len(_delivery_bags) >= DELIVERY_BAG_CACHE:
                _delivery_bags.clear()
            _delivery_bags[key] = (properties, system, bag)
    return (head or delivery_topic_head(identity, input_name)) + bag


@dataclass(frozen=True, slots=True)
class DeliveryTopic:
    """A parsed delivery topic: to whom (a device for devicebound, a module for inputs), which input."""

    recipient: Identity
    input_name: str | None
    """None for a devicebound (cloud-to-device) message."""
    message: Message


def parse_delivery_topic(topic: str, payload: bytes) -> DeliveryTopic | None:
    """``devices/{d}/messages/devicebound/{bag}`` or ``devices/{d}/modules/{m}/inputs/{i}/{bag}`` with
    its payload as a Message (connection ids from the bag kept: the sender of a delivery says who
    sent it), or None when ``topic`` is neither."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "devices" or not parts[1]:
        return None
    device = unquote(parts[1])
    if parts[2] == "messages" and parts[3] == "devicebound":
        recipient, input_name, bag_at = Identity(device), None, 4
    elif len(parts) >= 6 and parts[2] == "modules" and parts[4] == "inputs" and parts[3] and parts[5]:
        recipient, input_name, bag_at = Identity(device, unquote(parts[3])), unquote(parts[5]), 6
    else:
        return None
    app, system = decode_property_bag("/".join(parts[bag_at:]))
    return DeliveryTopic(recipient, input_name, Message(payload, _frozen(app), _frozen(system)))


def _id_level(text: str) -> str:
    return text if text == "+" else _quote(text)


def devicebound_filter(device_id: str = "+") -> str:
    """``devices/{d}/messages/devicebound/#``; every device's with ``+``."""
    return f"devices/{_id_level(device_id)}/messages/devicebound/#"


def module_inputs_filter(device_id: str, module_id: str = "+") -> str:
    """``devices/{d}/modules/{m}/inputs/#``; every module's of the device with ``+``."""
    return f"devices/{_id_level(device_id)}/modules/{_id_level(module_id)}/inputs/#"
