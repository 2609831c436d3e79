"""The MQTT 3.1.1 state machine of ONE client connection to a server: bytes in, bytes and events out.

Sans-I/O: never touches a socket, a task or a clock (time comes in as ``now``); it decides what the
protocol requires of a client, its caller decides what to publish, subscribe to and acknowledge.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode, encode_publish
from edgehub.mqtt.packets import (
    MQTT_311,
    ConnAck,
    Connect,
    Packet,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from edgehub.mqtt.session_rules import (
    CONNACK_ACCEPTED,
    free_packet_id,
    keep_alive_expired,
    ping_due,
    refuses_credentials,
)
from edgehub.mqtt.wire import MAX_REMAINING_LENGTH, MqttError

QOS_AT_LEAST_ONCE: Final = 1
KEEP_ALIVE_TIMEOUT: Final = "connection lost: Keep alive timeout"
"""Why the session ends when the server fell silent (the wording paho-based links logged too)."""

_PUBACK: Final = struct.Struct(">I")
_PUBACK_HIGH: Final = 0x4002
"""A PUBACK's first two bytes: type 4, flags 0, Remaining Length 2; the packet id follows [MQTT-3.4.1]."""
_PUBACK_WORD: Final = 0x4002_0000
_PINGREQ: Final = b"\xc0\x00"  # [MQTT-3.12.1]
_DISCONNECT: Final = b"\xe0\x00"  # [MQTT-3.14.1]
_MAX_TOPIC_BYTES: Final = 65_535  # a UTF-8 string's two-byte length [MQTT-1.5.3]


class ClientPhase(enum.Enum):
    AWAITING_CONNACK = "awaiting CONNACK"
    CONNECTED = "connected"
    CLOSED = "closed"


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionAccepted:
    session_present: bool


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    """A refusing CONNACK; ``credentials``: the server refused who the client is (codes 4, 5)."""

    return_code: int
    credentials: bool


@dataclass(frozen=True, slots=True)
class PublishesAcked:
    """PUBACKs for these outbound packet ids arrived, in wire order (one event per read)."""

    packet_ids: list[int]


