"""What an MQTT session is given: CONNECT credentials, the authenticator and authorizer
that judge them, and the limits of one connection.

Values and protocols only; the checks themselves live in edgehub.auth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edgehub.auth import authorize
from edgehub.message import Identity
from edgehub.mqtt.packets import (
    MQTT_311,
)


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """The credentials of a CONNECT, for the authenticator.

    ``peer_certificates`` is the client's TLS certificate chain in DER, leaf first
    (only the leaf on Python < 3.13); empty without TLS client auth.
    """

    client_id: str
    username: str | None
    password: bytes | None
    peer_certificates: tuple[bytes, ...] = ()
    protocol_level: int = MQTT_311


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Who a CONNECT's credentials prove the client to be, and for how long.

    ``valid_for`` is the seconds from the CONNECT until the credential expires (SAS token ``se``,
    certificate notAfter); the session closes the connection then. None: it does not expire.
    """

    identity: Identity
    valid_for: float | None = None


class Authenticator(Protocol):
    def __call__(self, request: ConnectRequest) -> Authenticated | Identity:
        """What the credentials prove (an Identity alone: a credential that does not expire);
        raises edgehub.errors.AuthError otherwise."""
        ...


class Authorizer(Protocol):
    def may_publish(self, identity: Identity, topic: str) -> bool: ...

    def may_subscribe(self, identity: Identity, topic_filter: str) -> bool: ...


class OwnTopicsAuthorizer:
    """The default policy: edgehub.auth.authorize without generic topics (own telemetry, own
    inputs/devicebound; a child edge hub's for the devices and modules below it)."""

    def may_publish(self, identity: Identity, topic: str) -> bool:
        return authorize.may_publish(identity, topic)

    def may_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        return authorize.may_subscribe(identity, topic_filter)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Limits of one connection. ``max_message_size`` is maxMessageSizeBytes: a PUBLISH whose
    payload is larger is refused; the packet limit adds ``packet_overhead`` for topic and properties."""

    max_message_size: int = 262_144
    packet_overhead: int = 8192
    receive_maximum: int = 1024
    outbound_window: int = 256
    topic_alias_maximum: int = 64
    connect_timeout: float = 10.0
    max_session_expiry: int = 7 * 24 * 3600
    persistent_session_expiry: int = 24 * 3600
    """Expiry of an MQTT 3.1.1 session with Clean Session 0 (3.1.1 sets none; the hub must bound it)."""
    require_client_id_match: bool = True
    """Client id must be the identity's ``{d}`` or ``{d}/{m}``, as in IoT Hub."""

    @property
    def max_packet_size(self) -> int:
        return self.max_message_size + self.packet_overhead
