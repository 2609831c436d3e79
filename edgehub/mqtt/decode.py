"""MQTT 3.1.1 / 5.0 bytes to packets: an incremental decoder fed arbitrary chunks.

Sans-I/O, stateless beyond the byte buffer and protocol version; who may send what when
lives in the session, encoding in encode.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

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
from edgehub.mqtt.wire import (
    ALLOWED_PROPERTIES,
    MAX_PACKET_SIZE,
    WILL_PROPERTIES,
    MalformedPacketError,
    PacketTooLargeError,
    ProtocolViolationError,
    UnsupportedProtocolVersionError,
    bin_at,
    properties_at,
    str_at,
    u16_at,
)

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
    topic, pos = str_at(buf, pos, end)
    if "+" in topic or "#" in topic:
        # [MQTT-3.3.2-2]: no wildcards in a Topic Name.
        raise ProtocolViolationError("wildcard in topic name", ReasonCode.TOPIC_NAME_INVALID)
    return topic, pos


def _publish(
    topic: str, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int, props: Properties,
) -> Publish:
    """Publish(...) without the frozen dataclass __init__ (one object.__setattr__ call per field):
    the slot descriptors set the same fields at half the cost on the inbound hot path."""
    return Publish(topic, payload, qos, retain, dup, packet_id, props)


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
            props, pos = properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.PUBLISH])
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
    name, pos = str_at(buf, pos, end)
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
        props, pos = properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.CONNECT])
    client_id, pos = str_at(buf, pos, end)
    will = None
    if will_flag:
        will_props = NO_PROPERTIES
        if level == MQTT_5:
            will_props, pos = properties_at(buf, pos, end, ALLOWED_PROPERTIES[WILL_PROPERTIES])
        will_topic, pos = _topic_name_at(buf, pos, end)
        will_payload, pos = bin_at(buf, pos, end)
        will = Will(will_topic, will_payload, (flags >> 3) & 0x03, bool(flags & 0x20), will_props)
    username = password = None
    if has_user:
        username, pos = str_at(buf, pos, end)
    if has_password:
        password, pos = bin_at(buf, pos, end)
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
        props, stop = properties_at(buf, stop, end, ALLOWED_PROPERTIES[PacketType.CONNACK])
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
        packet_id = u16_at(buf, pos, end)
        if not packet_id:
            raise MalformedPacketError("packet identifier 0")  # [MQTT-2.3.1-1]
        pos += 2
        if not v5 or pos == end:
            _expect_end(pos, end, "acknowledgement")
            return cls(packet_id)
        reason = buf[pos]
        props = NO_PROPERTIES
        if pos + 1 < end:  # MQTT 5 §3.4.2.2: property length omitted when Remaining Length is 3
            props, pos = properties_at(buf, pos + 1, end, allowed)
            _expect_end(pos, end, "acknowledgement")
        return cls(packet_id, reason, props)

    return decode_ack


def _decode_subscribe(buf: bytes, pos: int, end: int, v5: bool) -> Subscribe:
    packet_id = u16_at(buf, pos, end)
    if not packet_id:
        raise MalformedPacketError("packet identifier 0")  # [MQTT-2.3.1-1]
    pos += 2
    props = NO_PROPERTIES
    if v5:
        props, pos = properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.SUBSCRIBE])
        if len(props.subscription_identifiers) > 1:
            raise ProtocolViolationError("more than one subscription identifier")  # MQTT 5 §3.8.2.1.2
    subs: list[Subscription] = []
    while pos < end:
        topic_filter, pos = str_at(buf, pos, end)
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
    packet_id = u16_at(buf, pos, end)
    pos += 2
    props = NO_PROPERTIES
    if v5:
        props, pos = properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.SUBACK])
    return SubAck(packet_id, tuple(buf[pos:end]), props)


def _decode_unsubscribe(buf: bytes, pos: int, end: int, v5: bool) -> Unsubscribe:
    packet_id = u16_at(buf, pos, end)
    if not packet_id:
        raise MalformedPacketError("packet identifier 0")  # [MQTT-2.3.1-1]
    pos += 2
    props = NO_PROPERTIES
    if v5:
        props, pos = properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.UNSUBSCRIBE])
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = str_at(buf, pos, end)
        filters.append(topic_filter)
    if not filters:
        raise ProtocolViolationError("UNSUBSCRIBE without a topic filter")  # [MQTT-3.10.3-2]
    return Unsubscribe(packet_id, tuple(filters), props)


def _decode_unsuback(buf: bytes, pos: int, end: int, v5: bool) -> UnsubAck:
    packet_id = u16_at(buf, pos, end)
    pos += 2
    if not v5:
        _expect_end(pos, end, "UNSUBACK")
        return UnsubAck(packet_id)
    props, pos = properties_at(buf, pos, end, ALLOWED_PROPERTIES[PacketType.UNSUBACK])
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
        props, pos = properties_at(buf, pos + 1, end, ALLOWED_PROPERTIES[PacketType.DISCONNECT])
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
        props, pos = properties_at(buf, pos + 1, end, ALLOWED_PROPERTIES[PacketType.AUTH])
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
