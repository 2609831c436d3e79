"""The Endpoint protocol: where a pump sends batches, what a send reports, and the reachability signal.

Types and a listener helper only; no queue, store or retry logic lives here (that is the pump's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edgehub.store.base import QueuedMessage

log = logging.getLogger(__name__)

Unsubscribe = Callable[[], None]
"""Call it to stop receiving a signal; calling it twice is harmless."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one ``Endpoint.send`` achieved.

    ``delivered`` leading messages were confirmed by the destination. When
    ``rejected`` is true, the message right after them (index ``delivered``)
    was refused for good (malformed, too large for the destination, ...): the
    pump drops it, counting ``edgehub_messages_dropped_total{reason="rejected"}``,
    and goes on with the next one. Messages after that are not delivered and
    are sent again. Any other shortfall means "not now": the pump retries the
    rest, with backoff if nothing at all was confirmed.
    """

    delivered: int
    rejected: bool = False

    def __post_init__(self) -> None:
        if self.delivered < 0:
            raise ValueError(f"delivered must be >= 0, got {self.delivered}")


class Endpoint(Protocol):
    """A destination of messages: a module input, a device, the upstream hub."""

    @property
    def name(self) -> str:
        """The queue endpoint string: ``$upstream``, ``/modules/filter/inputs/input1``, ..."""
        ...

    @property
    def max_batch_size(self) -> int:
        """The most messages one ``send`` may carry (>= 1)."""
        ...

    async def send(self, messages: Sequence[QueuedMessage]) -> SendResult:
        """Deliver ``messages`` in order; report how many were confirmed.

        Raises EndpointUnavailable when the destination cannot take messages
        now (disconnected, throttled): nothing is assumed delivered and the
        pump retries later from its last checkpoint.
        """
        ...

    def subscribe_reachable(self, callback: Callable[[], None]) -> Unsubscribe:
        """Call ``callback`` (on the event loop, synchronously) whenever the
        destination becomes reachable again, so a pump waiting out a backoff
        resumes at once (docs/architecture.md §1 invariant 7; fixes edgeHub's up to 60 s
        wait after reconnect, Azure/iotedge PR #7528)."""
        ...


class ReachableListeners:
    """The callbacks an endpoint calls when it becomes reachable again.

    Endpoints keep one and implement ``subscribe_reachable`` with ``subscribe``.
    A failing callback is logged and does not keep the others from running.
    """

    def __init__(self) -> None:
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next_token = 0

    def __len__(self) -> int:
        return len(self._callbacks)

    def subscribe(self, callback: Callable[[], None]) -> Unsubscribe:
        token = self._next_token
        self._next_token += 1
        self._callbacks[token] = callback

        def unsubscribe() -> None:
            self._callbacks.pop(token, None)

        return unsubscribe

    def notify(self) -> None:
        for callback in list(self._callbacks.values()):
            try:
                callback()
            except Exception:
                log.exception("reachable listener %r failed", callback)
