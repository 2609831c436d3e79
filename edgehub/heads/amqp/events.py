"""What one AMQP connection's sans-I/O core asks of its glue: frozen values, no live proton objects.

The core (connection.py) emits these; the glue (server.py) acts on them (ingest, attach, twin and
method calls) and reports back through the core's methods (``ingested``, ``send_twin_response`` …).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgehub.message import Identity, Message


@dataclass(frozen=True, slots=True)
class TelemetryReceived:
    """Messages read in one batch; store them, then call ``AmqpServerConnection.ingested(token, …)``
    (the deliveries are settled only then: no disposition before durability)."""

    messages: list[Message]
    token: int


@dataclass(frozen=True, slots=True)
class DeliveryLinkChanged:
    """``identity`` now has (``active``) or no longer has a link the hub delivers its module
    inputs or cloud-to-device messages on."""

    identity: Identity
    active: bool


class Outcome(enum.Enum):
    """A client's disposition of a message the hub sent (AMQP 1.0 §3.4)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RELEASED = "released"
    """Released or modified: deliver it again."""
    LOST = "lost"
    """The link or connection ended first: deliver it again."""


@dataclass(frozen=True, slots=True)
class DeliverySettled:
    """The client settled message ``index`` of the ``send_messages`` call ``token``."""

    token: int
    index: int
    outcome: Outcome


class TwinOperation(enum.Enum):
    GET = "GET"
    PATCH = "PATCH"
    """PATCH ``/properties/reported``."""
    PUT = "PUT"
    """PUT ``/notifications/twin/properties/desired``: subscribe to desired patches."""
    DELETE = "DELETE"
    """DELETE ``/notifications/twin/properties/desired``: unsubscribe."""


@dataclass(frozen=True, slots=True)
class TwinRequested:
    identity: Identity
    operation: TwinOperation
    correlation_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class MethodLinkChanged:
    """``identity`` can (``active``) or no longer can take direct-method requests here."""

    identity: Identity
    active: bool


@dataclass(frozen=True, slots=True)
class MethodResponded:
    identity: Identity
    rid: str
    status: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class IdentityAuthenticated:
    """``identity`` proved itself on this connection (SASL PLAIN, CBS put-token, certificate)."""

    identity: Identity


@dataclass(frozen=True, slots=True)
class IdentityEnded:
    """``identity``'s credential ran out or the connection closed: its links are gone."""

    identity: Identity


Event = (TelemetryReceived | DeliveryLinkChanged | DeliverySettled | TwinRequested | MethodLinkChanged
         | MethodResponded | IdentityAuthenticated | IdentityEnded)
