"""MQTT wire primitives: limits, Variable Byte Integers, strings, and MQTT 5 property blocks.

Shared by encode.py and decode.py; pure functions over bytes, no packets-level rules, no I/O.
Compiled with the hot path; the codec's errors (edgehub.mqtt.errors, re-exported here) stay
interpreted, because interpreted modules subclass them.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from edgehub.mqtt.errors import MalformedPacketError as MalformedPacketError
from edgehub.mqtt.errors import MqttError as MqttError
from edgehub.mqtt.errors import PacketTooLargeError as PacketTooLargeError
from edgehub.mqtt.errors import ProtocolViolationError as ProtocolViolationError
from edgehub.mqtt.errors import UnsupportedProtocolVersionError as UnsupportedProtocolVersionError
from edgehub.mqtt.packets import (
    NO_PROPERTIES,
    PacketType,
    Properties,
)

MAX_REMAINING_LENGTH: Final = 268_435_455
"""Largest value a four-byte Variable Byte Integer holds (MQTT 5 §1.5.5)."""
MAX_PACKET_SIZE: Final = MAX_REMAINING_LENGTH + 5


# --- MQTT 5 properties (MQTT 5 §2.2.2.2) -------------------------------------------------------

_BYTE: Final = 1
_U16: Final = 2
_U32: Final = 3
_VARINT: Final = 4
_UTF8: Final = 5
_BINARY: Final = 6
_PAIR: Final = 7

PROPERTY_SPECS: Final[dict[int, tuple[str, int]]] = {
    0x01: ("payload_format_indicator", _BYTE),
    0x02: ("message_expiry_interval", _U32),
    0x03: ("content_type", _UTF8),
    0x08: ("response_topic", _UTF8),
    0x09: ("correlation_data", _BINARY),
    0x0B: ("subscription_identifiers", _VARINT),
    0x11: ("session_expiry_interval", _U32),
    0x12: ("assigned_client_identifier", _UTF8),
    0x13: ("server_keep_alive", _U16),
    0x15: ("authentication_method", _UTF8),
    0x16: ("authentication_data", _BINARY),
    0x17: ("request_problem_information", _BYTE),
    0x18: ("will_delay_interval", _U32),
    0x19: ("request_response_information", _BYTE),
    0x1A: ("response_information", _UTF8),
    0x1C: ("server_reference", _UTF8),
    0x1F: ("reason_string", _UTF8),
    0x21: ("receive_maximum", _U16),
    0x22: ("topic_alias_maximum", _U16),
    0x23: ("topic_alias", _U16),
    0x24: ("maximum_qos", _BYTE),
    0x25: ("retain_available", _BYTE),
    0x26: ("user_properties", _PAIR),
    0x27: ("maximum_packet_size", _U32),
    0x28: ("wildcard_subscription_available", _BYTE),
    0x29: ("subscription_identifier_available", _BYTE),
    0x2A: ("shared_subscription_available", _BYTE),
}
_PROPERTY_ORDER: Final = sorted(PROPERTY_SPECS.items())

_BOOLEAN_PROPERTIES: Final = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
"""Byte properties whose only valid values are 0 and 1; anything else is a Protocol Error."""
_NONZERO_PROPERTIES: Final = frozenset({0x0B, 0x21, 0x23, 0x27})
"""Subscription Identifier, Receive Maximum, Topic Alias, Maximum Packet Size: 0 is a Protocol Error."""

WILL_PROPERTIES: Final = -1
"""Pseudo packet type for the Will Properties of a CONNECT payload."""

ALLOWED_PROPERTIES: Final[dict[int, frozenset[int]]] = {
    PacketType.CONNECT: frozenset({0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27}),
    WILL_PROPERTIES: frozenset({0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26}),
    PacketType.CONNACK: frozenset(
        {0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A}
    ),
    PacketType.PUBLISH: frozenset({0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26}),
    PacketType.PUBACK: frozenset({0x1F, 0x26}),
    PacketType.PUBREC: frozenset({0x1F, 0x26}),
    PacketType.PUBREL: frozenset({0x1F, 0x26}),
    PacketType.PUBCOMP: frozenset({0x1F, 0x26}),
    PacketType.SUBSCRIBE: frozenset({0x0B, 0x26}),
    PacketType.SUBACK: frozenset({0x1F, 0x26}),
    PacketType.UNSUBSCRIBE: frozenset({0x26}),
    PacketType.UNSUBACK: frozenset({0x1F, 0x26}),
    PacketType.DISCONNECT: frozenset({0x11, 0x1C, 0x1F, 0x26}),
    PacketType.AUTH: frozenset({0x15, 0x16, 0x1F, 0x26}),
}

_U16_AT: Final = struct.Struct(">H").unpack_from
U32_AT: Final = struct.Struct(">I").unpack_from
PACK_U16: Final = struct.Struct(">H").pack
PACK_U32: Final = struct.Struct(">I").pack


# --- primitive encoders ------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Variable Byte Integer (MQTT 5 §1.5.5)."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:  # every PUBLISH from 128 bytes to 16 KiB
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def utf8_field(text: str) -> bytes:
    raw = text.encode()
    return PACK_U16(len(raw)) + raw


def binary_field(data: bytes) -> bytes:
    return PACK_U16(len(data)) + data


def fixed_header(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def _encode_property_value(kind: int, value: int | str | bytes) -> bytes:
    if isinstance(value, bytes):
        return binary_field(value)
    if kind == _BYTE:
        return bytes((int(value),))
    if kind == _U16:
        return PACK_U16(int(value))
    if kind == _U32:
        return PACK_U32(int(value))
    if kind == _VARINT:
        return encode_varint(int(value))
    return utf8_field(str(value))


def encode_properties(props: Properties) -> bytes:
    """Property Length followed by the properties in identifier order (MQTT 5 §2.2.2)."""
    if props is NO_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for ident, (name, kind) in _PROPERTY_ORDER:
        value = getattr(props, name)
        if kind == _PAIR:
            for key, val in value:
                parts.append(bytes((ident,)) + utf8_field(key) + utf8_field(val))
        elif ident == 0x0B:
            parts.extend(bytes((ident,)) + encode_varint(sub_id) for sub_id in value)
        elif value is not None:
            parts.append(bytes((ident,)) + _encode_property_value(kind, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body



# --- decoding ----------------------------------------------------------------------------------


def varint_at(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the Variable Byte Integer at ``pos``; malformed past 4 bytes."""
    value = 0
    shift = 0
    for i in range(pos, min(pos + 4, end)):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise MalformedPacketError("variable byte integer longer than 4 bytes or truncated")


