"""The MQTT protocol state machine of ONE client connection: bytes in, bytes and events out.

Sans-I/O: never touches a socket, a task or a clock (time comes in as ``now``); it decides
what the protocol requires, the server decides when to ingest and deliver.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from edgehub.auth import authorize
from edgehub.errors import AuthError
from edgehub.heads.mqtt.acks import FIXED_PUBREC, PENDING_PUBACK, PENDING_PUBREC, AckBatch
from edgehub.heads.mqtt.events import (
    Closed,
    Connected,
    DeliveryChanged,
    Event,
    FeedChanged,
    Phase,
    PublishAcked,
    ServiceRequested,
    TelemetryReceived,
    WillReady,
)
from edgehub.heads.mqtt.generic_auth import is_anonymous
from edgehub.heads.mqtt.policy import (
    Authenticated,
    Authenticator,
    Authorizer,
    ConnectRequest,
    OwnTopicsAuthorizer,
    SessionConfig,
)
from edgehub.heads.mqtt.services import ServiceSubscriptions
from edgehub.heads.mqtt.sessions import SessionState, SessionTable
from edgehub.heads.mqtt.topics import (
    DeliveryFilter,
    TelemetryParser,
    delivery_filter,
    is_generic_filter,
    is_valid_filter,
)
from edgehub.heads.mqtt.v5 import connack_properties, with_v5_properties
from edgehub.iothub.twin_topics import PREFIX as SERVICE_PREFIX
from edgehub.iothub.twin_topics import Feed, parse_request
from edgehub.logs import RateLimitedLine, shown
from edgehub.message import Identity, Message
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode, encode_publish
from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    NO_PROPERTIES,
    SUBACK_FAILURE_311,
    ConnAck,
    Connect,
    ConnectReturnCode,
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
    ReasonCode,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from edgehub.mqtt.session_rules import MAX_PACKET_ID, free_packet_id, keep_alive_expired
from edgehub.mqtt.wire import MqttError, UnsupportedProtocolVersionError

if TYPE_CHECKING:  # generic topics (edgehub.broker) are loaded only with mqttSettings__genericTopics
    from edgehub.heads.mqtt.generic import GenericFlow, GenericTopics

log = logging.getLogger(__name__)
# Unauthenticated peers choose how often these happen: one line per 10 s each (issue 15).
_connect_refused_line = RateLimitedLine(log, logging.WARNING)
_unauthenticated_closed_line = RateLimitedLine(log, logging.INFO)


# --- the session -------------------------------------------------------------------------------

_NEVER: Final = float("inf")
"""The credential expiry of a session whose credential does not expire."""
SENT_AT_QOS_0: Final = -1
"""MqttSession.publish of a delivery at QoS 0: written, nothing to wait for (it counts as delivered)."""
DELIVERY_QOS_CACHE: Final = 256
"""Delivery topics whose QoS a session remembers before it starts over."""

_HANDLERS: Final[dict[Phase, dict[type, str]]] = {
    Phase.AWAITING_CONNECT: {Connect: "_on_connect"},
    Phase.CONNECTED: {
        PubAck: "_on_puback",
        PubRel: "_on_pubrel",
        PubRec: "_on_pubrec",
        PubComp: "_on_pubcomp",
        Subscribe: "_on_subscribe",
        Unsubscribe: "_on_unsubscribe",
        PingReq: "_on_pingreq",
        Disconnect: "_on_disconnect",
    },
    Phase.CLOSED: {},
}
"""Which packets each phase accepts; anything else is a protocol error ([MQTT-3.1.0-1]: CONNECT
first; [MQTT-3.1.0-2]: never twice; server-to-client packets never come from a client).
PUBLISH when connected takes the batching fast path in ``_handle``."""


class MqttSession:
    """One client connection's MQTT state machine.

    Feed ``receive_data(bytes, now)``; send ``data_to_send()``; act on the events.
    ``tick(now)`` enforces the CONNECT timeout, keep alive and credential expiry. Outbound QoS 1 via
    ``publish`` inside ``publish_window``; inbound acks via ``ack`` / ``refuse``.
    """

    def __init__(
        self, authenticator: Authenticator, table: SessionTable, now: float, *,
        authorizer: Authorizer | None = None, config: SessionConfig | None = None,
        peer_certificates: tuple[bytes, ...] = (), generic: GenericTopics | None = None,
    ) -> None:
        self.config = config or SessionConfig()
        self._generic_topics = generic
        self._generic: GenericFlow | None = None
        """Plain MQTT topics (mqttSettings__genericTopics), once connected; None: IoT Hub only."""
        self.wake: Callable[[], None] = _nothing
        """Set by the server: output was queued outside receive_data / tick (generic delivery)."""
        self._authenticate = authenticator
        self._authorizer: Authorizer = authorizer or OwnTopicsAuthorizer()
        self._table = table
        self._peer_certificates = peer_certificates
        self._decoder = Decoder(self.config.max_packet_size)
        self.phase = Phase.AWAITING_CONNECT
        self.version = MQTT_311
        self.identity: Identity | None = None
        self.state: SessionState | None = None
        self._created = now
        self._now = now
        self._last_received = now
        self._keep_alive = 0
        self._credential_expires = _NEVER
        self._will: Message | None = None
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._parser: TelemetryParser | None = None
        self._properties_of: Callable[[str], tuple[Mapping[str, str], Mapping[str, str]] | None] = _no_topics
        self._max_message_size = self.config.max_message_size
        self._receive_limit = sys.maxsize  # MQTT 3.1.1 has no Receive Maximum; reading pauses instead
        # inbound QoS 1/2 flow: acks owed, in receive order [MQTT-4.6.0-2]
        self._acks: deque[AckBatch] = deque()
        self._batches: dict[int, AckBatch] = {}
        self._next_token = 1
        self._inbound_unacked = 0
        self._awaiting_pubrel: set[int] = set()
        self._aliases: dict[int, str] = {}
        self._refused_topics: set[str] = set()
        # outbound QoS 1 flow
        self._inflight: set[int] = set()
        self._next_packet_id = 1
        self._client_receive_maximum = 65535
        self._client_max_packet: int | None = None
        self._delivery: list[DeliveryFilter] = []
        # delivery topic -> its QoS under self._delivery (-1: none matches); emptied when that
        # changes. Topics repeat: one per input and set of sender properties.
        self._delivery_qos: dict[str, int] = {}
        self._services: ServiceSubscriptions | None = None
        self._assigned_client_id: str | None = None

    # --- public API ----------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Handle bytes from the client; return the events they caused (at most one TelemetryReceived)."""
        if self.phase is Phase.CLOSED:
            return []
        self._now = self._last_received = now
        if now >= self._credential_expires:
            self._credential_expired()  # nothing more is taken in on an expired credential
            return self._take_events()
        try:
            packets = self._decoder.feed(data)
        except UnsupportedProtocolVersionError as exc:
            if self.phase is Phase.CONNECTED:
                self._fail(ReasonCode.PROTOCOL_ERROR, "second CONNECT")  # [MQTT-3.1.0-2]
                return self._take_events()
            # [MQTT-3.1.2-2]: CONNACK 0x01 (the 3.1.1 form every client can read), then close.
            self._out.append(encode(ConnAck(False, ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION)))
            self._finish(str(exc), exc.reason_code, publish_will=False)
            return self._take_events()
        except MqttError as error:
            self._fail(error.reason_code, error.detail)
            return self._take_events()
        if packets:
            self._handle(packets, now)
        return self._take_events()

    def data_to_send(self) -> bytes:
        """Bytes queued for the client since the last call."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def tick(self, now: float) -> list[Event]:
        """Enforce the CONNECT timeout, keep alive and credential expiry at time ``now``."""
        self._now = now
        if self.phase is Phase.AWAITING_CONNECT and now - self._created >= self.config.connect_timeout:
            self._finish("no CONNECT in time", ReasonCode.UNSPECIFIED_ERROR, publish_will=False)
        elif now >= self._credential_expires:
            self._credential_expired()
        elif self.phase is Phase.CONNECTED and keep_alive_expired(self._keep_alive, self._last_received, now):
            # [MQTT-3.1.2-24] (3.1.1), [MQTT-3.1.2-22] (5): nothing for 1.5 x Keep Alive -> disconnect.
            self._fail(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout")
        return self._take_events()

    def ack(self, token: int) -> None:
        """The messages of ``token`` are durable: release their PUBACKs / PUBRECs, in receive order."""
        self._resolve(token, ReasonCode.SUCCESS)

    def refuse(self, token: int, reason_code: int = ReasonCode.QUOTA_EXCEEDED) -> list[Event]:
        """The messages of ``token`` were not stored (store full): MQTT 5 acks them with
        ``reason_code``; MQTT 3.1.1 has no negative PUBACK, so the connection closes unacked
        (docs/architecture.md §1 invariant 6)."""
        if token not in self._batches:
            return []
        if self.version == MQTT_5:
            self._resolve(token, reason_code)
            return []
        self._finish("store full: closing without PUBACK (MQTT 3.1.1)", reason_code, publish_will=True)
        return self._take_events()

    def connection_lost(self, now: float) -> list[Event]:
        """The transport closed. Without a DISCONNECT first, the will is due."""
        self._now = now
        if self.phase is not Phase.CLOSED:
            self._finish("connection lost", ReasonCode.UNSPECIFIED_ERROR, publish_will=True)
        return self._take_events()

    def take_over(self) -> list[Event]:
        """Another connection took this client id (MQTT 5 §3.1.4): say so and close."""
        if self.phase is not Phase.CONNECTED:
            return []
        return self.close(ReasonCode.SESSION_TAKEN_OVER, "session taken over")

    def shut_down(self) -> list[Event]:
        """The server is stopping: v5 DISCONNECT 0x8B, then close."""
        return self.close(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down")

    def close(self, reason_code: int, detail: str) -> list[Event]:
        """Close for a server-side reason: MQTT 5 clients get DISCONNECT ``reason_code`` first;
        acks still owed are never sent."""
        if self.phase is Phase.CLOSED:
            return []
        self._fail(reason_code, detail)
        return self._take_events()

    @property
    def publish_window(self) -> int:
        """How many more QoS 1 PUBLISHes may be in flight to the client now (its Receive Maximum)."""
        if self.phase is not Phase.CONNECTED:
            return 0
        return min(self._client_receive_maximum, self.config.outbound_window) - len(self._inflight)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def unacked_inbound(self) -> int:
        """QoS 1/2 publishes received whose ack still waits for ingest."""
        return self._inbound_unacked

    def accepts(self, topic: str) -> bool:
        """Whether a granted subscription of this client matches ``topic`` [MQTT-3.3.4]."""
        return any(f.matches(topic) for f in self._delivery)

    def delivery_qos(self, topic: str) -> int:
        """The QoS a delivery on ``topic`` goes out at: the highest granted QoS of the matching
        subscriptions [MQTT-3.3.4-2, 3.8.4-6] (deliveries are QoS 1 at most); -1 when none matches."""
        known = self._delivery_qos.get(topic)
        if known is not None:
            return known
        qos = max((f.qos for f in self._delivery if f.matches(topic)), default=-1)
        if len(self._delivery_qos) >= DELIVERY_QOS_CACHE:
            self._delivery_qos.clear()
        self._delivery_qos[topic] = qos
        return qos

    def _set_delivery(self, filters: list[DeliveryFilter]) -> None:
        self._delivery = filters
        self._delivery_qos.clear()

    def publish(
        self, topic: str, payload: bytes, properties: Properties = NO_PROPERTIES, qos: int = 1,
    ) -> int:
        """Queue a delivery PUBLISH at ``qos`` (``delivery_qos``); return its packet id (QoS 1),
        SENT_AT_QOS_0 (QoS 0: nothing to wait for), or 0 when it exceeds the client's Maximum Packet
        Size and is discarded as if sent [MQTT-3.1.2-25]. QoS 1 needs ``publish_window`` > 0."""
        if qos == 0:
            wire = encode_publish(topic, payload, 0, properties=properties, version=self.version)
            if self._client_max_packet is not None and len(wire) > self._client_max_packet:
                return 0
            self._out.append(wire)
            return SENT_AT_QOS_0
        if self.publish_window <= 0:
            raise RuntimeError("publish outside the in-flight window")
        packet_id = self._allocate_packet_id()
        wire = encode_publish(topic, payload, 1, packet_id, properties=properties, version=self.version)
        if self._client_max_packet is not None and len(wire) > self._client_max_packet:
            return 0
        self._inflight.add(packet_id)
        self._out.append(wire)
        return packet_id

    def publish_feed(self, feed: Feed, target: Identity, topic: str, payload: bytes) -> bool:
        """Queue a twin response, desired patch or method request at QoS 0 when the client
        subscribed to ``feed`` for ``target``; False (nothing sent) otherwise."""
        services = self._services
        if self.phase is not Phase.CONNECTED or services is None or not services.has(feed, target):
            return False
        wire = encode_publish(topic, payload, 0, version=self.version)
        if self._client_max_packet is not None and len(wire) > self._client_max_packet:
            return False
        self._out.append(wire)
        return True

    # --- for the generic-topics flow (edgehub.heads.mqtt.generic) ------------------------------

    @property
    def connected(self) -> bool:
        return self.phase is Phase.CONNECTED

    @property
    def client_max_packet(self) -> int | None:
        return self._client_max_packet

    def send(self, wire: bytes) -> None:
        self._out.append(wire)

    def fail(self, reason_code: int, detail: str) -> None:
        self._fail(reason_code, detail)

    def reserve_packet_id(self) -> int:
        """A packet id for an outbound QoS 1/2 PUBLISH, counted in the in-flight window."""
        packet_id = self._allocate_packet_id()
        self._inflight.add(packet_id)
        return packet_id

    def claim_packet_id(self, packet_id: int) -> bool:
        """Reuse ``packet_id`` (a resend after reconnect); False when it is in use already."""
        if packet_id in self._inflight:
            return False
        self._inflight.add(packet_id)
        return True

    def release_packet_id(self, packet_id: int) -> None:
        self._inflight.discard(packet_id)

    # --- dispatch ------------------------------------------------------------------------------

    def _take_events(self) -> list[Event]:
        events = self._events
        self._events = []
        return events

    def _handle(self, packets: list[Packet], now: float) -> None:
        batch = AckBatch()
        messages: list[Message] = []
        connected = Phase.CONNECTED
        for packet in packets:
            if type(packet) is Publish and self.phase is connected:
                self._on_publish(packet, messages, batch)
                continue
            if type(packet) is PubAck and self.phase is connected:  # a delivery's ack: as hot
                self._on_puback(packet, now)
                continue
            if self.phase is Phase.CLOSED:
                break
            handler = _HANDLERS[self.phase].get(type(packet))
            if handler is None:
                unexpected = type(packet).__name__
                self._fail(ReasonCode.PROTOCOL_ERROR, f"unexpected {unexpected} ({self.phase.value})")
                break
            getattr(self, handler)(packet, now)
        if self.phase is not connected or not (batch.ids or messages):
            return
        token = self._next_token
        self._next_token += 1
        self._acks.append(batch)
        self._batches[token] = batch
        if messages:
            self._events.append(TelemetryReceived(messages, token))
        else:
            self._resolve(token, ReasonCode.SUCCESS)  # only refusals or resends: nothing to wait for

    # --- CONNECT -------------------------------------------------------------------------------

    def _on_connect(self, packet: Connect, now: float) -> None:
        v5 = packet.protocol_level == MQTT_5
        self.version = MQTT_5 if v5 else MQTT_311
        if not packet.client_id and self._generic_topics is not None and (v5 or packet.clean_start):
            # [MQTT-3.1.3-6] (3.1.1, clean session) / MQTT 5 §3.2.2.3.7: the server assigns one.
            packet = replace(packet, client_id=f"auto-{os.urandom(16).hex()}")
            self._assigned_client_id = packet.client_id
        refusal = self._connect_refusal(packet)
        if refusal is None:
            try:
                proof = self._authenticate(ConnectRequest(
                    packet.client_id, packet.username, packet.password, self._peer_certificates,
                    packet.protocol_level,
                ))
            except AuthError as exc:
                _connect_refused_line("MQTT CONNECT of %s refused: %s", shown(packet.client_id),
                                      shown(exc, 200))
                credentials = packet.password is not None
                refusal = (ReasonCode.BAD_USER_NAME_OR_PASSWORD if credentials else ReasonCode.NOT_AUTHORIZED,
                           ConnectReturnCode.NOT_AUTHORIZED)
            else:
                identity = proof.identity if isinstance(proof, Authenticated) else proof
                if (self.config.require_client_id_match and packet.client_id != identity.id
                        and not is_anonymous(identity)):
                    refusal = (ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, ConnectReturnCode.IDENTIFIER_REJECTED)
                else:
                    refusal = self._open(packet, identity, now)
                if refusal is None and isinstance(proof, Authenticated) and proof.valid_for is not None:
                    self._credential_expires = now + proof.valid_for
        if refusal is not None:
            # [MQTT-3.2.2-6] (3.1.1) / [MQTT-3.2.2-7] (5): a refusing CONNACK, then close.
            reason_v5, code_311 = refusal
            self._out.append(encode(ConnAck(False, reason_v5 if v5 else code_311), self.version))
            self._finish("CONNECT refused", reason_v5, publish_will=False)

    def _connect_refusal(self, packet: Connect) -> tuple[int, int] | None:
        if not packet.client_id:
            # [MQTT-3.1.3-8]: a zero-byte client id needs Clean Session 1; IoT Hub needs an id anyway.
            return ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, ConnectReturnCode.IDENTIFIER_REJECTED
        if packet.properties.authentication_method is not None:
            # MQTT 5 §4.12: enhanced authentication is not offered.
            return ReasonCode.BAD_AUTHENTICATION_METHOD, ConnectReturnCode.NOT_AUTHORIZED
        return None

    def _session_expiry(self, packet: Connect) -> int:
        if packet.protocol_level != MQTT_5:
            return 0 if packet.clean_start else self.config.persistent_session_expiry
        requested = packet.properties.session_expiry_interval or 0
        return min(requested, self.config.max_session_expiry)

    def _open(self, packet: Connect, identity: Identity, now: float) -> tuple[int, int] | None:
        expiry = self._session_expiry(packet)
        opened = self._table.open(
            packet.client_id, identity, clean_start=packet.clean_start, expiry_interval=expiry,
            owner=self, now=now,
        )
        if opened is None:
            _connect_refused_line("MQTT CONNECT of %s refused: MaxConnectedClients reached",
                                  shown(packet.client_id))
            return ReasonCode.QUOTA_EXCEEDED, ConnectReturnCode.SERVER_UNAVAILABLE
        self.identity = identity
        self.state = opened.state
        authorizer = self._authorizer
        self._parser = TelemetryParser(identity, lambda topic: authorizer.may_publish(identity, topic))
        self._properties_of = self._parser.properties_of
        if self.version == MQTT_5:
            self._receive_limit = self.config.receive_maximum
        self._keep_alive = packet.keep_alive
        props = packet.properties
        if props.receive_maximum is not None:
            self._client_receive_maximum = props.receive_maximum
        self._client_max_packet = props.maximum_packet_size
        if packet.will is not None:
            self._will = self._will_message(packet)
        self.phase = Phase.CONNECTED
        props = connack_properties(self.config, packet, expiry, generic=self._generic_topics is not None,
                                   assigned_client_id=self._assigned_client_id)
        self._out.append(encode(ConnAck(opened.present, 0, props), self.version))
        displaced = opened.displaced if isinstance(opened.displaced, MqttSession) else None
        self._events.append(Connected(identity, packet.client_id, opened.present, self.version, displaced))
        if self._generic_topics is not None:
            self._generic = self._generic_topics.flow(self, packet, identity, opened.present)
        self._set_delivery([
            f for f in (delivery_filter(identity, t, q) for t, q in opened.state.subscriptions.items())
            if f is not None
        ])
        if self._delivery:
            self._events.append(DeliveryChanged(True))
        self._services = ServiceSubscriptions(identity)
        for topic_filter in opened.state.subscriptions:
            granted = self._services.grant(topic_filter)
            if granted is not None:
                self._events.append(FeedChanged(granted[0], granted[1], True))
        return None

    def _will_message(self, packet: Connect) -> Message | None:
        will = packet.will
        if will is None or self._parser is None:
            return None
        entry = self._parser.properties_of(will.topic)
        if entry is None and self._generic_topics is not None and is_generic_filter(will.topic):
            return None  # a generic will: the generic flow keeps it
        if entry is None:
            log.info("MQTT will of %s on %r ignored: not a telemetry topic of the client",
                     shown(packet.client_id), shown(will.topic, 128))
            return None
        return with_v5_properties(Message(will.payload, entry[0], entry[1]), will.properties)

    # --- inbound PUBLISH -----------------------------------------------------------------------

    def _on_publish(self, packet: Publish, messages: list[Message], batch: AckBatch) -> None:
        """The hot path: one telemetry PUBLISH into this read's batch."""
        topic = packet.topic
        props = packet.properties
        payload = packet.payload
        if props is not NO_PROPERTIES or not topic or packet.retain:
            resolved = self._publish_topic(packet)
            if resolved is None:
                return
            topic = resolved
        if len(payload) > self._max_message_size:
            self._fail(ReasonCode.PACKET_TOO_LARGE, "message above maxMessageSizeBytes")
            return
        qos = packet.qos
        if qos:
            self._inbound_unacked += 1
            if self._inbound_unacked > self._receive_limit:
                self._fail(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded")  # [MQTT-3.3.4-9]
                return
        if topic.startswith(SERVICE_PREFIX) and self._on_service_publish(packet, topic, batch):
            return  # twin and method requests never reach the telemetry cache (unique $rid each)
        entry = self._properties_of(topic)  # parse + identity check + authorizer, cached per topic
        if entry is None:
            self._not_telemetry(packet, topic, batch, messages)
            return
        if qos == 1:
            if batch.kinds is None:
                batch.ids.append(packet.packet_id)
            else:
                batch.add(packet.packet_id, PENDING_PUBACK)
        elif qos == 2:
            batch.add(packet.packet_id, PENDING_PUBREC)
            if packet.packet_id in self._awaiting_pubrel:
                return  # a resend before PUBREL: acknowledge, do not store twice (MQTT 5 §4.3.3)
            self._awaiting_pubrel.add(packet.packet_id)
        message = Message(payload, entry[0], entry[1])
        messages.append(message if props is NO_PROPERTIES else with_v5_properties(message, props))

    def _on_service_publish(self, packet: Publish, topic: str, batch: AckBatch) -> bool:
        """A twin GET / reported PATCH / method response: acked on receipt (in receive order),
        handed to the server as an event. False when it is not one this client may make."""
        if self._generic is not None and self._generic.anonymous:
            return False  # no twin or method of its own: refused below like any IoT Hub topic
        request = parse_request(topic)
        services = self._services
        target = services.resolve(request) if request is not None and services is not None else None
        if request is None or target is None:
            return False
        if packet.qos == 1:
            batch.add(packet.packet_id, ReasonCode.SUCCESS)
        elif packet.qos == 2:
            batch.add(packet.packet_id, FIXED_PUBREC | ReasonCode.SUCCESS)
            if packet.packet_id in self._awaiting_pubrel:
                return True  # a resend before PUBREL: acknowledge, do not act twice
            self._awaiting_pubrel.add(packet.packet_id)
        self._events.append(ServiceRequested(request, target, packet.payload))
        return True

    def _publish_topic(self, packet: Publish) -> str | None:
        """The topic of a PUBLISH off the fast path: MQTT 5 topic alias, empty topic, retain."""
        v5 = self.version == MQTT_5
        if packet.retain and v5 and self._generic is None:
            self._fail(ReasonCode.RETAIN_NOT_SUPPORTED, "retain not available")  # MQTT 5 §3.2.2.3.5
            return None
        if v5:
            return self._resolve_alias(packet.topic, packet.properties)
        if not packet.topic:
            self._fail(ReasonCode.TOPIC_NAME_INVALID, "empty topic name")  # [MQTT-4.7.3-1]
            return None
        return packet.topic

    def _resolve_alias(self, topic: str, props: Properties) -> str | None:
        """The topic of a v5 PUBLISH after Topic Alias handling (MQTT 5 §3.3.2.3.4)."""
        alias = props.topic_alias
        if alias is None:
            if not topic:
                self._fail(ReasonCode.PROTOCOL_ERROR, "empty topic without topic alias")
                return None
            return topic
        if alias > self.config.topic_alias_maximum:
            self._fail(ReasonCode.TOPIC_ALIAS_INVALID, "topic alias above maximum")  # [MQTT-3.3.2-9]
            return None
        if topic:
            self._aliases[alias] = topic
            return topic
        known = self._aliases.get(alias)
        if known is None:
            self._fail(ReasonCode.PROTOCOL_ERROR, "unknown topic alias")
        return known

    def _not_telemetry(self, packet: Publish, topic: str, batch: AckBatch, messages: list[Message]) -> None:
        """A generic topic for the generic flow (when on); else refused."""
        if self._generic is None or not self._generic.on_publish(packet, topic, batch, messages):
            self._refuse_publish(packet, topic, batch)

    def _refuse_publish(self, packet: Publish, topic: str, batch: AckBatch) -> None:
        """A publish as another identity or outside the telemetry scheme (docs/architecture.md §4)."""
        if topic not in self._refused_topics and len(self._refused_topics) < 16:
            self._refused_topics.add(topic)  # one line per topic, not per message
            log.info("MQTT publish of %s to %s refused: not its own telemetry topic", self.identity,
                     shown(topic, 128))
        if self.version != MQTT_5:
            # MQTT 3.1.1 has no negative PUBACK: closing is the only refusal the client notices.
            self._fail(ReasonCode.NOT_AUTHORIZED, "publish to a topic the client may not use")
        elif packet.qos:
            # A refused QoS 2 PUBLISH gets a PUBREC >= 0x80 and ends there (MQTT 5 §4.3.3).
            batch.add(packet.packet_id, ReasonCode.NOT_AUTHORIZED | (FIXED_PUBREC if packet.qos == 2 else 0))

    # --- acks and flow control -----------------------------------------------------------------

    def _resolve(self, token: int, reason: int) -> None:
        batch = self._batches.pop(token, None)
        if batch is None:
            return
        batch.outcome = reason
        if reason >= 0x80 and batch.kinds is not None:
            for packet_id, kind in zip(batch.ids, batch.kinds, strict=True):
                if kind == PENDING_PUBREC:
                    self._awaiting_pubrel.discard(packet_id)
        acks = self._acks
        if self.phase is not Phase.CONNECTED:
            return
        while acks and acks[0].outcome >= 0:
            done = acks.popleft()
            self._inbound_unacked -= len(done.ids)
            self._out.append(done.encode(self.version))

    def _on_puback(self, packet: PubAck, now: float) -> None:
        if self._generic is not None and self._generic.on_puback(packet.packet_id):
            return
        if packet.packet_id in self._inflight:
            self._inflight.discard(packet.packet_id)
            self._events.append(PublishAcked(packet.packet_id, packet.reason_code))

    def _on_pubrel(self, packet: PubRel, now: float) -> None:
        if self._generic is not None and self._generic.on_pubrel(packet.packet_id):
            return
        if packet.packet_id in self._awaiting_pubrel:
            self._awaiting_pubrel.discard(packet.packet_id)
            self._out.append(encode(PubComp(packet.packet_id), self.version))
        else:
            # MQTT 5 §3.7.2.1: 0x92 Packet Identifier not found; 3.1.1 just completes the flow.
            self._out.append(encode(PubComp(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
                                    self.version))

    def _on_pubrec(self, packet: PubRec, now: float) -> None:
        """Outbound QoS 2 is the generic flow's alone (IoT Hub deliveries go at QoS 1)."""
        if self._generic is None or not self._generic.on_pubrec(packet.packet_id, packet.reason_code):
            self._fail(ReasonCode.PROTOCOL_ERROR, "PUBREC for no QoS 2 PUBLISH")

    def _on_pubcomp(self, packet: PubComp, now: float) -> None:
        if self._generic is None or not self._generic.on_pubcomp(packet.packet_id):
            self._fail(ReasonCode.PROTOCOL_ERROR, "PUBCOMP for no QoS 2 PUBLISH")

    def _allocate_packet_id(self) -> int:
        packet_id = self._next_packet_id
        if packet_id in self._inflight:
            packet_id = free_packet_id(packet_id, self._inflight)  # the window keeps one free
        self._next_packet_id = packet_id % MAX_PACKET_ID + 1  # following_packet_id, inlined: per delivery
        return packet_id

    # --- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------------------

    def _on_subscribe(self, packet: Subscribe, now: float) -> None:
        sub_ids = packet.properties.subscription_identifiers
        if sub_ids and self._generic is None:
            self._fail(ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED, "subscription identifiers")
            return
        assert self.state is not None
        assert self.identity is not None
        before = set(self._delivery)
        granted_before = dict(self.state.subscriptions)
        generic = self._generic
        codes = [
            generic.grant(sub, sub_ids[0] if sub_ids else None)
            if generic is not None and is_generic_filter(sub.topic_filter)
            else self._grant(sub.topic_filter, sub.qos)
            for sub in packet.subscriptions
        ]
        if self.state.subscriptions != granted_before:
            self._table.changed(self.state)  # kept before the SUBACK goes out (a persistent session)
        self._out.append(encode(SubAck(packet.packet_id, tuple(codes)), self.version))
        if generic is not None:
            generic.release()  # retained messages for the new subscriptions, after the SUBACK
        self._set_delivery([
            f for f in (delivery_filter(self.identity, t, q) for t, q in self.state.subscriptions.items())
            if f is not None
        ])
        if not set(self._delivery) <= before:
            # Also when delivery was already on: messages held for an input nobody had
            # subscribed to can go now.
            self._events.append(DeliveryChanged(True))

    def _grant(self, topic_filter: str, qos: int) -> int:
        """The SUBACK code for one filter: granted QoS (at most 1) or a refusal (MQTT 5 §3.9.3)."""
        v5 = self.version == MQTT_5
        assert self.state is not None
        identity = self.identity
        assert identity is not None
        if not is_valid_filter(topic_filter):
            return ReasonCode.TOPIC_FILTER_INVALID if v5 else SUBACK_FAILURE_311
        if topic_filter.startswith("$share/"):
            return ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED if v5 else SUBACK_FAILURE_311
        if topic_filter.startswith(SERVICE_PREFIX):
            if self._generic is not None and self._generic.anonymous:
                return ReasonCode.NOT_AUTHORIZED if v5 else SUBACK_FAILURE_311
            return self._grant_feed(topic_filter, qos)
        # Only what this head can deliver: the identity's own inputs / devicebound topics; a child
        # edge hub also gets its children's filters granted (so it keeps them instead of falling
        # back to its own topic), though only its own topics are delivered on.
        deliverable = delivery_filter(identity, topic_filter) is not None or (
            authorize.acts_for_others(identity) and topic_filter.startswith("devices/")
        )
        if not deliverable or not self._authorizer.may_subscribe(identity, topic_filter):
            log.info("MQTT subscription of %s to %s refused", identity, shown(topic_filter, 128))
            return ReasonCode.NOT_AUTHORIZED if v5 else SUBACK_FAILURE_311
        granted = min(qos, 1)  # deliveries go out at QoS 1 at most
        self.state.subscriptions[topic_filter] = granted
        return granted

    def _grant_feed(self, topic_filter: str, qos: int) -> int:
        """A twin or method feed (``$iothub/twin/res/#``, …): granted at QoS 1 at most; the hub
        sends on it at QoS 0, as IoT Hub does."""
        assert self.state is not None
        assert self._services is not None
        granted = self._services.grant(topic_filter)
        if granted is None:
            log.info("MQTT subscription of %s to %s refused: not a twin or method feed it may use",
                     self.identity, shown(topic_filter, 128))
            return ReasonCode.NOT_AUTHORIZED if self.version == MQTT_5 else SUBACK_FAILURE_311
        self.state.subscriptions[topic_filter] = min(qos, 1)
        self._events.append(FeedChanged(granted[0], granted[1], True))
        return min(qos, 1)

    def _on_unsubscribe(self, packet: Unsubscribe, now: float) -> None:
        assert self.state is not None
        codes = []
        for topic_filter in packet.topic_filters:
            if self._generic is not None and is_generic_filter(topic_filter):
                codes.append(ReasonCode.SUCCESS if self._generic.unsubscribe(topic_filter)
                             else ReasonCode.NO_SUBSCRIPTION_EXISTED)
                continue
            existed = self.state.subscriptions.pop(topic_filter, None) is not None
            removed = self._services.remove(topic_filter) if self._services is not None else None
            if removed is not None and not self._services_has(*removed):
                self._events.append(FeedChanged(removed[0], removed[1], False))
            codes.append(ReasonCode.SUCCESS if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        if ReasonCode.SUCCESS in codes:
            self._table.changed(self.state)  # (a generic filter's change is the broker's to keep)
        self._out.append(encode(UnsubAck(packet.packet_id, tuple(codes)), self.version))
        had_delivery = bool(self._delivery)
        self._set_delivery([f for f in self._delivery if f.topic_filter in self.state.subscriptions])
        if had_delivery and not self._delivery:
            self._events.append(DeliveryChanged(False))

    def _services_has(self, feed: Feed, target: Identity) -> bool:
        return self._services is not None and self._services.has(feed, target)

    # --- the rest ------------------------------------------------------------------------------

    def _on_pingreq(self, packet: PingReq, now: float) -> None:
        self._out.append(encode(PingResp()))

    def _on_disconnect(self, packet: Disconnect, now: float) -> None:
        expiry = packet.properties.session_expiry_interval
        if expiry is not None and self.state is not None:
            if self.state.expiry_interval == 0 and expiry != 0:
                # [MQTT-3.14.2-2]: cannot turn a session without expiry into a persistent one.
                self._fail(ReasonCode.PROTOCOL_ERROR, "session expiry set on DISCONNECT")
                return
            self.state.expiry_interval = min(expiry, self.config.max_session_expiry)
        # [MQTT-3.14.4-3]: only 0x00 Normal disconnection discards the will; 0x04 and the
        # error reasons keep it due (MQTT 5 §3.1.2.5). MQTT 3.1.1 DISCONNECT is always 0x00.
        self._finish("client disconnected", packet.reason_code, publish_will=packet.reason_code != 0)

    def _credential_expired(self) -> None:
        # MQTT 5 §3.14.2.1: 0xA0 Maximum connect time, "the maximum connection time authorized for
        # this connection has been exceeded" -- the token did authorize it, up to its expiry. 0x87
        # Not authorized would tell the client its credentials are wrong, where a fresh token is
        # all it needs. MQTT 3.1.1 has no server DISCONNECT: the connection just closes.
        self._fail(ReasonCode.MAXIMUM_CONNECT_TIME, "credential expired")

    def _fail(self, reason_code: int, detail: str) -> None:
        """Close for a protocol reason: MQTT 5 sends DISCONNECT with the reason first (MQTT 5 §4.13)."""
        if self.phase is Phase.CLOSED:
            return
        if self.identity is None:
            _unauthenticated_closed_line("MQTT connection closed before CONNECT: %s (0x%02X)",
                                         shown(detail, 200), reason_code)
        else:
            log.info("MQTT connection of %s closed: %s (0x%02X)", self.identity, shown(detail, 200),
                     reason_code)
        if self.phase is Phase.CONNECTED and self.version == MQTT_5:
            self._out.append(encode(Disconnect(reason_code), MQTT_5))
        self._finish(detail, reason_code, publish_will=True)

    def _finish(self, reason: str, reason_code: int, *, publish_will: bool) -> None:
        if self.phase is Phase.CLOSED:
            return
        was_connected = self.phase is Phase.CONNECTED
        self.phase = Phase.CLOSED
        if was_connected:
            if publish_will and self._will is not None:
                self._events.append(WillReady(self._will))
            if self._delivery:
                self._events.append(DeliveryChanged(False))
            if self._generic is not None and self.state is not None:
                self._generic.closed(publish_will, self.state.expiry_interval)
            if self.state is not None:
                self._table.release(self.state, self, self._now)
        self._will = None
        self._batches.clear()
        self._acks.clear()
        self._events.append(Closed(reason, reason_code))


def _no_topics(topic: str) -> None:
    return None


def _nothing() -> None:
    return None
