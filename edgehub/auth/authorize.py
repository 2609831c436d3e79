"""Topic authorization: an authenticated identity publishes and subscribes only as itself.

Pure, allocation-light string logic over IoT Hub MQTT topic names; no I/O, no registry.

Rules (docs/architecture.md §4 "MQTT topics"; edgeHub does not check publish topics, we do):

- publish ``devices/{d}/messages/events/…`` only as device ``d``, and
  ``devices/{d}/modules/{m}/messages/events/…`` only as module ``d/m``; no other
  ``devices/…`` topic (inputs, devicebound) may be published by a client;
- subscribe ``devices/{d}/messages/…`` (devicebound, C2D) only as device ``d``, and
  ``devices/{d}/modules/{m}/…`` (inputs; the .NET SDK subscribes ``…/{m}/#``) only as
  module ``d/m``. A ``+`` in an id position means "this session's own id": IoT Hub
  resolves these filters per session and the Embedded C SDK subscribes
  ``devices/+/messages/devicebound/#``. The MQTT head must therefore deliver only
  the session's own messages on them, never another identity's;
- a child edge hub (module ``$edgeHub``, as IoT Edge nested hubs connect to their
  parent) acts for the devices and modules below it: it publishes telemetry on the
  topic of any sender, subscribes to any device's devicebound topics
  (``devices/+/messages/devicebound/#``, ``+`` meaning every device here) and to the
  topics of every module of its own device (``devices/{d}/modules/+/inputs/#``). The
  parent trusts it for any sender: there is no device scope to check against;
- ``$iothub/twin/…`` and ``$iothub/methods/…`` (twin requests and patches, direct
  methods) are per-session in IoT Hub: any authenticated client may use them
  (publishing only twin requests and method responses, ``$iothub/methods/res/…``);
- other ``$`` topics are refused; any other topic is plain MQTT between local
  clients and allowed only when generic topics are on (``mqttSettings__genericTopics``).
  A filter starting with a wildcard never matches ``$`` topics [MQTT-4.7.2-1]; the
  head keeps IoT Hub topics (``devices/…``) out of the generic tree.

Ids in topics are compared exactly (IoT Hub ids are case-sensitive) or after
percent-decoding, since azure-iot-device quotes ids with no safe characters.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

from edgehub.message import Identity

EDGE_HUB_MODULE: Final = "$edgeHub"
"""The module id of an edge hub itself (IoT Edge), e.g. a child hub connecting to its parent."""

_DEVICES: Final = "devices"
_IOTHUB: Final = "$iothub"
_SESSION_SCOPED: Final = frozenset({"twin", "methods"})


def acts_for_others(identity: Identity) -> bool:
    """Whether ``identity`` is an edge hub, which sends and receives for the devices and modules below it."""
    return identity.module_id == EDGE_HUB_MODULE


def may_publish(identity: Identity, topic: str, *, generic_topics: bool = False) -> bool:
    """True when ``identity`` may publish a message to ``topic`` (a topic name, no wildcards)."""
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        return False  # [MQTT-3.3.2-2] no wildcards in a topic name; [MQTT-4.7.3-2] no U+0000
    levels = topic.split("/")
    first = levels[0]
    if first == _DEVICES:
        return _publishes_own_events(identity, levels)
    if first == _IOTHUB:
        # Twin GET / reported PATCH and method responses are answered within the session.
        return len(levels) > 2 and (levels[1] == "twin" or (levels[1] == "methods" and levels[2] == "res"))
    if first.startswith("$"):
        return False
    return generic_topics


def may_subscribe(identity: Identity, topic_filter: str, *, generic_topics: bool = False) -> bool:
    """True when ``identity`` may subscribe with ``topic_filter`` (``+`` and ``#`` allowed)."""
    if not topic_filter or "\x00" in topic_filter:
        return False
    levels = topic_filter.split("/")
    if not _is_valid_filter(levels):
        return False
    first = levels[0]
    if first == _DEVICES:
        return _subscribes_as_self(identity, levels)
    if first == _IOTHUB:
        return len(levels) > 1 and levels[1] in _SESSION_SCOPED
    if first.startswith("$"):
        return False
    return generic_topics


def _publishes_own_events(identity: Identity, levels: list[str]) -> bool:
    # devices/{d}/messages/events[/…]  or  devices/{d}/modules/{m}/messages/events[/…]
    if len(levels) < 4 or not levels[1]:
        return False
    if levels[2] == "messages" and levels[3] == "events":
        sender_module = None
    elif len(levels) >= 6 and levels[2] == "modules" and levels[4] == "messages" and levels[5] == "events":
        sender_module = levels[3]
    else:
        return False
    if acts_for_others(identity):
        return sender_module != ""  # a child hub sends for any device or module below it
    if not _is_id(levels[1], identity.device_id):
        return False
    if sender_module is None or identity.module_id is None:
        return sender_module is None and identity.module_id is None
    return _is_id(sender_module, identity.module_id)


def _subscribes_as_self(identity: Identity, levels: list[str]) -> bool:
    # The filter must pin levels 0-2 (and 3 for modules) so that it cannot reach
    # another identity's topics: 'devices/#' or 'devices/d/#' are refused.
    if len(levels) < 3:
        return False
    if acts_for_others(identity) and len(levels) >= 4:
        if levels[2] == "messages":
            return levels[3] == "devicebound"  # any device's cloud-to-device messages, never telemetry
        return levels[2] == "modules" and _is_id_or_own(levels[1], identity.device_id)
    if not _is_id_or_own(levels[1], identity.device_id):
        return False
    if identity.module_id is None:
        return levels[2] == "messages"
    return len(levels) >= 4 and levels[2] == "modules" and _is_id_or_own(levels[3], identity.module_id)


def _is_valid_filter(levels: list[str]) -> bool:
    # [MQTT-4.7.1-2] '#' alone in the last level; [MQTT-4.7.1-3] '+' alone in its level.
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != last)) or ("+" in level and level != "+"):
            return False
    return True


def _is_id_or_own(level: str, own: str) -> bool:
    return level == "+" or _is_id(level, own)


def _is_id(level: str, own: str) -> bool:
    return level == own or ("%" in level and unquote(level) == own)
