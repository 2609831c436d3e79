"""The link from an endpoint to a connected local client (a module or a device).

Protocol only: heads implement ClientLink per session; endpoints deliver through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edgehub.message import Message


class ClientLink(Protocol):
    """One connected client session, as seen by the endpoints that deliver to it."""

    async def deliver(self, input_name: str | None, messages: Sequence[Message]) -> int:
        """Send ``messages`` in order, to module input ``input_name`` or, when None,
        as cloud-to-device (devicebound) messages; return how many leading
        messages the client acknowledged. Raises EndpointUnavailable when the
        session is gone."""
        ...
