"""What an MQTT session reports to its server: connected, telemetry to ingest, acks, closes.

Frozen, slotted values and the session phase only; no behaviour.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


@dataclass(frozen=True, slots=True)
class PublishAcked:
    """The client acknowledged the outbound PUBLISH ``packet_id`` (``reason_code`` >= 0x80: refused)."""

    packet_id: int
    reason_code: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryChanged:
    """Whether the client now has a subscription to its inputs / devicebound topics (attach / detach)."""

    active: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over: send ``data_to_send()`` (a final DISCONNECT or CONNACK), then close."""

    reason: str
    reason_code: int = 0


Event = Connected | TelemetryReceived | WillReady | PublishAcked | DeliveryChanged | Closed


class Phase(enum.Enum):
    AWAITING_CONNECT = "awaiting-connect"
    CONNECTED = "connected"
    CLOSED = "closed"
