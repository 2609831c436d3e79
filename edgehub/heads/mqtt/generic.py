"""Generic topics in the MQTT head: what a client's PUBLISH, SUBSCRIBE and acks on plain MQTT
topics (outside the IoT Hub scheme) do, between one MqttSession and the shared Broker.

Sans-I/O like the session it serves: bytes go through the session's output, time comes from
the injected wall clock; matching, queues, retained messages and wills are edgehub.broker's.
With ``mqttSettings__genericTopics`` off none of this exists and the IoT Hub topics behave as
before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgehub.broker.acl import Acl, AclRule, Client
from edgehub.broker.core import Broker
from edgehub.broker.message import BrokerMessage, SubscriptionOptions
from edgehub.broker.topics import filter_problem, parse_shared, topic_name_problem
from edgehub.errors import StoreError
from edgehub.heads.mqtt.acks import FIXED_PUBREC, PENDING_PUBACK, PENDING_PUBREC, AckBatch
from edgehub.heads.mqtt.generic_auth import is_anonymous
from edgehub.heads.mqtt.topics import IOT_HUB_FIRST_LEVELS
from edgehub.logs import RateLimitedLine, shown
from edgehub.message import Identity, Message, SystemProperty
from edgehub.metrics import MESSAGES_DROPPED
from edgehub.mqtt.encode import encode, encode_publish
from edgehub.mqtt.packets import (
    MQTT_5,
    NO_PROPERTIES,
    SUBACK_FAILURE_311,
    Connect,
    Properties,
    PubComp,
    Publish,
    PubRel,
    ReasonCode,
    Subscription,
)
from edgehub.routing.route import MQTT_TOPIC

if TYPE_CHECKING:
    from edgehub.heads.mqtt.session import MqttSession

log = logging.getLogger(__name__)
_refused_line = RateLimitedLine(log, logging.INFO)
"""A client may publish to a denied topic at any rate: one line per 10 s, with a count."""


@dataclass(slots=True)
class GenericTopics:
    """The head-wide side of generic topics: the broker, the ACL rules (read on each use, so a
    reloaded config file applies to the next publish and subscribe), the wall clock, and which
    topics routes take (those messages are also ingested into the store, like telemetry)."""

    broker: Broker
    acl_rules: Callable[[], tuple[AclRule, ...]] = tuple
    wall_time: Callable[[], float] = lambda: 0.0
    routed: Callable[[str], bool] = lambda topic: False
    _acl: Acl = field(default_factory=Acl)
    _dropped_reported: int = 0

    @property
    def acl(self) -> Acl:
        rules = self.acl_rules()
        if rules != self._acl.rules:
            self._acl = Acl(rules)
        return self._acl

    def flow(self, mqtt: MqttSession, packet: Connect, identity: Identity, resume: bool) -> GenericFlow:
        """Attach a connection that was just accepted (CONNACK queued) to its broker session."""
        return GenericFlow(self, mqtt, packet, identity, resume)

    def tick(self) -> None:
        """Will delays, session expiry, expired queued messages; queue drops into the metrics."""
        self.broker.expire(self.wall_time())
        dropped = self.broker.dropped - self._dropped_reported
        if dropped:
            self._dropped_reported += dropped
            MESSAGES_DROPPED.labels("session_queue_full", "", "").inc(dropped)


class GenericFlow:
    """One connection's generic pub/sub: inbound QoS 0/1/2, subscriptions, outbound QoS 0/1/2
    (redelivered with DUP after a reconnect [MQTT-4.4.0-1]) and the will. A SessionLink."""

    def __init__(self, topics: GenericTopics, mqtt: MqttSession, packet: Connect, identity: Identity,
                 resume: bool) -> None:
        self._topics = topics
        self._broker = topics.broker
        self._mqtt = mqtt
        self._v5 = packet.protocol_level == MQTT_5
        self.anonymous = is_anonymous(identity)
        username = (packet.username or "") if self.anonymous else identity.id
        self._client = Client(packet.client_id, username, self.anonymous)
        self._identity = identity
        self._sent: dict[int, int] = {}
        """Outbound packet id → queue seq."""
        self._will: BrokerMessage | None = None
        self._will_delay = 0
        self._holding = False
        """Inside a SUBSCRIBE: retained messages wait until the SUBACK is queued."""
        self._held: list[bytes] = []
        now = topics.wall_time()
        assert mqtt.state is not None
        self.session, self.resumed = self._broker.connect(
            packet.client_id, resume=resume, expiry_interval=mqtt.state.expiry_interval, link=self, now=now)
        if packet.will is not None:
            self._take_will(packet)
        self._resend()
        self.pump()

    # --- inbound PUBLISH ------------------------------------------------------------------------

    def owns_topic(self, topic: str) -> bool:
        return topic.split("/", 1)[0] not in IOT_HUB_FIRST_LEVELS

    def on_publish(self, packet: Publish, topic: str, batch: AckBatch, messages: list[Message]) -> bool:
        """Handle a PUBLISH on a generic topic; False when the topic is not generic (the IoT
        Hub refusal applies). Acks go in ``batch``: after the ingest when a route takes it."""
        if not self.owns_topic(topic):
            return False
        problem = topic_name_problem(topic)
        if problem is not None:
            self._mqtt.fail(ReasonCode.TOPIC_NAME_INVALID, problem)  # [MQTT-3.3.2-2]
            return True
        qos = packet.qos
        # '$' topics are the server's [MQTT-4.7.2]: no client publishes there.
        if topic.startswith("$") or not self._topics.acl.may_publish(self._client, topic):
            _refused_line("MQTT publish of %s to %s refused by the acl", shown(self._client.client_id),
                          shown(topic, 128))
            # MQTT 5: 0x87; MQTT 3.1.1 has no negative ack: acked and dropped, as Mosquitto does.
            _ack(packet, batch, ReasonCode.NOT_AUTHORIZED if self._v5 else ReasonCode.SUCCESS)
            return True
        now = self._topics.wall_time()
        session = self.session
        if qos == 2 and packet.packet_id in session.inbound_qos2:
            _ack(packet, batch, ReasonCode.SUCCESS)  # a resend before PUBREL: published once only
            return True
        message = _broker_message(packet, topic, self._client.client_id, now)
        routed = self._topics.routed(topic)
        try:
            receivers = self._broker.publish(message, now, strict=True)
        except StoreError as exc:
            self._store_failed(packet, batch, topic, exc)
            return True
        if routed:
            messages.append(self._store_message(message))
        if qos == 2:
            self._broker.qos2_received(session, packet.packet_id, pending=True)
        if qos and routed:
            batch.add(packet.packet_id, PENDING_PUBACK if qos == 1 else PENDING_PUBREC)
        else:
            nobody = self._v5 and not receivers
            _ack(packet, batch, ReasonCode.NO_MATCHING_SUBSCRIBERS if nobody else ReasonCode.SUCCESS)
        return True

    def _store_failed(self, packet: Publish, batch: AckBatch, topic: str, exc: StoreError) -> None:
        """Not kept for the persistent sessions it was for: refused, never acked (0x97 in MQTT 5;
        MQTT 3.1.1 has no negative ack, so the connection closes unacked)."""
        _refused_line("MQTT publish of %s to %s refused: %s", shown(self._client.client_id),
                      shown(topic, 128), exc)
        if self._v5:
            _ack(packet, batch, ReasonCode.QUOTA_EXCEEDED)
        elif packet.qos:
            self._mqtt.fail(ReasonCode.QUOTA_EXCEEDED, "store full: closing without PUBACK (MQTT 3.1.1)")

    def on_pubrel(self, packet_id: int) -> bool:
        """PUBREL of an inbound generic QoS 2 message: PUBCOMP; False when the id is not ours."""
        if packet_id not in self.session.inbound_qos2:
            return False
        self._broker.qos2_received(self.session, packet_id, pending=False)
        self._mqtt.send(encode(PubComp(packet_id), self._mqtt.version))
        return True

    def _store_message(self, message: BrokerMessage) -> Message:
        system: dict[str, str] = {MQTT_TOPIC: message.topic}
        if not self.anonymous:
            system[SystemProperty.CONNECTION_DEVICE_ID] = self._identity.device_id
            if self._identity.module_id:
                system[SystemProperty.CONNECTION_MODULE_ID] = self._identity.module_id
        if message.content_type is not None:
            system[SystemProperty.CONTENT_TYPE] = message.content_type
        if message.correlation_data is not None:
            system[SystemProperty.CORRELATION_ID] = message.correlation_data.decode("utf-8", "replace")
        # The topic is also an application property: route conditions can test it, and an upstream
        # (which sends a message as its sender's telemetry) carries it in the property bag.
        app: Mapping[str, str] = {MQTT_TOPIC: message.topic, **dict(message.user_properties)}
        return Message(message.payload, app, system)

    # --- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------------

    def grant(self, subscription: Subscription, subscription_id: int | None) -> int:
        """The SUBACK code for one generic filter (MQTT 5 §3.9.3): the granted QoS, 0x8F for an
        invalid filter, 0x87 when the ACL refuses it (3.1.1: 0x80 for both)."""
        topic_filter = subscription.topic_filter
        self._holding = True
        if filter_problem(topic_filter) is not None:
            return ReasonCode.TOPIC_FILTER_INVALID if self._v5 else SUBACK_FAILURE_311
        shared = parse_shared(topic_filter) is not None
        if shared and subscription.no_local:
            return ReasonCode.PROTOCOL_ERROR  # [MQTT-3.8.3-4]
        if not self._topics.acl.may_subscribe(self._client, topic_filter):
            log.info("MQTT subscription of %s to %s refused by the acl", self._client.client_id,
                     shown(topic_filter, 128))
            return ReasonCode.NOT_AUTHORIZED if self._v5 else SUBACK_FAILURE_311
        qos = min(subscription.qos, 2)
        options = SubscriptionOptions(
            qos, subscription.no_local, subscription.retain_as_published, subscription.retain_handling,
            subscription_id,
        )
        self._broker.subscribe(self.session, topic_filter, options, self._topics.wall_time())
        return qos

    def release(self) -> None:
        """The SUBACK is queued: send the retained messages the new subscriptions matched."""
        self._holding = False
        held, self._held = self._held, []
        for wire in held:
            self._mqtt.send(wire)
        self.pump()

    def unsubscribe(self, topic_filter: str) -> bool:
        return self._broker.unsubscribe(self.session, topic_filter)

    # --- outbound: the SessionLink ----------------------------------------------------------------

    def send_now(self, message: BrokerMessage, retain: bool, subscription_ids: tuple[int, ...]) -> None:
        mqtt = self._mqtt
        if not mqtt.connected:
            return
        wire = self._encode(message, 0, 0, retain, subscription_ids, dup=False)
        if wire is None:
            return
        if self._holding:
            self._held.append(wire)
            return
        mqtt.send(wire)
        mqtt.wake()

    def wake(self) -> None:
        if not self._holding and self.pump():
            self._mqtt.wake()

    def pump(self) -> bool:
        """Send waiting QoS 1/2 entries inside the client's Receive Maximum; True when any went."""
        mqtt = self._mqtt
        window = mqtt.publish_window
        if window <= 0:
            return False
        now = self._topics.wall_time()
        sent = []
        session = self.session
        while window > 0:
            item = session.next_waiting()
            if item is None:
                break
            seq, entry = item
            if entry.message.expired(now):
                self._broker.acknowledged(self.session, seq)  # never delivered once expired
                continue
            packet_id = mqtt.reserve_packet_id()
            wire = self._encode(entry.message, entry.qos, packet_id, entry.retain, entry.subscription_ids,
                                dup=False)
            if wire is None:
                mqtt.release_packet_id(packet_id)
                self._broker.acknowledged(self.session, seq)  # too large for the client [MQTT-3.1.2-25]
                continue
            entry.packet_id = packet_id
            self._sent[packet_id] = seq
            mqtt.send(wire)
            sent.append((seq, entry))
            window -= 1
        if sent:
            self._broker.sent(self.session, sent)
        return bool(sent)

    def _resend(self) -> None:
        """A resumed session: unacknowledged PUBLISHes again with DUP and their packet id, PUBRELs
        again for released QoS 2 ones [MQTT-4.4.0-1]."""
        mqtt = self._mqtt
        again: list[int] = []
        for seq, entry in self.session.in_flight():
            packet_id = entry.packet_id
            if not mqtt.claim_packet_id(packet_id):
                entry.packet_id, entry.released = 0, False  # id in use twice: sent again as new
                again.append(seq)
                continue
            self._sent[packet_id] = seq
            if entry.released:
                mqtt.send(encode(PubRel(packet_id), mqtt.version))
                continue
            wire = self._encode(entry.message, entry.qos, packet_id, entry.retain, entry.subscription_ids,
                                dup=True)
            if wire is not None:
                mqtt.send(wire)
        self.session.wait_again(again)

    def _encode(self, message: BrokerMessage, qos: int, packet_id: int, retain: bool,
                subscription_ids: tuple[int, ...], *, dup: bool) -> bytes | None:
        props = self._properties(message, subscription_ids) if self._v5 else NO_PROPERTIES
        wire = encode_publish(message.topic, message.payload, qos, packet_id, retain=retain, dup=dup,
                              properties=props, version=self._mqtt.version)
        limit = self._mqtt.client_max_packet
        return None if limit is not None and len(wire) > limit else wire

    def _properties(self, message: BrokerMessage, subscription_ids: tuple[int, ...]) -> Properties:
        expiry = None
        if message.expires_at is not None:
            expiry = max(0, math.ceil(message.expires_at - self._topics.wall_time()))  # [MQTT-3.3.2-6]
        if (expiry is None and not subscription_ids and not message.user_properties
                and message.payload_format is None and message.content_type is None
                and message.response_topic is None and message.correlation_data is None):
            return NO_PROPERTIES
        return Properties(
            payload_format_indicator=message.payload_format, message_expiry_interval=expiry,
            content_type=message.content_type, response_topic=message.response_topic,
            correlation_data=message.correlation_data, subscription_identifiers=subscription_ids,
            user_properties=message.user_properties,
        )

    # --- acks from the client ---------------------------------------------------------------------

    def on_puback(self, packet_id: int) -> bool:
        seq = self._sent.pop(packet_id, None)
        if seq is None:
            return False
        self._mqtt.release_packet_id(packet_id)
        self._broker.acknowledged(self.session, seq)
        self.pump()
        return True

    def on_pubrec(self, packet_id: int, reason_code: int) -> bool:
        seq = self._sent.get(packet_id)
        if seq is None:
            return False
        if reason_code >= 0x80:
            return self.on_puback(packet_id)  # refused: the flow ends here (MQTT 5 §4.3.3)
        self._broker.released(self.session, seq)
        self._mqtt.send(encode(PubRel(packet_id), self._mqtt.version))
        return True

    def on_pubcomp(self, packet_id: int) -> bool:
        return self.on_puback(packet_id)

    # --- will and end -----------------------------------------------------------------------------

    def _take_will(self, packet: Connect) -> None:
        will = packet.will
        assert will is not None
        if not self.owns_topic(will.topic):
            return
        if topic_name_problem(will.topic) is not None or will.topic.startswith("$") \
                or not self._topics.acl.may_publish(self._client, will.topic):
            log.info("MQTT will of %s on %s ignored: not a topic it may publish", self._client.client_id,
                     shown(will.topic, 128))
            return
        props = will.properties
        self._will_delay = props.will_delay_interval or 0
        now = self._topics.wall_time()
        self._will = BrokerMessage(
            will.topic, will.payload, will.qos, will.retain, self._client.client_id,
            None if props.message_expiry_interval is None else now + props.message_expiry_interval,
            props.payload_format_indicator, props.content_type, props.response_topic,
            props.correlation_data, props.user_properties,
        )

    def closed(self, publish_will: bool, expiry_interval: int) -> None:
        """The connection ended; the will is due unless it closed with DISCONNECT 0x00."""
        will = self._will if publish_will else None
        self._will = None
        self._broker.disconnect(self.session, self, self._topics.wall_time(), will=will,
                                will_delay=self._will_delay, expiry_interval=expiry_interval)


def _ack(packet: Publish, batch: AckBatch, reason: int) -> None:
    """A PUBACK (QoS 1) or PUBREC (QoS 2) with ``reason``, decided on receipt; nothing for QoS 0."""
    if packet.qos:
        batch.add(packet.packet_id, reason | (FIXED_PUBREC if packet.qos == 2 else 0))


def _broker_message(packet: Publish, topic: str, origin: str, now: float) -> BrokerMessage:
    props = packet.properties
    if props is NO_PROPERTIES:
        return BrokerMessage(topic, packet.payload, packet.qos, packet.retain, origin)
    expiry = props.message_expiry_interval
    return BrokerMessage(
        topic, packet.payload, packet.qos, packet.retain, origin,
        None if expiry is None else now + expiry, props.payload_format_indicator, props.content_type,
        props.response_topic, props.correlation_data, props.user_properties,
    )
