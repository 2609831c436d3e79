"""MQTT 3.1.1 / 5.0 wire format: packets to bytes, and an incremental decoder fed arbitrary chunks.

Sans-I/O and stateless beyond the byte buffer and protocol version: no sockets, no asyncio,
no session rules (who may send what when lives in session.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from edgehub.errors import ProtocolError
from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)

MAX_REMAINING_LENGTH: Final = 268_435_455
"""Largest value a four-byte Variable Byte Integer holds (MQTT 5 §1.5.5)."""
MAX_PACKET_SIZE: Final = MAX_REMAINING_LENGTH + 5


class MqttError(ProtocolError):
    """The peer sent bytes the codec refuses; ``reason_code`` is the MQTT 5 reason to disconnect with."""

    def __init__(self, reason_code: int, detail: str) -> None:
        self.reason_code = reason_code
        self.detail = detail
        super().__init__(f"{detail} (reason 0x{reason_code:02X})")


class MalformedPacketError(MqttError):
    """The bytes are not a packet (MQTT 5 §4.13: reason 0x81)."""

    def __init__(self, detail: str) -> None:
        super().__init__(ReasonCode.MALFORMED_PACKET, detail)


class ProtocolViolationError(MqttError):
    """A well-formed packet breaks a protocol rule (reason 0x82 unless stated)."""

    def __init__(self, detail: str, reason_code: int = ReasonCode.PROTOCOL_ERROR) -> None:
        super().__init__(reason_code, detail)


class PacketTooLargeError(MqttError):
    """The fixed header announces a packet above the maximum packet size (reason 0x95)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(ReasonCode.PACKET_TOO_LARGE, f"packet of {size} bytes exceeds {limit}")


