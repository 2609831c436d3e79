"""IoT Hub messages over AMQP: proton.Message <-> edgehub Message, as IoT Hub and edgeHub map them.

Owns the property names only (AMQP properties section, ``iothub-*`` application properties, message
annotations); who sent a message is the caller's to decide, never read from what a peer wrote.

The mapping follows edgeHub's AmqpMessageConverter (Azure/iotedge, edge-hub Hub.Amqp):

- AMQP 1.0 §3.2.4 properties: ``message-id`` → messageId, ``correlation-id`` → correlationId,
  ``user-id`` → userId, ``to`` → to, ``content-type`` → contentType, ``content-encoding`` →
  contentEncoding, ``absolute-expiry-time`` → the ``$.exp`` system property (ISO 8601, UTC);
- application properties ``iothub-outputname``, ``iothub-creation-time-utc`` and
  ``iothub-message-schema`` are the system properties outputName, creationTime, messageSchema;
  every other application property is the message's own (values as text);
- delivered messages carry ``x-opt-input-name`` and the original sender's
  ``iothub-connection-device-id`` / ``iothub-connection-module-id`` and ``iothub-enqueuedtime``
  as message annotations (AMQP 1.0 §3.2.3), as edgeHub and IoT Hub write them.

The body is the first data section (AMQP 1.0 §3.2.6); an ``amqp-value`` string is taken as UTF-8.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, cast

import cproton  # type: ignore[import-untyped]  # proton's C binding ships no stubs
import proton

from edgehub.iothub.topics import EXPIRY_TIME_UTC
from edgehub.message import EMPTY_PROPERTIES, Message, SystemProperty

OUTPUT_NAME: Final = "iothub-outputname"
CREATION_TIME: Final = "iothub-creation-time-utc"
MESSAGE_SCHEMA: Final = "iothub-message-schema"
INPUT_NAME: Final = "x-opt-input-name"
CONNECTION_DEVICE_ID: Final = "iothub-connection-device-id"
CONNECTION_MODULE_ID: Final = "iothub-connection-module-id"
ENQUEUED_TIME: Final = "iothub-enqueuedtime"

_APP_SYSTEM: Final[Mapping[str, str]] = MappingProxyType({
    OUTPUT_NAME: SystemProperty.OUTPUT_NAME,
    CREATION_TIME: SystemProperty.CREATION_TIME,
    MESSAGE_SCHEMA: SystemProperty.MESSAGE_SCHEMA,
})
"""Application properties that are IoT Hub system properties (edgeHub AmqpMessageConverter)."""
_DELIVERY_APP_SYSTEM: Final = ((MESSAGE_SCHEMA, SystemProperty.MESSAGE_SCHEMA),
                               (CREATION_TIME, SystemProperty.CREATION_TIME))
"""The ones edgeHub writes back on a delivered message (not the output name)."""


class MessageFormatError(ValueError):
    """An AMQP message the hub cannot take (no binary or text body, undecodable sections)."""


# --- from the wire --------------------------------------------------------------------------------


def decode(data: bytes) -> proton.Message:
    """The proton.Message of one transfer's payload; MessageFormatError when it is not one.

    proton's decoder is lenient (junk reads as an empty message), so the payload must at least
    open with a described section (AMQP 1.0 §3.2: every section is a described type, 0x00 first)."""
    if not data or data[0] != 0:
        raise MessageFormatError("the transfer is not an AMQP message (no described section)")
    message = proton.Message()
    try:
        message.decode(data)
    except (proton.MessageException, proton.DataException, ValueError, KeyError, TypeError) as exc:
        raise MessageFormatError(f"undecodable AMQP message: {exc}") from None
    return message


def from_amqp(message: proton.Message) -> Message:
    """The hub's Message of an AMQP message, without connection ids (the caller stamps the sender).

    Raises MessageFormatError when there is no body section (AMQP 1.0 §3.2.5-7: a bare message has
    one; junk proton decodes leniently has none) or it is neither binary data nor text."""
    if message.body is None:
        raise MessageFormatError("the message has no body section")
    system: dict[str, str] = {}
    _put(system, SystemProperty.MESSAGE_ID, _id_text(message.id))
    _put(system, SystemProperty.CORRELATION_ID, _id_text(message.correlation_id))
    _put(system, SystemProperty.TO, message.address)
    # proton's getters turn an absent content-type / -encoding into symbol("None"): read the C value.
    _put(system, SystemProperty.CONTENT_TYPE, cproton.pn_message_get_content_type(message._msg))
    _put(system, SystemProperty.CONTENT_ENCODING, cproton.pn_message_get_content_encoding(message._msg))
    user_id = message.user_id
    if user_id:
        system[SystemProperty.USER_ID] = bytes(user_id).decode("utf-8", "replace")
    expiry = message.expiry_time
    if expiry:
        system[EXPIRY_TIME_UTC] = datetime.fromtimestamp(expiry, UTC).isoformat().replace("+00:00", "Z")
    app: dict[str, str] = {}
    properties: dict[Any, Any] = message.properties or {}
    for key, value in properties.items():
        name = str(key)
        text = _value_text(value)
        system_name = _APP_SYSTEM.get(name)
        if system_name is not None:
            system[system_name] = text
        else:
            app[name] = text
    return Message(body_bytes(message), _frozen(app), _frozen(system))


def body_bytes(message: proton.Message) -> bytes:
    """The body as bytes: a data section as is, an amqp-value string as UTF-8, none as empty."""
    body = message.body
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise MessageFormatError(f"message body is {type(body).__name__}, not binary data or text")


def annotation(message: proton.Message, key: str) -> str | None:
    """A message annotation as text (``x-opt-input-name``, ``iothub-connection-device-id`` …)."""
    annotations = message.annotations
    if not annotations:
        return None
    value = annotations.get(proton.symbol(key))
    return None if value is None else _value_text(value)


# --- to the wire ----------------------------------------------------------------------------------


def telemetry_to_amqp(message: Message) -> proton.Message:
    """What a sender puts on ``/devices/{d}[/modules/{m}]/messages/events``: the properties
    section, the output name and creation time as ``iothub-*`` application properties."""
    out: Any = _with_properties(message)  # proton's stubs type the section setters as None
    app: dict[str, Any] = {}
    system = message.system_properties
    for wire, name in _APP_SYSTEM.items():
        value = system.get(name)
        if value:
            app[wire] = value
    app.update(message.properties)
    out.properties = app or None
    return cast(proton.Message, out)


def delivery_to_amqp(message: Message, input_name: str | None = None) -> proton.Message:
    """What the hub delivers to a module input (``input_name``) or as a cloud-to-device message:
    edgeHub's outgoing mapping, the original sender and the input as message annotations."""
    out: Any = _with_properties(message)
    system = message.system_properties
    app: dict[str, Any] = {}
    for wire, name in _DELIVERY_APP_SYSTEM:
        value = system.get(name)
        if value:
            app[wire] = value
    app.update(message.properties)
    out.properties = app or None
    annotations: dict[proton.symbol, Any] = {}
    if input_name is not None:
        annotations[proton.symbol(INPUT_NAME)] = input_name
    device = system.get(SystemProperty.CONNECTION_DEVICE_ID)
    if device:
        annotations[proton.symbol(CONNECTION_DEVICE_ID)] = device
    module = system.get(SystemProperty.CONNECTION_MODULE_ID)
    if module:
        annotations[proton.symbol(CONNECTION_MODULE_ID)] = module
    if message.enqueued_ms:
        annotations[proton.symbol(ENQUEUED_TIME)] = proton.timestamp(message.enqueued_ms)
    out.annotations = annotations or None
    return cast(proton.Message, out)


