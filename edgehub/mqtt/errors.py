"""The MQTT codec's errors: what the peer sent that the codec refuses, with its MQTT 5 reason code.

Kept apart from edgehub.mqtt.wire (which re-exports them) so that wire can be compiled while these
stay interpreted: interpreted modules subclass them (edgehub.mqtt.session_rules).
"""

from __future__ import annotations

from edgehub.errors import ProtocolError
from edgehub.mqtt.packets import ReasonCode


class MqttError(ProtocolError):
    """The peer sent bytes the codec refuses; ``reason_code`` is the MQTT 5 reason to disconnect with."""

    def __init__(self, reason_code: int, detail: str) -> None:
        self.reason_code = reason_code
        self.detail = detail
        super().__init__(f"{detail} (reason 0x{reason_code:02X})")


class MalformedPacketError(MqttError):
    """The bytes are not a packet (MQTT 5 §4.13: reason 0x81)."""

    def __init__(self, detail: str) -> None:
        super().__init__(ReasonCode.MALFORMED_PACKET, detail)


class ProtocolViolationError(MqttError):
    """A well-formed packet breaks a protocol rule (reason 0x82 unless stated)."""

    def __init__(self, detail: str, reason_code: int = ReasonCode.PROTOCOL_ERROR) -> None:
        super().__init__(reason_code, detail)


class PacketTooLargeError(MqttError):
    """The fixed header announces a packet above the maximum packet size (reason 0x95)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(ReasonCode.PACKET_TOO_LARGE, f"packet of {size} bytes exceeds {limit}")


class UnsupportedProtocolVersionError(MqttError):
    """CONNECT with a protocol level other than 3, 4 or 5 [MQTT-3.1.2-2]."""

    def __init__(self, level: int) -> None:
        self.level = level
        super().__init__(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol level {level}")
