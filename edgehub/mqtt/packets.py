"""MQTT 3.1.1 and 5.0 control packets, MQTT 5 properties and reason codes, as plain values.

Frozen, slotted data only: no parsing, no encoding, no I/O (encode.py and decode.py do the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

MQTT_311: Final = 4
"""Protocol level of MQTT 3.1.1 (MQTT 3.1, level 3, is handled as 3.1.1)."""
MQTT_5: Final = 5


class PacketType:
    """Control packet type, the high nibble of the fixed header (MQTT 5 §2.1.2)."""

    CONNECT: Final = 1
    CONNACK: Final = 2
    PUBLISH: Final = 3
    PUBACK: Final = 4
    PUBREC: Final = 5
    PUBREL: Final = 6
    PUBCOMP: Final = 7
    SUBSCRIBE: Final = 8
    SUBACK: Final = 9
    UNSUBSCRIBE: Final = 10
    UNSUBACK: Final = 11
    PINGREQ: Final = 12
    PINGRESP: Final = 13
    DISCONNECT: Final = 14
    AUTH: Final = 15


class ReasonCode:
    """MQTT 5 reason codes (MQTT 5 §2.4); 0x00 is Success / Normal disconnection / Granted QoS 0."""

    SUCCESS: Final = 0x00
    GRANTED_QOS_1: Final = 0x01
    GRANTED_QOS_2: Final = 0x02
    DISCONNECT_WITH_WILL: Final = 0x04
    NO_MATCHING_SUBSCRIBERS: Final = 0x10
    NO_SUBSCRIPTION_EXISTED: Final = 0x11
    CONTINUE_AUTHENTICATION: Final = 0x18
    RE_AUTHENTICATE: Final = 0x19
    UNSPECIFIED_ERROR: Final = 0x80
    MALFORMED_PACKET: Final = 0x81
    PROTOCOL_ERROR: Final = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR: Final = 0x83
    UNSUPPORTED_PROTOCOL_VERSION: Final = 0x84
    CLIENT_IDENTIFIER_NOT_VALID: Final = 0x85
    BAD_USER_NAME_OR_PASSWORD: Final = 0x86
    NOT_AUTHORIZED: Final = 0x87
    SERVER_UNAVAILABLE: Final = 0x88
    SERVER_BUSY: Final = 0x89
    BANNED: Final = 0x8A
    SERVER_SHUTTING_DOWN: Final = 0x8B
    BAD_AUTHENTICATION_METHOD: Final = 0x8C
    KEEP_ALIVE_TIMEOUT: Final = 0x8D
    SESSION_TAKEN_OVER: Final = 0x8E
    TOPIC_FILTER_INVALID: Final = 0x8F
    TOPIC_NAME_INVALID: Final = 0x90
    PACKET_IDENTIFIER_IN_USE: Final = 0x91
    PACKET_IDENTIFIER_NOT_FOUND: Final = 0x92
    RECEIVE_MAXIMUM_EXCEEDED: Final = 0x93
    TOPIC_ALIAS_INVALID: Final = 0x94
    PACKET_TOO_LARGE: Final = 0x95
    MESSAGE_RATE_TOO_HIGH: Final = 0x96
    QUOTA_EXCEEDED: Final = 0x97
    ADMINISTRATIVE_ACTION: Final = 0x98
    PAYLOAD_FORMAT_INVALID: Final = 0x99
    RETAIN_NOT_SUPPORTED: Final = 0x9A
    QOS_NOT_SUPPORTED: Final = 0x9B
    USE_ANOTHER_SERVER: Final = 0x9C
    SERVER_MOVED: Final = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Final = 0x9E
    CONNECTION_RATE_EXCEEDED: Final = 0x9F
    MAXIMUM_CONNECT_TIME: Final = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: Final = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Final = 0xA2


class ConnectReturnCode:
    """MQTT 3.1.1 CONNACK return codes (MQTT 3.1.1 §3.2.2.3)."""

    ACCEPTED: Final = 0x00
    UNACCEPTABLE_PROTOCOL_VERSION: Final = 0x01
    IDENTIFIER_REJECTED: Final = 0x02
    SERVER_UNAVAILABLE: Final = 0x03
    BAD_USER_NAME_OR_PASSWORD: Final = 0x04
    NOT_AUTHORIZED: Final = 0x05


SUBACK_FAILURE_311: Final = 0x80
"""The one failure return code of an MQTT 3.1.1 SUBACK [MQTT-3.9.3-2]."""


@dataclass(frozen=True, slots=True)
class Properties:
    """MQTT 5 properties (MQTT 5 §2.2.2.2). None / empty means absent.

    Each packet type allows only some of them (wire.ALLOWED_PROPERTIES).
    ``subscription_identifiers`` may repeat in PUBLISH; ``user_properties``
    keep their order and may repeat keys (MQTT 5 §3.1.2.11.8).
    """

    payload_format_indicator: int | None = None  # 0x01
    message_expiry_interval: int | None = None  # 0x02
    content_type: str | None = None  # 0x03
    response_topic: str | None = None  # 0x08
    correlation_data: bytes | None = None  # 0x09
    subscription_identifiers: tuple[int, ...] = ()  # 0x0B
    session_expiry_interval: int | None = None  # 0x11
    assigned_client_identifier: str | None = None  # 0x12
    server_keep_alive: int | None = None  # 0x13
    authentication_method: str | None = None  # 0x15
    authentication_data: bytes | None = None  # 0x16
    request_problem_information: int | None = None  # 0x17
    will_delay_interval: int | None = None  # 0x18
    request_response_information: int | None = None  # 0x19
    response_information: str | None = None  # 0x1A
    server_reference: str | None = None  # 0x1C
    reason_string: str | None = None  # 0x1F
    receive_maximum: int | None = None  # 0x21
    topic_alias_maximum: int | None = None  # 0x22
    topic_alias: int | None = None  # 0x23
    maximum_qos: int | None = None  # 0x24
    retain_available: int | None = None  # 0x25
    user_properties: tuple[tuple[str, str], ...] = ()  # 0x26
    maximum_packet_size: int | None = None  # 0x27
    wildcard_subscription_available: int | None = None  # 0x28
    subscription_identifier_available: int | None = None  # 0x29
    shared_subscription_available: int | None = None  # 0x2A


NO_PROPERTIES: Final = Properties()
"""The shared empty property set; codecs return this very object when a packet has none."""


@dataclass(frozen=True, slots=True)
class Will:
    """The will message of a CONNECT (MQTT 5 §3.1.3.2-3.1.3.4)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    protocol_level: int
    client_id: str
    clean_start: bool = True
    keep_alive: int = 0
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES
    protocol_name: str = "MQTT"


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, init=False)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int
    properties: Properties

    # Hand-written __init__ (not a frozen dataclass): built once per message on the hot path, where the
    # generated frozen __init__ costs a setattr call per field (docs/performance.md).
    def __init__(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, dup: bool = False,
        packet_id: int = 0, properties: Properties = NO_PROPERTIES,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = properties


@dataclass(slots=True, init=False)
class PubAck:
    packet_id: int
    reason_code: int
    properties: Properties

    # Hand-written __init__, not frozen: built per message (see the first class of this module).
    def __init__(self, packet_id: int, reason_code: int = 0, properties: Properties = NO_PROPERTIES) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties


@dataclass(frozen=True, slots=True)
class PubRec:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRel:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubComp:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (MQTT 5 §3.8.3.1)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """``reason_codes`` exist in MQTT 5 only; an MQTT 3.1.1 UNSUBACK has none."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    """MQTT 5 only (MQTT 5 §3.15)."""

    reason_code: int = 0
    properties: Properties = field(default=NO_PROPERTIES)


Packet = (
    Connect | ConnAck | Publish | PubAck | PubRec | PubRel | PubComp | Subscribe | SubAck
    | Unsubscribe | UnsubAck | PingReq | PingResp | Disconnect | Auth
)
