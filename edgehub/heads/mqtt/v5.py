"""MQTT 5 property handling of the server session: the CONNACK it advertises and PUBLISH
properties carried onto a Message.

Pure functions over packets and values; the session decides when they apply.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgehub.heads.mqtt.policy import SessionConfig
from edgehub.message import Message, SystemProperty
from edgehub.mqtt.packets import MQTT_5, NO_PROPERTIES, Connect, Properties


def connack_properties(config: SessionConfig, packet: Connect, expiry: int, *, generic: bool,
                       assigned_client_id: str | None) -> Properties:
    """What an accepted CONNECT's CONNACK says (MQTT 5 §3.2.2.3): limits, and with generic topics
    on retained messages, subscription identifiers and shared subscriptions available (absent
    means available), an assigned client id, the client's Keep Alive confirmed."""
    if packet.protocol_level != MQTT_5:
        return NO_PROPERTIES
    requested = packet.properties.session_expiry_interval or 0
    return Properties(
        session_expiry_interval=expiry if expiry != requested else None,
        assigned_client_identifier=assigned_client_id,
        server_keep_alive=packet.keep_alive if generic and packet.keep_alive else None,
        receive_maximum=config.receive_maximum,
        topic_alias_maximum=config.topic_alias_maximum or None,
        retain_available=None if generic else 0,
        maximum_packet_size=config.max_packet_size,
        subscription_identifier_available=None if generic else 0,
        shared_subscription_available=None if generic else 0,
    )


def with_v5_properties(message: Message, props: Properties) -> Message:
    """MQTT 5 PUBLISH properties onto the message: user properties become application
    properties, Content Type and Correlation Data the matching system properties."""
    if props is NO_PROPERTIES:
        return message
    app: Mapping[str, str] = message.properties
    system: Mapping[str, str] = message.system_properties
    if props.user_properties:
        app = {**app, **dict(props.user_properties)}
    extra: dict[str, str] = {}
    if props.content_type is not None:
        extra[SystemProperty.CONTENT_TYPE] = props.content_type
    if props.correlation_data is not None:
        extra[SystemProperty.CORRELATION_ID] = props.correlation_data.decode("utf-8", "replace")
    if extra:
        system = {**extra, **system}  # the property bag wins over the MQTT 5 property
    return Message(message.body, app, system)

