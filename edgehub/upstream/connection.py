"""What the upstream link needs of one MQTT connection to the parent: the UpstreamConnection protocol and
the values crossing it (IncomingPublish, OnMessage).

Definitions only; the connection itself is NativeMqttConnection (native.py), over TCP, TLS or WebSocket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from edgehub.errors import EndpointUnavailable

QOS_AT_LEAST_ONCE: Final = 1
SUBACK_FAILURE: Final = 0x80
"""[MQTT-3.9.3] return code of a refused subscription in a SUBACK."""

@dataclass(frozen=True, slots=True)
class IncomingPublish:
    """A PUBLISH the parent sent; QoS 1 ones are acknowledged only by ``UpstreamConnection.ack``."""

    topic: str
    payload: bytes = field(repr=False)
    mid: int
    qos: int


class UpstreamConnection(Protocol):
    """What MqttUpstream needs of one connection: NativeMqttConnection or a test fake."""

    @property
    def is_open(self) -> bool:
        """Connected (CONNACK accepted) and not closed since."""
        ...

    async def open(self) -> None:
        """Connect and wait for the CONNACK. Raises AuthError when the parent refuses the
        credentials, EndpointUnavailable for every other failure; never retries."""
        ...

    async def subscribe(self, filters: Sequence[str]) -> list[int]:
        """Subscribe at QoS 1; the granted QoS (or 0x80, refused) per filter."""
        ...

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bool]:
        """Send a QoS 1 PUBLISH now (call order is wire order). The future becomes True on
        its PUBACK, False when the connection ends first. Raises ValueError for a topic or
        payload MQTT cannot carry."""
        ...

    def ack(self, mid: int) -> None:
        """PUBACK an incoming QoS 1 message (no-op once closed)."""
        ...

    def abort(self, reason: str) -> None:
        """Drop the connection at once, without DISCONNECT (the parent then redelivers
        what it did not get a PUBACK for)."""
        ...

    async def close(self) -> None:
        """DISCONNECT cleanly (bounded wait) and release everything; idempotent."""
        ...

    async def wait_closed(self) -> str:
        """Wait until the connection ended; why it ended."""
        ...


OnMessage = Callable[[IncomingPublish], None]


async def wait_granted(
    granted: asyncio.Future[list[int]], closed: asyncio.Future[Any], limit_secs: float,
) -> list[int]:
    """The SUBACK's granted codes, or EndpointUnavailable when the connection closes or no
    SUBACK comes within ``limit_secs`` (both clients share this)."""
    try:
        async with asyncio.timeout(limit_secs):
            done, _ = await asyncio.wait({granted, closed}, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        raise EndpointUnavailable("no SUBACK from the parent") from None
    if granted not in done:
        raise EndpointUnavailable("upstream connection closed while subscribing")
    return granted.result()