@dataclass(frozen=True, slots=True)
class Subscribed:
    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A PUBLISH from the server; QoS 1 ones are acknowledged only by ``MqttClientSession.ack``."""

    topic: str
    payload: bytes = field(repr=False)
    packet_id: int
    qos: int


@dataclass(frozen=True, slots=True)
class SessionClosed:
    reason: str


ClientEvent = (
    ConnectionAccepted | ConnectionRefused | PublishesAcked | Subscribed | MessageReceived | SessionClosed
)


class _EitherSet:
    """``in`` over two sets: packet ids in use by an unacknowledged PUBLISH or SUBSCRIBE."""

    __slots__ = ("_a", "_b")

    def __init__(self, a: set[int], b: set[int]) -> None:
        self._a = a
        self._b = b

    def __contains__(self, item: object) -> bool:
        return item in self._a or item in self._b


# --- the session ---------------------------------------------------------------------------------


class MqttClientSession:
    """One client connection's MQTT 3.1.1 state machine.

    ``connect(now)`` queues CONNECT; feed the server's bytes to ``receive_data(data, now)``, write
    ``data_to_send(now)``, act on the events; ``tick(now)`` sends PINGREQ when due and gives the server
    up after 1.5 Keep Alives of silence. Outbound QoS 1 via ``publish``, inbound acks via ``ack``.
    A run of PUBACKs at the start of a read is settled straight from the bytes (the upstream hot path).
    """

    def __init__(
        self, client_id: str, *, username: str | None = None, password: bytes | None = None,
        keep_alive: int = 0, clean_start: bool = False,
    ) -> None:
        self.client_id = client_id
        self.keep_alive = keep_alive
        self._connect = Connect(MQTT_311, client_id, clean_start=clean_start, keep_alive=keep_alive,
                                username=username, password=password)
        self.phase = ClientPhase.AWAITING_CONNACK
        self._decoder = Decoder(version=MQTT_311)
        self._out: list[bytes] = []
        self._last_sent = self._last_received = 0.0
        self._inflight: set[int] = set()
        self._subscribing: set[int] = set()
        self._in_use = _EitherSet(self._inflight, self._subscribing)
        self._next_id = 1

    # --- public API ------------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Queue the CONNECT; the server's first packet must be its CONNACK [MQTT-3.2.0-1]."""
        self._last_sent = self._last_received = now
        self._out.append(encode(self._connect))

    def data_to_send(self, now: float) -> bytes:
        """Bytes queued for the server; ``now`` is when they leave (keep-alive counts from it)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        self._last_sent = now
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def closed(self) -> bool:
        return self.phase is ClientPhase.CLOSED

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out)

    @property
    def inflight(self) -> int:
        """Outbound QoS 1 PUBLISHes awaiting their PUBACK."""
        return len(self._inflight)

    def receive_data(self, data: bytes, now: float) -> list[ClientEvent]:
        """Handle bytes from the server; the events they caused (PUBACKs as one PublishesAcked)."""
        if self.phase is ClientPhase.CLOSED:
            return []
        self._last_received = now
        events: list[ClientEvent] = []
        acked: list[int] = []
        if not self._decoder.buffered and self.phase is ClientPhase.CONNECTED:
            data = self._settle_pubacks(data, acked)
        if data:
            try:
                packets = self._decoder.feed(data)
            except MqttError as exc:
                self._close_with(events, f"protocol error: {exc}")
            else:
                for packet in packets:
                    if self.closed:
                        break
                    self._dispatch(packet, events, acked)
        if acked:
            events.insert(0, PublishesAcked(acked))
        return events

    def tick(self, now: float) -> list[ClientEvent]:
        """PINGREQ when idle; closed after 1.5 x Keep Alive without a byte from the server."""
        if self.phase is not ClientPhase.CONNECTED:
            return []
        if keep_alive_expired(self.keep_alive, self._last_received, now):
            self.phase = ClientPhase.CLOSED
            return [SessionClosed(KEEP_ALIVE_TIMEOUT)]
        if ping_due(self.keep_alive, self._last_sent, self._last_received, now):
            self._out.append(_PINGREQ)  # [MQTT-3.1.2-23]
        return []

    def publish(self, topic: str, payload: bytes) -> int:
        """Queue a QoS 1 PUBLISH; its packet id. ValueError for what a PUBLISH cannot carry;
        PacketIdsExhaustedError when 65535 are unacknowledged. Only when connected."""
        if self.phase is not ClientPhase.CONNECTED:
            raise RuntimeError(f"publish while {self.phase.value}")
        _check_publishable(topic, payload)
        packet_id = self._next_id
        if packet_id in self._inflight or packet_id in self._subscribing:
            packet_id = free_packet_id(packet_id, self._in_use)
        self._next_id = packet_id % 65_535 + 1
        self._inflight.add(packet_id)
        self._out.append(encode_publish(topic, payload, QOS_AT_LEAST_ONCE, packet_id))
        return packet_id

    def subscribe(self, filters: Sequence[str], qos: int = QOS_AT_LEAST_ONCE) -> int:
        """Queue a SUBSCRIBE of ``filters`` (at least one [MQTT-3.8.3-3]); its packet id."""
        if self.phase is not ClientPhase.CONNECTED:
            raise RuntimeError(f"subscribe while {self.phase.value}")
        if not filters:
            raise ValueError("a SUBSCRIBE needs at least one topic filter")
        packet_id = free_packet_id(self._next_id, self._in_use)
        self._next_id = packet_id % 65_535 + 1
        self._subscribing.add(packet_id)
        self._out.append(encode(Subscribe(packet_id, tuple(Subscription(f, qos) for f in filters))))
        return packet_id

    def ack(self, packet_id: int) -> None:
        """PUBACK an incoming QoS 1 PUBLISH [MQTT-4.3.2-2]; nothing once closed or for QoS 0 (id 0)."""
        if self.phase is ClientPhase.CONNECTED and packet_id:
            self._out.append(_PUBACK.pack(_PUBACK_WORD | packet_id))

    def disconnect(self) -> None:
        """Queue DISCONNECT and close: the caller then closes the connection [MQTT-3.14.4-1]."""
        if self.phase is ClientPhase.CONNECTED:
            self._out.append(_DISCONNECT)
        self.phase = ClientPhase.CLOSED

    def connection_lost(self) -> None:
        """The transport ended: nothing more is sent or taken in."""
        self.phase = ClientPhase.CLOSED
        self._out.clear()

    # --- incoming packets ------------------------------------------------------------------------

    def _settle_pubacks(self, data: bytes, acked: list[int]) -> bytes:
        """Settle the leading run of PUBACKs straight from the bytes; what follows them."""
        pos = 0
        end = len(data) - 3
        inflight = self._inflight
        unpack = _PUBACK.unpack_from
        while pos < end:
            (word,) = unpack(data, pos)
            if word >> 16 != _PUBACK_HIGH:
                break
            packet_id = word & 0xFFFF
            if packet_id in inflight:
                inflight.discard(packet_id)
                acked.append(packet_id)
            pos += 4
        return data[pos:] if pos else data

    def _dispatch(self, packet: Packet, events: list[ClientEvent], acked: list[int]) -> None:
        if self.phase is ClientPhase.AWAITING_CONNACK:
            if type(packet) is ConnAck:
                self._connacked(packet, events)
            else:  # [MQTT-3.2.0-1]: the server's first packet is CONNACK
                self._close_with(events, f"protocol error: {type(packet).__name__} before CONNACK")
        elif type(packet) is PubAck:
            if packet.packet_id in self._inflight:
                self._inflight.discard(packet.packet_id)
                acked.append(packet.packet_id)
        elif type(packet) is Publish:
            self._received(packet, events)
        elif type(packet) is SubAck:
            if packet.packet_id in self._subscribing:
                self._subscribing.discard(packet.packet_id)
                events.append(Subscribed(packet.packet_id, packet.reason_codes))
        elif type(packet) is ConnAck:
            self._close_with(events, "protocol error: a second CONNACK")  # [MQTT-3.2.0-1]
        elif type(packet) is not PingResp:
            # A server sends no CONNECT, SUBSCRIBE, PINGREQ... to a client [MQTT-4.8.0-1].
            self._close_with(events, f"protocol error: unexpected {type(packet).__name__}")

    def _connacked(self, packet: ConnAck, events: list[ClientEvent]) -> None:
        code = packet.reason_code
        if code == CONNACK_ACCEPTED:
            self.phase = ClientPhase.CONNECTED
            events.append(ConnectionAccepted(packet.session_present))
        else:  # the server closes after a refusing CONNACK [MQTT-3.2.2-5]
            self.phase = ClientPhase.CLOSED
            events.append(ConnectionRefused(code, refuses_credentials(code)))

    def _received(self, packet: Publish, events: list[ClientEvent]) -> None:
        if packet.qos > QOS_AT_LEAST_ONCE:
            # Never above the granted QoS 1 [MQTT-3.8.4-6]; a PUBACK would not complete a QoS 2 flow.
            self._close_with(events, "protocol error: QoS 2 PUBLISH on a QoS 1 subscription")
            return
        events.append(MessageReceived(packet.topic, packet.payload, packet.packet_id, packet.qos))

    def _close_with(self, events: list[ClientEvent], reason: str) -> None:
        self.phase = ClientPhase.CLOSED
        self._out.clear()
        events.append(SessionClosed(reason))


def _check_publishable(topic: str, payload: bytes) -> None:
    """ValueError for what a PUBLISH cannot carry, before it gets a packet id."""
    if not topic or "+" in topic or "#" in topic:
        # [MQTT-4.7.3-1], [MQTT-3.3.2-2]
        raise ValueError("Publish topic must be non-empty, without wildcards")
    if len(topic) * 3 > _MAX_TOPIC_BYTES and len(topic.encode()) > _MAX_TOPIC_BYTES:
        raise ValueError("Publish topic is too long.")
    if len(payload) + len(topic) * 3 + 4 > MAX_REMAINING_LENGTH:
        raise ValueError("Publish payload is too large.")
