"""IoT Hub's AMQP link addresses: which kind of link a client attached, for whom.

Pure string parsing over the addresses IoT Hub and edgeHub define (edgeHub Hub.Amqp Templates and
LinkHandlerProvider); no authorization (the connection decides whether the identity may use it).

``role`` is the HUB's end of the link: a client's sender is the hub's receiver (AMQP 1.0 §2.6.3).

| address (``amqps://host`` and ``?query`` ignored)   | hub receives      | hub sends         |
|------------------------------------------------------|-------------------|-------------------|
| ``$cbs``                                             | put-token         | put-token status  |
| ``/devices/{d}/messages/events``                     | telemetry         | —                 |
| ``/devices/{d}/modules/{m}/messages/events``         | telemetry         | module inputs     |
| ``/devices/{d}[/modules/{m}]/messages/devicebound``  | —                 | cloud-to-device   |
| ``/devices/{d}[/modules/{m}]/twin``                  | twin requests     | twin responses    |
| ``/devices/{d}[/modules/{m}]/methods/devicebound``   | method responses  | method requests   |

Ids are percent-decoded; ``devicebound`` is matched case-insensitively (edgeHub writes ``deviceBound``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

from edgehub.message import Identity

CBS: Final = "$cbs"


class LinkKind(enum.Enum):
    CBS = "cbs"
    TELEMETRY = "telemetry"
    """Client → hub messages (hub receives)."""
    MODULE_INPUTS = "inputs"
    """Hub → module: messages routed to the module's inputs (``x-opt-input-name``)."""
    DEVICEBOUND = "devicebound"
    """Hub → device: cloud-to-device messages."""
    TWIN_REQUESTS = "twin-requests"
    TWIN_RESPONSES = "twin-responses"
    METHOD_RESPONSES = "method-responses"
    METHOD_REQUESTS = "method-requests"


@dataclass(frozen=True, slots=True)
class LinkAddress:
    """A recognised address: its kind and the identity its path names (None for ``$cbs``)."""

    kind: LinkKind
    identity: Identity | None


def parse_address(address: str | None, *, hub_receives: bool) -> LinkAddress | None:
    """The link ``address`` names, seen from the hub's end (``hub_receives`` when the client
    sends); None when IoT Hub defines no such link (the head detaches with ``amqp:not-found``)."""
    if not address:
        return None
    path = _path(address)
    if path.strip("/") == CBS:
        return LinkAddress(LinkKind.CBS, None)
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[0] != "devices" or not parts[1]:
        return None
    device = unquote(parts[1])
    rest = parts[2:]
    module: str | None = None
    if rest[0] == "modules":
        if len(rest) < 3 or not rest[1]:
            return None
        module = unquote(rest[1])
        rest = rest[2:]
    identity = Identity(device, module)
    kind = _kind(tuple(segment.casefold() for segment in rest), hub_receives, module is not None)
    return None if kind is None else LinkAddress(kind, identity)


def _kind(rest: tuple[str, ...], hub_receives: bool, is_module: bool) -> LinkKind | None:
    if rest == ("messages", "events"):
        if hub_receives:
            return LinkKind.TELEMETRY
        return LinkKind.MODULE_INPUTS if is_module else None
    if rest == ("messages", "devicebound"):
        return None if hub_receives else LinkKind.DEVICEBOUND
    if rest == ("twin",):
        return LinkKind.TWIN_REQUESTS if hub_receives else LinkKind.TWIN_RESPONSES
    if rest == ("methods", "devicebound"):
        return LinkKind.METHOD_RESPONSES if hub_receives else LinkKind.METHOD_REQUESTS
    return None


def _path(address: str) -> str:
    if "://" in address:
        return urlsplit(address).path
    return address.partition("?")[0]
