"""What an upstream link needs of the hub for messages coming down from the parent.

Protocol only, so upstream clients depend on the hub core's shape, not on its parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edgehub.message import Message


class DownstreamPort(Protocol):
    async def enqueue(self, endpoint: str, messages: Sequence[Message]) -> None:
        """Store ``messages`` durably in the queue of local ``endpoint``
        (``/devices/{d}/messages/devicebound`` or ``/modules/{m}/inputs/{i}``),
        bypassing routes; returns after the write, so the link may ack upstream then.
        Raises StoreFullError when the store is full."""
        ...
