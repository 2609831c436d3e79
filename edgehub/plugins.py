"""The small protocol through which protocol heads and upstream links plug into the hub.

Protocols only; the hub builds the concrete heads from settings (see edgehub.hub).
"""

from __future__ import annotations

from typing import Protocol

from edgehub.endpoints.base import Endpoint
from edgehub.heads.port import HubPort
from edgehub.upstream.port import DownstreamPort


class Head(Protocol):
    """A protocol head (MQTT, AMQP, HTTP): listens, decodes, authenticates, calls the hub."""

    name: str

    async def start(self, hub: HubPort) -> list[str]:
        """Bind and serve; return a human-readable line per listening address."""
        ...

    async def stop(self) -> None:
        """Stop accepting, close every session; idempotent."""
        ...


class UpstreamLink(Protocol):
    """The connection to the parent (cloud IoT hub, parent edgehub or MQTT broker)."""

    endpoint: Endpoint
    """The ``$upstream`` endpoint whose pump sends through this link."""

    async def start(self, hub: DownstreamPort) -> None:
        """Connect (retrying in the background); never raises for an unreachable parent."""
        ...

    async def stop(self) -> None: ...