def _with_properties(message: Message) -> proton.Message:
    system = message.system_properties
    out: Any = proton.Message(body=message.body)
    out.inferred = True  # a bytes body goes out as a data section, not an amqp-value (AMQP 1.0 §3.2.6)
    out.id = system.get(SystemProperty.MESSAGE_ID) or None
    out.correlation_id = system.get(SystemProperty.CORRELATION_ID) or None
    out.address = system.get(SystemProperty.TO) or None
    content_type = system.get(SystemProperty.CONTENT_TYPE)
    if content_type:
        out.content_type = content_type
    content_encoding = system.get(SystemProperty.CONTENT_ENCODING)
    if content_encoding:
        out.content_encoding = content_encoding
    user_id = system.get(SystemProperty.USER_ID)
    if user_id:
        out.user_id = user_id.encode("utf-8")
    expiry = _expiry_seconds(system.get(EXPIRY_TIME_UTC))
    if expiry is not None:
        out.expiry_time = expiry
    return cast(proton.Message, out)


# --- values ---------------------------------------------------------------------------------------


def _put(system: dict[str, str], name: str, value: str | None) -> None:
    if value:
        system[name] = value


def _id_text(value: object) -> str | None:
    """message-id / correlation-id may be a string, uuid, ulong or binary (AMQP 1.0 §3.2.11-15)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def _value_text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))  # proton's int32, ulong, … print as "int32(5)"
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def _expiry_seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _frozen(mapping: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(mapping) if mapping else EMPTY_PROPERTIES
