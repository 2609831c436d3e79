"""The session rules both ends of an MQTT connection keep: packet identifiers, keep-alive, CONNACK codes.

Pure functions and constants used by the server session (heads/mqtt/session.py) and the client session
(mqtt/client.py); no state, no I/O, no clock (time comes in as ``now``).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Final

from edgehub.mqtt.packets import ConnectReturnCode, ReasonCode
from edgehub.mqtt.wire import ProtocolViolationError

MAX_PACKET_ID: Final = 65_535
"""Packet identifiers are non-zero 16-bit integers [MQTT-2.3.1-1]."""

KEEP_ALIVE_GRACE: Final = 1.5
"""Silence, in Keep Alives, after which the other end counts as gone ([MQTT-3.1.2-24] for the server;
the client applies the same bound to the server's PINGRESP)."""

PING_AFTER: Final = 0.75
"""Idle fraction of the Keep Alive after which a client sends PINGREQ, in time [MQTT-3.1.2-23]."""

CONNACK_ACCEPTED: Final = ConnectReturnCode.ACCEPTED
"""0x00 in both versions: Connection Accepted (3.1.1 §3.2.2.3) / Success (MQTT 5 §3.2.2.2)."""

CREDENTIAL_REFUSALS: Final = frozenset({
    ConnectReturnCode.BAD_USER_NAME_OR_PASSWORD, ConnectReturnCode.NOT_AUTHORIZED,  # 3.1.1: 4, 5
    ReasonCode.BAD_USER_NAME_OR_PASSWORD, ReasonCode.NOT_AUTHORIZED,  # MQTT 5: 0x86, 0x87
})
"""CONNACK codes that refuse who the client is, not the connection: retrying sooner cannot help.
The server session refuses a failed authentication with one of these in either version."""


class PacketIdsExhaustedError(ProtocolViolationError):
    """Every packet identifier is awaiting acknowledgement; nothing more can be sent until one is."""

    def __init__(self) -> None:
        super().__init__(f"all {MAX_PACKET_ID} packet identifiers are awaiting acknowledgement")


def following_packet_id(packet_id: int) -> int:
    """The identifier after ``packet_id``, 65535 wrapping to 1."""
    return packet_id % MAX_PACKET_ID + 1


def free_packet_id(candidate: int, in_use: Container[int]) -> int:
    """The first identifier from ``candidate`` on (wrapping) not used by an unacknowledged packet
    [MQTT-2.3.1-2]; PacketIdsExhaustedError when all are."""
    packet_id = candidate
    for _ in range(MAX_PACKET_ID):
        if packet_id not in in_use:
            return packet_id
        packet_id = packet_id % MAX_PACKET_ID + 1
    raise PacketIdsExhaustedError


def keep_alive_expired(keep_alive: int, last_received: float, now: float) -> bool:
    """Nothing came for more than 1.5 x Keep Alive ([MQTT-3.1.2-24]; Keep Alive 0 never expires)."""
    return keep_alive > 0 and now - last_received > KEEP_ALIVE_GRACE * keep_alive


def ping_due(keep_alive: int, last_sent: float, last_received: float, now: float) -> bool:
    """A client should send PINGREQ: idle in either direction for 0.75 x Keep Alive [MQTT-3.1.2-23]
    (idle reading counts too, so a silent server is probed before it is given up)."""
    if keep_alive <= 0:
        return False
    idle = PING_AFTER * keep_alive
    return now - last_sent >= idle or now - last_received >= idle


def refuses_credentials(code: int) -> bool:
    """A CONNACK code (3.1.1 return code or MQTT 5 reason) refusing the client's credentials."""
    return code in CREDENTIAL_REFUSALS
