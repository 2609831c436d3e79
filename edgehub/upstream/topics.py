"""IoT Hub MQTT topics of the upstream link: telemetry topics and property bags, devicebound and input topics.

Pure string functions over Message values, no I/O; the MQTT head has its own copy until the two are merged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

from edgehub.message import Identity, Message, SystemProperty

EXPIRY_TIME_UTC: Final = "absolute-expiry-time"
"""System property of ``$.exp``, named as edgeHub stores it (SystemProperties.ExpiryTimeUtc)."""

# IoT Hub wire names of system properties in a property bag, as the Azure IoT SDKs spell
# them (Microsoft.Azure.Devices.Client.Transport.Mqtt.IotHubWirePropertyNames).
WIRE_NAMES: Final[Mapping[str, str]] = {
    SystemProperty.MESSAGE_ID: "$.mid",
    SystemProperty.CORRELATION_ID: "$.cid",
    SystemProperty.USER_ID: "$.uid",
    SystemProperty.TO: "$.to",
    SystemProperty.CONTENT_TYPE: "$.ct",
    SystemProperty.CONTENT_ENCODING: "$.ce",
    SystemProperty.OUTPUT_NAME: "$.on",
    SystemProperty.CREATION_TIME: "$.ctime",
    SystemProperty.MESSAGE_SCHEMA: "$.schema",
    SystemProperty.CONNECTION_DEVICE_ID: "$.cdid",
    SystemProperty.CONNECTION_MODULE_ID: "$.cmid",
    EXPIRY_TIME_UTC: "$.exp",
}
SYSTEM_NAMES: Final[Mapping[str, str]] = {wire: name for name, wire in WIRE_NAMES.items()}

# The sender is the topic itself (devices/{d}[/modules/{m}]), and IoT Hub stamps the
# connection ids from it, so they are not repeated in a telemetry bag.
_IMPLIED_BY_TELEMETRY_TOPIC: Final = frozenset(
    {SystemProperty.CONNECTION_DEVICE_ID, SystemProperty.CONNECTION_MODULE_ID}
)

DEVICEBOUND: Final = "devicebound"
INPUTS: Final = "inputs"


def encode_property_bag(properties: Mapping[str, str], system_properties: Mapping[str, str]) -> str:
    """``$.mid=…&$.ct=…&key=value``: system properties under their wire names, then application ones.

    Values and application keys are percent-encoded (RFC 3986, nothing kept but unreserved
    characters), so ``&``, ``=``, ``/`` and ``$`` inside them cannot break the bag or the topic.
    """
    parts = [
        f"{WIRE_NAMES[name]}={quote(value, safe='')}"
        for name, value in system_properties.items()
        if name in WIRE_NAMES and name not in _IMPLIED_BY_TELEMETRY_TOPIC
    ]
    parts.extend(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in properties.items())
    return "&".join(parts)


def decode_property_bag(bag: str) -> tuple[dict[str, str], dict[str, str]]:
    """(application properties, system properties) of a bag; the inverse of ``encode_property_bag``.

    Keys are URL-decoded before they are looked up, so ``%24.mid`` (as some SDKs send it) is
    ``$.mid``; a key without ``=`` has the empty value; unknown ``$.`` keys stay application
    properties, so nothing the parent sent is lost.
    """
    properties: dict[str, str] = {}
    system: dict[str, str] = {}
    for item in bag.split("&"):
        if not item:
            continue
        raw_key, _, raw_value = item.partition("=")
        key, value = unquote(raw_key), unquote(raw_value)
        name = SYSTEM_NAMES.get(key)
        if name is None:
            properties[key] = value
        else:
            system[name] = value
    return properties, system


def telemetry_topic(message: Message, default_sender: Identity) -> str:
    """``devices/{d}[/modules/{m}]/messages/events/{bag}`` of the message's ORIGINAL sender
    (``connectionDeviceId``/``connectionModuleId``), or of ``default_sender`` when it has none.

    The trailing ``/`` is always there, as IoT Hub expects even for an empty bag.
    """
    sender = message.source or default_sender
    bag = encode_property_bag(message.properties, message.system_properties)
    return f"{identity_topic(sender)}/messages/events/{bag}"


def identity_topic(identity: Identity) -> str:
    """``devices/{d}`` or ``devices/{d}/modules/{m}``."""
    if identity.module_id:
        return f"devices/{identity.device_id}/modules/{identity.module_id}"
    return f"devices/{identity.device_id}"


@dataclass(frozen=True, slots=True)
class DownstreamMessage:
    """A message the parent sent down, and the local queue it belongs in."""

    endpoint: str
    """``/devices/{d}/messages/devicebound`` or ``/modules/{m}/inputs/{i}``."""
    message: Message


def devicebound_filter(device_id: str = "+") -> str:
    return f"devices/{device_id}/messages/{DEVICEBOUND}/#"


def module_inputs_filter(device_id: str, module_id: str = "+") -> str:
    return f"devices/{device_id}/modules/{module_id}/{INPUTS}/#"


def parse_downstream(topic: str, payload: bytes, edge_device_id: str) -> DownstreamMessage | None:
    """The local endpoint and message of a devicebound or module-input publish, or None
    when the topic is neither (or names a module of another edge device).

    ``devices/{d}/messages/devicebound/{bag}`` → ``/devices/{d}/messages/devicebound``;
    ``devices/{edge}/modules/{m}/inputs/{i}/{bag}`` → ``/modules/{m}/inputs/{i}``.
    """
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "devices" or not parts[1]:
        return None
    device = parts[1]
    if parts[2] == "messages" and parts[3] == DEVICEBOUND:
        endpoint = f"/devices/{device}/messages/{DEVICEBOUND}"
        bag = "/".join(parts[4:])
    elif len(parts) >= 6 and parts[2] == "modules" and parts[4] == INPUTS and parts[3] and parts[5]:
        if device != edge_device_id:
            return None  # local modules belong to the edge device only
        endpoint = f"/modules/{parts[3]}/{INPUTS}/{parts[5]}"
        bag = "/".join(parts[6:])
    else:
        return None
    properties, system = decode_property_bag(bag)
    return DownstreamMessage(endpoint, Message(payload, properties, system))

