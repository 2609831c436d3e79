"""Hypothesis strategies for MQTT packets of either protocol version.

Test helpers only: they build valid packets, the codec tests decide what to check.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from edgehub.mqtt.packets import (
    MQTT_5,
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
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from edgehub.mqtt.wire import ALLOWED_PROPERTIES, PROPERTY_SPECS, WILL_PROPERTIES

texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
topic_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00+#"), max_size=12)
payloads = st.binary(max_size=64)
packet_ids = st.integers(1, 65535)
u16 = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)

_NONZERO = {0x0B, 0x21, 0x23, 0x27}


def _value_strategy(ident: int, kind: int) -> st.SearchStrategy[Any]:
    low = 1 if ident in _NONZERO else 0
    if ident == 0x26:
        return st.lists(st.tuples(texts, texts), min_size=1, max_size=3).map(tuple)
    if ident == 0x0B:
        return st.lists(st.integers(1, 268_435_455), min_size=1, max_size=3).map(tuple)
    by_kind: dict[int, st.SearchStrategy[Any]] = {
        1: st.integers(0, 1),
        2: st.integers(low, 65535),
        3: st.integers(low, 2**32 - 1),
        5: texts,
        6: st.binary(max_size=16),
    }
    return by_kind[kind]


def properties(packet_type: int, version: int) -> st.SearchStrategy[Properties]:
    """Valid properties for ``packet_type``; always empty for MQTT 3.1.1."""
    if version != MQTT_5:
        return st.just(NO_PROPERTIES)
    optional = {
        PROPERTY_SPECS[ident][0]: _value_strategy(ident, PROPERTY_SPECS[ident][1])
        for ident in ALLOWED_PROPERTIES[packet_type]
    }
    if packet_type == PacketType.SUBSCRIBE:
        optional["subscription_identifiers"] = st.integers(1, 268_435_455).map(lambda i: (i,))
    return st.fixed_dictionaries({}, optional=optional).map(lambda d: Properties(**d))


def _reason(version: int, codes: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return codes if version == MQTT_5 else st.just(0)


def connects(version: int) -> st.SearchStrategy[Connect]:
    wills = st.builds(
        Will, topic_names, payloads, st.integers(0, 2), st.booleans(), properties(WILL_PROPERTIES, version)
    )
    users = st.none() | texts

    @st.composite
    def build(draw: st.DrawFn) -> Connect:
        username = draw(users)
        password = draw(st.none() | st.binary(max_size=16))
        if version != MQTT_5 and username is None:
            password = None  # MQTT 3.1.1 [MQTT-3.1.2-22]
        return Connect(
            version, draw(texts), draw(st.booleans()), draw(u16), username, password,
            draw(st.none() | wills), draw(properties(PacketType.CONNECT, version)),
        )

    return build()


def _acks(cls: type[PubAck] | type[PubRec] | type[PubRel] | type[PubComp], kind: int, version: int
          ) -> st.SearchStrategy[Packet]:
    return st.builds(cls, packet_ids, _reason(version, st.integers(0, 255)), properties(kind, version))


def packets(version: int) -> st.SearchStrategy[Packet]:
    """Any valid packet of protocol level ``version`` (AUTH for MQTT 5 only)."""
    publishes = st.one_of(
        st.builds(Publish, topic_names, payloads, st.just(0), st.booleans(), st.just(False), st.just(0),
                  properties(PacketType.PUBLISH, version)),
        st.builds(Publish, topic_names, payloads, st.integers(1, 2), st.booleans(), st.booleans(), packet_ids,
                  properties(PacketType.PUBLISH, version)),
    )
    if version == MQTT_5:
        subscriptions = st.builds(
            Subscription, texts, st.integers(0, 2), st.booleans(), st.booleans(), st.integers(0, 2)
        )
    else:
        subscriptions = st.builds(Subscription, texts, st.integers(0, 2))
    reason_lists = st.lists(st.integers(0, 255), max_size=4).map(tuple)
    choices: list[st.SearchStrategy[Packet]] = [
        connects(version),
        st.builds(ConnAck, st.booleans(), st.integers(0, 255), properties(PacketType.CONNACK, version)),
        publishes,
        _acks(PubAck, PacketType.PUBACK, version),
        _acks(PubRec, PacketType.PUBREC, version),
        _acks(PubRel, PacketType.PUBREL, version),
        _acks(PubComp, PacketType.PUBCOMP, version),
        st.builds(Subscribe, packet_ids, st.lists(subscriptions, min_size=1, max_size=3).map(tuple),
                  properties(PacketType.SUBSCRIBE, version)),
        st.builds(SubAck, packet_ids, reason_lists, properties(PacketType.SUBACK, version)),
        st.builds(Unsubscribe, packet_ids, st.lists(texts, min_size=1, max_size=3).map(tuple),
                  properties(PacketType.UNSUBSCRIBE, version)),
        st.builds(UnsubAck, packet_ids, reason_lists if version == MQTT_5 else st.just(()),
                  properties(PacketType.UNSUBACK, version)),
        st.just(PingReq()),
        st.just(PingResp()),
        st.builds(
            Disconnect, _reason(version, st.integers(0, 255)), properties(PacketType.DISCONNECT, version)
        ),
    ]
    if version == MQTT_5:
        choices.append(st.builds(Auth, st.integers(0, 255), properties(PacketType.AUTH, version)))
    return st.one_of(choices)
