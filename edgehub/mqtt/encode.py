"""MQTT 3.1.1 / 5.0 packets to bytes, with fast paths for PUBLISH and batched PUBACKs.

Sans-I/O and stateless; decoding lives in decode.py, session rules in heads/mqtt/session.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from edgehub.mqtt.wire import (
    PACK_U16,
    binary_field,
    encode_properties,
    encode_varint,
    fixed_header,
    utf8_field,
)

# --- packet encoders ---------------------------------------------------------------------------


def _encode_connect(p: Connect, version: int) -> bytes:
    level = p.protocol_level
    flags = 0x02 if p.clean_start else 0
    will_part = b""
    if p.will is not None:
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
        will_props = encode_properties(p.will.properties) if level == MQTT_5 else b""
        will_part = will_props + utf8_field(p.will.topic) + binary_field(p.will.payload)
    if p.username is not None:
        flags |= 0x80
    if p.password is not None:
        flags |= 0x40
    body = [
        utf8_field(p.protocol_name), bytes((level, flags)), PACK_U16(p.keep_alive),
        encode_properties(p.properties) if level == MQTT_5 else b"",
        utf8_field(p.client_id), will_part,
        utf8_field(p.username) if p.username is not None else b"",
        binary_field(p.password) if p.password is not None else b"",
    ]
    return fixed_header(0x10, b"".join(body))


def _encode_connack(p: ConnAck, version: int) -> bytes:
    body = bytes((1 if p.session_present else 0, p.reason_code))
    if version == MQTT_5:
        body += encode_properties(p.properties)
    return fixed_header(0x20, body)


def encode_publish(
    topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, *, retain: bool = False,
    dup: bool = False, properties: Properties = NO_PROPERTIES, version: int = MQTT_311,
) -> bytes:
    """One PUBLISH, the outbound hot path (one join: header, topic, payload)."""
    raw_topic = topic.encode()
    head = PACK_U16(len(raw_topic)) + raw_topic
    if qos:
        head += PACK_U16(packet_id)
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
        return bytes((first, 2)) + PACK_U16(packet_id)
    if props is NO_PROPERTIES:
        return bytes((first, 3)) + PACK_U16(packet_id) + bytes((reason,))
    return fixed_header(first, PACK_U16(packet_id) + bytes((reason,)) + encode_properties(props))


def _encode_subscribe(p: Subscribe, version: int) -> bytes:
    parts = [PACK_U16(p.packet_id)]
    if version == MQTT_5:
        parts.append(encode_properties(p.properties))
    for sub in p.subscriptions:
        options = sub.qos
        if version == MQTT_5:
            options |= (
                (0x04 if sub.no_local else 0) | (0x08 if sub.retain_as_published else 0)
                | (sub.retain_handling << 4)
            )
        parts.append(utf8_field(sub.topic_filter) + bytes((options,)))
    return fixed_header(0x82, b"".join(parts))


def _encode_suback(p: SubAck, version: int) -> bytes:
    props = encode_properties(p.properties) if version == MQTT_5 else b""
    return fixed_header(0x90, PACK_U16(p.packet_id) + props + bytes(p.reason_codes))


def _encode_unsubscribe(p: Unsubscribe, version: int) -> bytes:
    props = encode_properties(p.properties) if version == MQTT_5 else b""
    filters = b"".join(utf8_field(f) for f in p.topic_filters)
    return fixed_header(0xA2, PACK_U16(p.packet_id) + props + filters)


def _encode_unsuback(p: UnsubAck, version: int) -> bytes:
    if version != MQTT_5:
        return fixed_header(0xB0, PACK_U16(p.packet_id))
    return fixed_header(0xB0, PACK_U16(p.packet_id) + encode_properties(p.properties) + bytes(p.reason_codes))


def _encode_disconnect(p: Disconnect, version: int) -> bytes:
    # MQTT 5 §3.14.2.1: Remaining Length 0 means Normal disconnection without properties.
    if version != MQTT_5 or (p.reason_code == 0 and p.properties is NO_PROPERTIES):
        return b"\xe0\x00"
    return fixed_header(0xE0, bytes((p.reason_code,)) + encode_properties(p.properties))


def _encode_auth(p: Auth, version: int) -> bytes:
    if p.reason_code == 0 and p.properties is NO_PROPERTIES:
        return b"\xf0\x00"
    return fixed_header(0xF0, bytes((p.reason_code,)) + encode_properties(p.properties))


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


def concat(packets: Iterable[Packet], version: int = MQTT_311) -> bytes:
    """The wire bytes of several packets back to back."""
    return b"".join(encode(p, version) for p in packets)