def str_at(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    if pos + 2 > end:
        raise MalformedPacketError("truncated string length")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacketError("string runs past the packet")
    try:
        text = buf[pos + 2 : stop].decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacketError("ill-formed UTF-8 string") from exc  # [MQTT-1.5.4-1]
    if "\x00" in text:
        raise MalformedPacketError("string contains U+0000")  # [MQTT-1.5.4-2]
    return text, stop


def bin_at(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise MalformedPacketError("truncated binary length")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacketError("binary data runs past the packet")
    return buf[pos + 2 : stop], stop


def u16_at(buf: bytes, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise MalformedPacketError("truncated two byte integer")
    return (buf[pos] << 8) | buf[pos + 1]


def property_value_at(kind: int, buf: bytes, pos: int, end: int) -> tuple[int | str | bytes, int]:
    if kind == _BYTE:
        if pos >= end:
            raise MalformedPacketError("truncated byte property")
        return buf[pos], pos + 1
    if kind == _U16:
        return u16_at(buf, pos, end), pos + 2
    if kind == _U32:
        if pos + 4 > end:
            raise MalformedPacketError("truncated four byte integer")
        return U32_AT(buf, pos)[0], pos + 4
    if kind == _VARINT:
        return varint_at(buf, pos, end)
    if kind == _UTF8:
        return str_at(buf, pos, end)
    return bin_at(buf, pos, end)


def properties_at(buf: bytes, pos: int, end: int, allowed: frozenset[int]) -> tuple[Properties, int]:
    """Decode Property Length and the properties after it (MQTT 5 §2.2.2)."""
    length, pos = varint_at(buf, pos, end)
    if length == 0:
        return NO_PROPERTIES, pos
    stop = pos + length
    if stop > end:
        raise MalformedPacketError("properties run past the packet")
    values: dict[str, Any] = {}  # field name -> value, both as PROPERTY_SPECS defines them
    pairs: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    while pos < stop:
        ident, pos = varint_at(buf, pos, stop)
        if ident not in allowed:
            # MQTT 5 §2.2.2.2: an identifier not valid for the packet type makes it malformed.
            raise MalformedPacketError(f"property 0x{ident:02X} not valid here")
        name, kind = PROPERTY_SPECS[ident]
        if kind == _PAIR:
            key, pos = str_at(buf, pos, stop)
            val, pos = str_at(buf, pos, stop)
            pairs.append((key, val))
            continue
        value, pos = property_value_at(kind, buf, pos, stop)
        if ident in _NONZERO_PROPERTIES and value == 0:
            raise ProtocolViolationError(f"property 0x{ident:02X} is 0")
        if ident == 0x0B:
            sub_ids.append(int(value))  # may repeat in PUBLISH (MQTT 5 §3.3.2.3.8)
            continue
        if name in values:
            raise ProtocolViolationError(f"property 0x{ident:02X} included more than once")
        if ident in _BOOLEAN_PROPERTIES and value not in (0, 1):
            raise ProtocolViolationError(f"property 0x{ident:02X} must be 0 or 1")
        values[name] = value
    if pairs:
        values["user_properties"] = tuple(pairs)
    if sub_ids:
        values["subscription_identifiers"] = tuple(sub_ids)
    return Properties(**values), stop
