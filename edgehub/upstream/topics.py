"""Upstream traffic and local queues: the topic a message goes up on, the queue a message coming down goes to.

Pure functions over Message values and edgehub.iothub.topics (which owns the topic shapes and bags); no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgehub.iothub.topics import parse_delivery_topic, telemetry_topic
from edgehub.message import Identity, Message
from edgehub.routing.route import MQTT_TOPIC

GENERIC_TOPIC_PLACEHOLDER = "{topic}"


def upstream_topic(message: Message, default_sender: Identity, generic_topic: str = "") -> str:
    """The telemetry topic of the message's ORIGINAL sender (``connectionDeviceId`` /
    ``connectionModuleId``), or of ``default_sender`` (the hub itself) when it has none.

    The bag carries no ``$.cdid``/``$.cmid``: the topic names the sender, and the parent
    (IoT Hub, or a parent hub that lets this hub act for its children) stamps them from it.
    A generic MQTT message (one with ``mqttTopic``) goes up on ``generic_topic`` instead when
    that is set (``mqttSettings__genericUpstreamTopic``, for a plain MQTT broker upstream), its
    ``{topic}`` replaced by the message's own topic.
    """
    if generic_topic and (topic := message.system_properties.get(MQTT_TOPIC)) is not None:
        return generic_topic.replace(GENERIC_TOPIC_PLACEHOLDER, topic)
    sender = message.source or default_sender
    return telemetry_topic(sender, message.properties, message.system_properties)


@dataclass(frozen=True, slots=True)
class DownstreamMessage:
    """A message the parent sent down, and the local queue it belongs in."""

    endpoint: str
    """``/devices/{d}/messages/devicebound`` or ``/modules/{m}/inputs/{i}``."""
    message: Message


def parse_downstream(topic: str, payload: bytes, edge_device_id: str) -> DownstreamMessage | None:
    """The local endpoint and message of a devicebound or module-input publish, or None
    when the topic is neither (or names a module of another edge device).

    ``devices/{d}/messages/devicebound/{bag}`` → ``/devices/{d}/messages/devicebound``;
    ``devices/{edge}/modules/{m}/inputs/{i}/{bag}`` → ``/modules/{m}/inputs/{i}`` (ids decoded).
    """
    parsed = parse_delivery_topic(topic, payload)
    if parsed is None:
        return None
    recipient = parsed.recipient
    if parsed.input_name is None:
        return DownstreamMessage(f"/devices/{recipient.device_id}/messages/devicebound", parsed.message)
    if recipient.device_id != edge_device_id:
        return None  # local modules belong to the edge device only
    return DownstreamMessage(f"/modules/{recipient.module_id}/inputs/{parsed.input_name}", parsed.message)
