"""What a protocol head needs of the hub: durable ingest and client attach/detach.

Protocol only, so heads depend on the hub core's shape and never on its parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edgehub.endpoints.link import ClientLink
from edgehub.message import Identity, Message


class HubPort(Protocol):
    async def ingest(self, messages: Sequence[Message]) -> None:
        """Route and durably store ``messages`` (one group-committed write);
        returns only after the write, so the head may ack then. Raises
        StoreFullError when the store is full (nothing of the batch stored)."""
        ...

    def attach(self, identity: Identity, link: ClientLink) -> None:
        """A client authenticated; deliver its module inputs / devicebound messages via ``link``.
        A newer link for the same identity replaces the older one."""
        ...

    def detach(self, identity: Identity, link: ClientLink) -> None:
        """The client's session ended (no-op if ``link`` was already replaced)."""
        ...
