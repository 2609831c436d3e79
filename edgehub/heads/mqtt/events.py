"""What an MQTT session reports to its server: connected, telemetry to ingest, acks, closes.

Frozen, slotted values and the session phase only; no behaviour.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgehub.iothub.twin_topics import Feed, ServiceRequest
from edgehub.message import Identity, Message

if TYPE_CHECKING:
    from edgehub.heads.mqtt.session import MqttSession


@dataclass(frozen=True, slots=True)
class Connected:
    """CONNECT accepted and CONNACK queued. ``displaced`` is the MqttSession that held the
    client id before [MQTT-3.1.4-3]: the server must call its ``take_over`` and close it."""

    identity: Identity
    client_id: str
    session_present: bool
    protocol_level: int
    displaced: MqttSession | None


@dataclass(frozen=True, slots=True)
class TelemetryReceived:
    """Every telemetry message one read delivered, in order. Ingest them, then call
    ``ack(token)`` (or ``refuse(token)`` on StoreFullError): the acks wait for that."""

    messages: Sequence[Message]
    token: int


@dataclass(frozen=True, slots=True)
class WillReady:
    """The connection ended without DISCONNECT: ingest the will message (MQTT 5 §3.1.2.5)."""

    message: Message


@dataclass(slots=True, init=False)
class PublishAcked:
    """The client acknowledged the outbound PUBLISH ``packet_id`` (``reason_code`` >= 0x80: refused)."""

    packet_id: int
    reason_code: int

    # Hand-written __init__ (not a frozen dataclass): built once per message on the hot path, where the
    # generated frozen __init__ costs a setattr call per field (docs/performance.md).
    def __init__(self, packet_id: int, reason_code: int = 0) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code


@dataclass(frozen=True, slots=True)
class DeliveryChanged:
    """Whether the client now has a subscription to its inputs / devicebound topics (attach / detach)."""

    active: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over: send ``data_to_send()`` (a final DISCONNECT or CONNACK), then close."""

    reason: str
    reason_code: int = 0


@dataclass(frozen=True, slots=True)
class ServiceRequested:
    """A twin GET, a reported-properties PATCH or a method response, for ``target`` (the client
    itself, or a device or module below a child edge hub). Already acked to the client."""

    request: ServiceRequest
    target: Identity
    payload: bytes


@dataclass(frozen=True, slots=True)
class FeedChanged:
    """The client subscribed to (or left) a twin or method feed for ``target``."""

    feed: Feed
    target: Identity
    active: bool


Event = (
    Connected | TelemetryReceived | WillReady | PublishAcked | DeliveryChanged | Closed
    | ServiceRequested | FeedChanged
)


class Phase(enum.Enum):
    AWAITING_CONNECT = "awaiting-connect"
    CONNECTED = "connected"
    CLOSED = "closed"