class UnsupportedProtocolVersionError(MqttError):
    """CONNECT with a protocol level other than 3, 4 or 5 [MQTT-3.1.2-2]."""

    def __init__(self, level: int) -> None:
        self.level = level
        super().__init__(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol level {level}")


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
_U32_AT: Final = struct.Struct(">I").unpack_from
_PACK_U16: Final = struct.Struct(">H").pack
_PACK_U32: Final = struct.Struct(">I").pack


# --- primitive encoders ------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Variable Byte Integer (MQTT 5 §1.5.5)."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return _PACK_U16(len(raw)) + raw


def _binary(data: bytes) -> bytes:
    return _PACK_U16(len(data)) + data


def _fixed(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def _encode_property_value(kind: int, value: int | str | bytes) -> bytes:
    if isinstance(value, bytes):
        return _binary(value)
    if kind == _BYTE:
        return bytes((int(value),))
    if kind == _U16:
        return _PACK_U16(int(value))
    if kind == _U32:
        return _PACK_U32(int(value))
    if kind == _VARINT:
        return encode_varint(int(value))
    return _utf8(str(value))


def encode_properties(props: Properties) -> bytes:
    """Property Length followed by the properties in identifier order (MQTT 5 §2.2.2)."""
    if props is NO_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for ident, (name, kind) in _PROPERTY_ORDER:
        value = getattr(props, name)
        if kind == _PAIR:
            for key, val in value:
                parts.append(bytes((ident,)) + _utf8(key) + _utf8(val))
        elif ident == 0x0B:
            parts.extend(bytes((ident,)) + encode_varint(sub_id) for sub_id in value)
        elif value is not None:
            parts.append(bytes((ident,)) + _encode_property_value(kind, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


# --- packet encoders ---------------------------------------------------------------------------


def _encode_connect(p: Connect, version: int) -> bytes:
    level = p.protocol_level
    flags = 0x02 if p.clean_start else 0
    will_part = b""
    if p.will is not None:
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
        will_props = encode_properties(p.will.properties) if level == MQTT_5 else b""
        will_part = will_props + _utf8(p.will.topic) + _binary(p.will.payload)
    if p.username is not None:
        flags |= 0x80
    if p.password is not None:
        flags |= 0x40
    body = [
        _utf8(p.protocol_name), bytes((level, flags)), _PACK_U16(p.keep_alive),
        encode_properties(p.properties) if level == MQTT_5 else b"",
        _utf8(p.client_id), will_part,
        _utf8(p.username) if p.username is not None else b"",
        _binary(p.password) if p.password is not None else b"",
    ]
    return _fixed(0x10, b"".join(body))


def _encode_connack(p: ConnAck, version: int) -> bytes:
    body = bytes((1 if p.session_present else 0, p.reason_code))
    if version == MQTT_5:
        body += encode_properties(p.properties)
    return _fixed(0x20, body)


def encode_publish(
    topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, *, retain: bool = False,
    dup: bool = False, properties: Properties = NO_PROPERTIES, version: int = MQTT_311,
) -> bytes:
    """One PUBLISH, the outbound hot path (one join: header, topic, payload)."""
    raw_topic = topic.encode()
    head = _PACK_U16(len(raw_topic)) + raw_topic
    if qos:
        head += _PACK_U16(packet_id)
    if version == MQTT_5:
        head += encode_properties(properties)
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    return b"".join((bytes((first,)), encode_varint(len(head) + len(payload)), head, payload))


def _encode_publish(p: Publish, version: int) -> bytes:
    return encode_publish(
        p.topic, p.payload, p.qos, p.packet_id, retain=p.retain, dup=p.dup,
        properties=p.properties, version=version,
    )


def _encode_ack(first: int, packet_id: int, reason: int, props: Properties, version: int) -> bytes:
    # MQTT 5 §3.4.2.1: reason and property length may be omitted for Success without properties.
    if version != MQTT_5 or (reason == 0 and props is NO_PROPERTIES):
        return bytes((first, 2)) + _PACK_U16(packet_id)
    if props is NO_PROPERTIES:
        return bytes((first, 3)) + _PACK_U16(packet_id) + bytes((reason,))
    return _fixed(first, _PACK_U16(packet_id) + bytes((reason,)) + encode_properties(props))


def _encode_subscribe(p: Subscribe, version: int) -> bytes:
    parts = [_PACK_U16(p.packet_id)]
    if version == MQTT_5:
        parts.append(encode_properties(p.properties))
    for sub in p.subscriptions:
        options = sub.qos
        if version == MQTT_5:
            options |= (
                (0x04 if sub.no_local else 0) | (0x08 if sub.retain_as_published else 0)
                | (sub.retain_handling << 4)
            )
        parts.append(_utf8(sub.topic_filter) + bytes((options,)))
    return _fixed(0x82, b"".join(parts))


def _encode_suback(p: SubAck, version: int) -> bytes:
    props = encode_properties(p.properties) if version == MQTT_5 else b""
    return _fixed(0x90, _PACK_U16(p.packet_id) + props + bytes(p.reason_codes))


def _encode_unsubscribe(p: Unsubscribe, version: int) -> bytes:
    props = encode_properties(p.properties) if version == MQTT_5 else b""
    return _fixed(0xA2, _PACK_U16(p.packet_id) + props + b"".join(_utf8(f) for f in p.topic_filters))


def _encode_unsuback(p: UnsubAck, version: int) -> bytes:
    if version != MQTT_5:
        return _fixed(0xB0, _PACK_U16(p.packet_id))
    return _fixed(0xB0, _PACK_U16(p.packet_id) + encode_properties(p.properties) + bytes(p.reason_codes))


def _encode_disconnect(p: Disconnect, version: int) -> bytes:
    # MQTT 5 §3.14.2.1: Remaining Length 0 means Normal disconnection without properties.
    if version != MQTT_5 or (p.reason_code == 0 and p.properties is NO_PROPERTIES):
        return b"\xe0\x00"
    return _fixed(0xE0, bytes((p.reason_code,)) + encode_properties(p.properties))


def _encode_auth(p: Auth, version: int) -> bytes:
    if p.reason_code == 0 and p.properties is NO_PROPERTIES:
        return b"\xf0\x00"
    return _fixed(0xF0, bytes((p.reason_code,)) + encode_properties(p.properties))


_ENCODERS: Final[dict[type, Callable[[Any, int], bytes]]] = {
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    Publish: _encode_publish,
    PubAck: lambda p, v: _encode_ack(0x40, p.packet_id, p.reason_code, p.properties, v),
    PubRec: lambda p, v: _encode_ack(0x50, p.packet_id, p.reason_code, p.properties, v),
    PubRel: lambda p, v: _encode_ack(0x62, p.packet_id, p.reason_code, p.properties, v),
    PubComp: lambda p, v: _encode_ack(0x70, p.packet_id, p.reason_code, p.properties, v),
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _encode_unsuback,
    PingReq: lambda p, v: b"\xc0\x00",
    PingResp: lambda p, v: b"\xd0\x00",
    Disconnect: _encode_disconnect,
    Auth: _encode_auth,
}


def encode(packet: Packet, version: int = MQTT_311) -> bytes:
    """The wire bytes of ``packet`` for protocol level ``version``; MQTT 3.1.1 drops properties."""
    return _ENCODERS[type(packet)](packet, version)


_PUBACK_BASE: Final = 0x40020000
_PUBREC_BASE: Final = 0x50020000


def encode_pubacks(packet_ids: Sequence[int]) -> bytes:
    """Success PUBACKs for ``packet_ids`` in order, in one struct call (the inbound hot path)."""
    return struct.pack(f">{len(packet_ids)}I", *[_PUBACK_BASE | pid for pid in packet_ids])


def encode_pubrecs(packet_ids: Sequence[int]) -> bytes:
    """Success PUBRECs for ``packet_ids`` in order."""
    return struct.pack(f">{len(packet_ids)}I", *[_PUBREC_BASE | pid for pid in packet_ids])


# --- decoding ----------------------------------------------------------------------------------


def _varint_at(buf: bytes, pos: int, end: int) -> tuple[int, int]:
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


def _str_at(buf: bytes, pos: int, end: int) -> tuple[str, int]:
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


def _bin_at(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise MalformedPacketError("truncated binary length")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacketError("binary data runs past the packet")
    return buf[pos + 2 : stop], stop


def _u16_at(buf: bytes, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise MalformedPacketError("truncated two byte integer")
    return (buf[pos] << 8) | buf[pos + 1]


def _property_value(kind: int, buf: bytes, pos: int, end: int) -> tuple[int | str | bytes, int]:
    if kind == _BYTE:
        if pos >= end:
            raise MalformedPacketError("truncated byte property")
        return buf[pos], pos + 1
    if kind == _U16:
        return _u16_at(buf, pos, end), pos + 2
    if kind == _U32:
        if pos + 4 > end:
            raise MalformedPacketError("truncated four byte integer")
        return _U32_AT(buf, pos)[0], pos + 4
    if kind == _VARINT:
        return _varint_at(buf, pos, end)
    if kind == _UTF8:
        return _str_at(buf, pos, end)
    return _bin_at(buf, pos, end)


def _properties_at(buf: bytes, pos: int, end: int, allowed: frozenset[int]) -> tuple[Properties, int]:
    """Decode Property Length and the properties after it (MQTT 5 §2.2.2)."""
    length, pos = _varint_at(buf, pos, end)
    if length == 0:
        return NO_PROPERTIES, pos
    stop = pos + length
    if stop > end:
        raise MalformedPacketError("properties run past the packet")
    values: dict[str, Any] = {}  # field name -> value, both as PROPERTY_SPECS defines them
    pairs: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    while pos < stop:
        ident, pos = _varint_at(buf, pos, stop)
        if ident not in allowed:
            # MQTT 5 §2.2.2.2: an identifier not valid for the packet type makes it malformed.
            raise MalformedPacketError(f"property 0x{ident:02X} not valid here")
        name, kind = PROPERTY_SPECS[ident]
        if kind == _PAIR:
            key, pos = _str_at(buf, pos, stop)
            val, pos = _str_at(buf, pos, stop)
            pairs.append((key, val))
            continue
        value, pos = _property_value(kind, buf, pos, stop)
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


_EXPECTED_FLAGS: Final = {
    PacketType.CONNECT: 0, PacketType.CONNACK: 0, PacketType.PUBACK: 0, PacketType.PUBREC: 0,
    PacketType.PUBREL: 2, PacketType.PUBCOMP: 0, PacketType.SUBSCRIBE: 2, PacketType.SUBACK: 0,
    PacketType.UNSUBSCRIBE: 2, PacketType.UNSUBACK: 0, PacketType.PINGREQ: 0, PacketType.PINGRESP: 0,
    PacketType.DISCONNECT: 0, PacketType.AUTH: 0,
}


class Decoder:
    """Incremental decoder: ``feed`` any chunk, get every packet it completes.

    ``version`` is the protocol level the packets are decoded with; a decoded
    CONNECT switches it to the CONNECT's level (so the server needs no extra
    call). ``max_packet_size`` bounds the whole packet (fixed header included);
    a larger one raises PacketTooLarge as soon as its header is read, before
    its body is buffered.
    """

    __slots__ = ("_chunks", "_have", "_need", "_topics", "max_packet_size", "version")

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE, version: int = MQTT_311) -> None:
        self.max_packet_size = max_packet_size
        self.version = version
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0
        self._topics: dict[bytes, str] = {}

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete packet."""
        return self._have

    def feed(self, data: bytes) -> list[Packet]:
        """Decode every complete packet in the buffered bytes plus ``data``; keep the rest.

        An empty list means "need more data". Raises MqttError on bad input;
        the decoder is then unusable (the connection must close).
        """
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
        packets: list[Packet] = []
        pos = self._decode_into(data, packets)
        rest = len(data) - pos
        if rest:
            self._chunks = [data[pos:] if pos else data]
        self._have = rest
        return packets

    def _decode_into(self, buf: bytes, out: list[Packet]) -> int:
        end = len(buf)
        pos = 0
        limit = self.max_packet_size
        topics = self._topics
        v5 = self.version == MQTT_5
        append = out.append
        while end - pos >= 2:
            first = buf[pos]
            length = buf[pos + 1]
            body = pos + 2
            if length >= 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    if body >= end:
                        self._need = 0  # the Remaining Length continues past the data we have
                        return pos
                    byte = buf[body]
                    body += 1
                    length |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        raise MalformedPacketError("remaining length longer than 4 bytes")  # MQTT 5 §1.5.5
            stop = body + length
            if stop - pos > limit:
                raise PacketTooLargeError(stop - pos, limit)
            if stop > end:
                self._need = stop - pos
                return pos
            kind = first >> 4
            if kind == PacketType.PUBLISH:
                append(_decode_publish(first, buf, body, stop, v5, topics))
            else:
                packet = self._decode_other(kind, first & 0x0F, buf, body, stop)
                append(packet)
                if type(packet) is Connect:
                    self.version = MQTT_5 if packet.protocol_level == MQTT_5 else MQTT_311
                    v5 = self.version == MQTT_5
            pos = stop
        self._need = 0
        return pos

    def _decode_other(self, kind: int, flags: int, buf: bytes, pos: int, end: int) -> Packet:
        expected = _EXPECTED_FLAGS.get(kind)
        if expected is None:
            raise MalformedPacketError(f"reserved packet type {kind}")  # MQTT 5 §2.1.2: 0 is reserved
        if flags != expected:
            raise MalformedPacketError(f"bad fixed header flags for packet type {kind}")  # [MQTT-2.2.2-2]
        decoder = _DECODERS[kind]
        return decoder(buf, pos, end, self.version == MQTT_5)


def _topic_name_at(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    topic, pos = _str_at(buf, pos, end)
    if "+" in topic or "#" in topic:
        # [MQTT-3.3.2-2]: no wildcards in a Topic Name.
        raise ProtocolViolationError("wildcard in topic name", ReasonCode.TOPIC_NAME_INVALID)
    return topic, pos


_new_packet = object.__new__
_SET_PUBLISH_FIELDS: Final = tuple(
    getattr(Publish, name).__set__
    for name in ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
)


def _publish(
    topic: str, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int, props: Properties,
) -> Publish:
    """Publish(...) without the frozen dataclass __init__ (one object.__setattr__ call per field):
    the slot descriptors set the same fields at half the cost on the inbound hot path."""
    packet: Publish = _new_packet(Publish)
    set_topic, set_payload, set_qos, set_retain, set_dup, set_packet_id, set_props = _SET_PUBLISH_FIELDS
    set_topic(packet, topic)
    set_payload(packet, payload)
    set_qos(packet, qos)
    set_retain(packet, retain)
    set_dup(packet, dup)
    set_packet_id(packet, packet_id)
    set_props(packet, props)
    return packet


def _new_topic(raw: bytes, topics: dict[bytes, str]) -> str:
    """Validate and remember a topic name first seen on this connection."""
    topic, _ = _topic_name_at(len(raw).to_bytes(2, "big") + raw, 0, len(raw) + 2)
    if len(topics) >= _TOPIC_CACHE_SIZE:
        topics.clear()
    topics[raw] = topic
    return topic


_TOPIC_CACHE_SIZE: Final = 256


def _decode_publish(
    first: int, buf: bytes, pos: int, end: int, v5: bool, topics: dict[bytes, str],
) -> Publish:
    """PUBLISH (MQTT 5 §3.3). ``topics`` maps raw topic bytes already validated on this connection
    to their text: a repeated topic costs one slice and one dict lookup."""
    qos = (first >> 1) & 0x03
    if qos == 3 or (first & 0x08 and not qos):
        raise MalformedPacketError("PUBLISH with QoS 3 or DUP on QoS 0")  # [MQTT-3.3.1-4], [MQTT-3.3.1-2]
    topic_end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1]) if pos + 2 <= end else end + 1
    if topic_end > end:
        raise MalformedPacketError("topic runs past the packet")
    raw_topic = buf[pos + 2 : topic_end]
    topic = topics.get(raw_topic) or _new_topic(raw_topic, topics)
    pos = topic_end
    packet_id = 0
    if qos:
        packet_id = (buf[pos] << 8) | buf[pos + 1] if pos + 2 <= end else 0
        if not packet_id:
            raise MalformedPacketError("packet identifier 0 or missing")  # [MQTT-2.3.1-1]
        pos += 2
    props = NO_PROPERTIES
    if v5:
        if pos < end and buf[pos] == 0:
            pos += 1
        else:
            props, pos = _properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.PUBLISH])
    return _publish(topic, buf[pos:end], qos, bool(first & 0x01), bool(first & 0x08), packet_id, props)


def _check_connect_flags(flags: int, level: int) -> None:
    if flags & 0x01:
        raise MalformedPacketError("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
    will_qos = (flags >> 3) & 0x03
    if will_qos == 3 or (not flags & 0x04 and flags & 0x38):
        raise MalformedPacketError("bad will flags")  # [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15]
    if flags & 0x40 and not flags & 0x80 and level != MQTT_5:
        raise MalformedPacketError("password without user name")  # MQTT 3.1.1 [MQTT-3.1.2-22]


def _decode_connect(buf: bytes, pos: int, end: int, _v5: bool) -> Connect:
    name, pos = _str_at(buf, pos, end)
    if pos + 4 > end:
        raise MalformedPacketError("truncated CONNECT variable header")
    level = buf[pos]
    flags = buf[pos + 1]
    keep_alive = (buf[pos + 2] << 8) | buf[pos + 3]
    pos += 4
    if (name, level) not in (("MQTT", MQTT_311), ("MQTT", MQTT_5), ("MQIsdp", 3)):
        if name not in ("MQTT", "MQIsdp"):
            raise MalformedPacketError(f"protocol name {name!r}")  # [MQTT-3.1.2-1]
        raise UnsupportedProtocolVersionError(level)
    _check_connect_flags(flags, level)
    will_flag = bool(flags & 0x04)
    has_user = bool(flags & 0x80)
    has_password = bool(flags & 0x40)
    props = NO_PROPERTIES
    if level == MQTT_5:
        props, pos = _properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.CONNECT])
    client_id, pos = _str_at(buf, pos, end)
    will = None
    if will_flag:
        will_props = NO_PROPERTIES
        if level == MQTT_5:
            will_props, pos = _properties_at(buf, pos, end, ALLOWED_PROPERTIES[WILL_PROPERTIES])
        will_topic, pos = _topic_name_at(buf, pos, end)
        will_payload, pos = _bin_at(buf, pos, end)
        will = Will(will_topic, will_payload, (flags >> 3) & 0x03, bool(flags & 0x20), will_props)
    username = password = None
    if has_user:
        username, pos = _str_at(buf, pos, end)
    if has_password:
        password, pos = _bin_at(buf, pos, end)
    if pos != end:
        raise MalformedPacketError("bytes after the CONNECT payload")
    return Connect(level, client_id, bool(flags & 0x02), keep_alive, username, password, will, props, name)


def _decode_connack(buf: bytes, pos: int, end: int, v5: bool) -> ConnAck:
    if pos + 2 > end:
        raise MalformedPacketError("truncated CONNACK")
    if buf[pos] & 0xFE:
        raise MalformedPacketError("CONNACK reserved flags set")  # [MQTT-3.2.2-1]
    props = NO_PROPERTIES
    stop = pos + 2
    if v5:
        props, stop = _properties_at(buf, stop, end, ALLOWED_PROPERTIES[PacketType.CONNACK])
    _expect_end(stop, end, "CONNACK")
    return ConnAck(bool(buf[pos] & 0x01), buf[pos + 1], props)


def _expect_end(pos: int, end: int, what: str) -> None:
    if pos != end:
        raise MalformedPacketError(f"bytes after the {what}")


def _ack_decoder(
    cls: type[PubAck] | type[PubRec] | type[PubRel] | type[PubComp], kind: int,
) -> Callable[[bytes, int, int, bool], Packet]:
    allowed = ALLOWED_PROPERTIES[kind]

    def decode_ack(buf: bytes, pos: int, end: int, v5: bool) -> Packet:
        packet_id = _u16_at(buf, pos, end)
        if not packet_id:
            raise MalformedPacketError("packet identifier 0")  # [MQTT-2.3.1-1]
        pos += 2
        if not v5 or pos == end:
            _expect_end(pos, end, "acknowledgement")
            return cls(packet_id)
        reason = buf[pos]
        props = NO_PROPERTIES
        if pos + 1 < end:  # MQTT 5 §3.4.2.2: property length omitted when Remaining Length is 3
            props, pos = _properties_at(buf, pos + 1, end, allowed)
            _expect_end(pos, end, "acknowledgement")
        return cls(packet_id, reason, props)

    return decode_ack


def _decode_subscribe(buf: bytes, pos: int, end: int, v5: bool) -> Subscribe:
    packet_id = _u16_at(buf, pos, end)
    if not packet_id:
        raise MalformedPacketError("packet identifier 0")  # [MQTT-2.3.1-1]
    pos += 2
    props = NO_PROPERTIES
    if v5:
        props, pos = _properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.SUBSCRIBE])
        if len(props.subscription_identifiers) > 1:
            raise ProtocolViolationError("more than one subscription identifier")  # MQTT 5 §3.8.2.1.2
    subs: list[Subscription] = []
    while pos < end:
        topic_filter, pos = _str_at(buf, pos, end)
        if pos >= end:
            raise MalformedPacketError("subscription options missing")
        options = buf[pos]
        pos += 1
        qos = options & 0x03
        if v5:
            retain_handling = (options >> 4) & 0x03
            if options & 0xC0 or qos == 3 or retain_handling == 3:
                raise MalformedPacketError("bad subscription options")  # [MQTT-3.8.3-5]
            subs.append(Subscription(
                topic_filter, qos, bool(options & 0x04), bool(options & 0x08), retain_handling,
            ))
        else:
            if options & 0xFC or qos == 3:
                raise MalformedPacketError("bad requested QoS byte")  # MQTT 3.1.1 [MQTT-3.8.3-4]
            subs.append(Subscription(topic_filter, qos))
    if not subs:
        raise ProtocolViolationError("SUBSCRIBE without a topic filter")  # [MQTT-3.8.3-3]
    return Subscribe(packet_id, tuple(subs), props)


def _decode_suback(buf: bytes, pos: int, end: int, v5: bool) -> SubAck:
    packet_id = _u16_at(buf, pos, end)
    pos += 2
    props = NO_PROPERTIES
    if v5:
        props, pos = _properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.SUBACK])
    return SubAck(packet_id, tuple(buf[pos:end]), props)


def _decode_unsubscribe(buf: bytes, pos: int, end: int, v5: bool) -> Unsubscribe:
    packet_id = _u16_at(buf, pos, end)
    if not packet_id:
        raise MalformedPacketError("packet identifier 0")  # [MQTT-2.3.1-1]
    pos += 2
    props = NO_PROPERTIES
    if v5:
        props, pos = _properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.UNSUBSCRIBE])
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = _str_at(buf, pos, end)
        filters.append(topic_filter)
    if not filters:
        raise ProtocolViolationError("UNSUBSCRIBE without a topic filter")  # [MQTT-3.10.3-2]
    return Unsubscribe(packet_id, tuple(filters), props)


def _decode_unsuback(buf: bytes, pos: int, end: int, v5: bool) -> UnsubAck:
    packet_id = _u16_at(buf, pos, end)
    pos += 2
    if not v5:
        _expect_end(pos, end, "UNSUBACK")
        return UnsubAck(packet_id)
    props, pos = _properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.UNSUBACK])
    return UnsubAck(packet_id, tuple(buf[pos:end]), props)


def _decode_empty(cls: type[PingReq] | type[PingResp]) -> Callable[[bytes, int, int, bool], Packet]:
    def decode_empty(buf: bytes, pos: int, end: int, v5: bool) -> Packet:
        _expect_end(pos, end, cls.__name__)
        return cls()

    return decode_empty


def _decode_disconnect(buf: bytes, pos: int, end: int, v5: bool) -> Disconnect:
    if not v5 or pos == end:
        _expect_end(pos, end, "DISCONNECT")
        return Disconnect()
    reason = buf[pos]
    props = NO_PROPERTIES
    if pos + 1 < end:
        props, pos = _properties_at(buf, pos + 1, end, ALLOWED_PROPERTIES[PacketType.DISCONNECT])
        _expect_end(pos, end, "DISCONNECT")
    return Disconnect(reason, props)


def _decode_auth(buf: bytes, pos: int, end: int, v5: bool) -> Auth:
    if not v5:
        raise MalformedPacketError("AUTH is an MQTT 5 packet")  # MQTT 3.1.1 §2.2.1: type 15 reserved
    if pos == end:
        return Auth()
    reason = buf[pos]
    props = NO_PROPERTIES
    if pos + 1 < end:
        props, pos = _properties_at(buf, pos + 1, end, ALLOWED_PROPERTIES[PacketType.AUTH])
        _expect_end(pos, end, "AUTH")
    return Auth(reason, props)


_DECODERS: Final[dict[int, Callable[[bytes, int, int, bool], Packet]]] = {
    PacketType.CONNECT: _decode_connect,
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBACK: _ack_decoder(PubAck, PacketType.PUBACK),
    PacketType.PUBREC: _ack_decoder(PubRec, PacketType.PUBREC),
    PacketType.PUBREL: _ack_decoder(PubRel, PacketType.PUBREL),
    PacketType.PUBCOMP: _ack_decoder(PubComp, PacketType.PUBCOMP),
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _decode_unsuback,
    PacketType.PINGREQ: _decode_empty(PingReq),
    PacketType.PINGRESP: _decode_empty(PingResp),
    PacketType.DISCONNECT: _decode_disconnect,
    PacketType.AUTH: _decode_auth,
}


def decode_all(data: bytes, version: int = MQTT_311, max_packet_size: int = MAX_PACKET_SIZE) -> list[Packet]:
    """Every packet in ``data``, which must end on a packet boundary (tests and tools)."""
    decoder = Decoder(max_packet_size, version)
    packets = decoder.feed(data)
    if decoder.buffered:
        raise MalformedPacketError("data ends inside a packet")
    return packets


def concat(packets: Iterable[Packet], version: int = MQTT_311) -> bytes:
    """The wire bytes of several packets back to back."""
    return b"".join(encode(p, version) for p in packets)
