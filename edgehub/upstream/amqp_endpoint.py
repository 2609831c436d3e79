"""The ``$upstream`` Endpoint over AMQP: each message goes up on its original sender's link, and only what
the parent settled ``accepted`` counts as delivered.

Owns splitting a batch by sender, transfer order across concurrent sends (one send turn), the
unacknowledged-bytes window, the disposition timeout and the leading-run result; it never connects,
authorizes or attaches links (AmqpUpstream's ``SenderLinks`` does) nor retries (the EndpointPump does).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from edgehub.clock import Clock, within
from edgehub.endpoints.base import ReachableListeners, SendResult, Unsubscribe
from edgehub.errors import AuthError, EndpointUnavailable
from edgehub.message import Identity, MessageId
from edgehub.store.base import QueuedMessage
from edgehub.upstream.amqp_session import Outcome
from edgehub.upstream.amqp_wire import encode_telemetry
from edgehub.upstream.endpoint import UPSTREAM_ENDPOINT, ByteWindow

log = logging.getLogger(__name__)

MAX_SENT_AHEAD: Final = 100_000
"""Most message ids remembered as accepted beyond the leading run (bounded; the price is duplicates)."""


class TransferChannel(Protocol):
    """A sender link on the current connection: one unsettled transfer per call, in call order."""

    def transfer(self, message: bytes) -> asyncio.Future[Outcome]:
        """``message``: an encoded AMQP message."""
        ...


class SenderLinks(Protocol):
    """What the endpoint needs of the link: the current connection's sender link of an identity."""

    @property
    def connected(self) -> bool: ...

    async def sender(self, identity: Identity) -> TransferChannel | None:
        """The attached, authorized sender link of ``identity`` (attached now if needed), or None when
        its messages must wait (no credentials for it). EndpointUnavailable/AuthError when it failed."""
        ...

    def disposition_timed_out(self) -> None:
        """No outcome within MessageAckTimeoutSecs: the link drops the connection."""
        ...


class AmqpUpstreamEndpoint:
    """``$upstream`` on one AMQP connection, a sender link per sending identity.

    A batch is split by sender (each sender's messages keep their order; a message without a
    sender goes as the hub itself). Outcomes (AMQP 1.0 §3.4): ``accepted`` = delivered; ``rejected``
    = refused for good (SendResult.rejected: the pump drops and counts it); ``released``, ``modified``
    or no outcome (link or connection lost, or none within ``ack_timeout``) = not now, sent again.
    The result is the leading run of accepted messages; messages accepted beyond it are
    remembered so the pump's resend does not duplicate them while another sender waits.
    """

    def __init__(self, links: SenderLinks, clock: Clock, default_sender: Identity, *, max_batch_size: int,
                 ack_timeout: float, max_message_bytes: int, max_in_flight_bytes: int) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._links = links
        self._clock = clock
        self._default_sender = default_sender
        self._max_batch_size = max_batch_size
        self._ack_timeout = ack_timeout
        self._max_message_bytes = max_message_bytes
        self._window = ByteWindow(max_in_flight_bytes)
        self._turn = asyncio.Lock()
        self._sent_ahead: set[MessageId] = set()
        self._listeners = ReachableListeners()
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        """Transfers settled so far, by outcome (for tests and the bench)."""

    @property
    def name(self) -> str:
        return UPSTREAM_ENDPOINT

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def in_flight_bytes(self) -> int:
        return self._window.used

    def subscribe_reachable(self, callback: Callable[[], None]) -> Unsubscribe:
        return self._listeners.subscribe(callback)

    def reachable(self) -> None:
        """The link connected: waiting pumps resume at once (docs/architecture.md §1 invariant 7)."""
        self._listeners.notify()

    async def send(self, messages: Sequence[QueuedMessage]) -> SendResult:
        if not messages:
            return SendResult(0)
        if not self._links.connected:
            raise EndpointUnavailable("upstream is not connected")
        parts: dict[Identity, list[int]] = {}
        for index, queued in enumerate(messages):
            if queued.id not in self._sent_ahead:
                parts.setdefault(queued.message.source or self._default_sender, []).append(index)
        async with self._turn:  # call order is transfer order across the pump's concurrent sends
            issued = [await self._issue(sender, [messages[i] for i in indexes])
                      for sender, indexes in parts.items()]
        settled = await asyncio.gather(*(self._settled(outcomes) for outcomes, _ in issued))
        accepted = {q.id for q in messages if q.id in self._sent_ahead}
        rejected_ids: set[MessageId] = set()
        for indexes, (delivered, rejected), (_, too_large) in zip(
                parts.values(), settled, issued, strict=True):
            accepted.update(messages[i].id for i in indexes[:delivered])
            if (rejected or too_large) and delivered < len(indexes):
                rejected_ids.add(messages[indexes[delivered]].id)
        return self._result(messages, accepted, rejected_ids)

    # -- internals -------------------------------------------------------------------------------

    async def _issue(
        self, sender: Identity, part: list[QueuedMessage],
    ) -> tuple[list[asyncio.Future[Outcome]], bool]:
        """Start ``part``'s transfers on ``sender``'s link; (their outcomes, stopped at one too large)."""
        try:
            channel = await self._links.sender(sender)
        except (EndpointUnavailable, AuthError) as exc:
            log.info("upstream: no AMQP link for %s now (%s); its messages wait", sender, exc)
            return [], False
        if channel is None:
            log.debug("upstream: no credentials for %s; its messages wait", sender)
            return [], False
        outcomes: list[asyncio.Future[Outcome]] = []
        for queued in part:
            message = queued.message
            size = len(message.body)
            if size > self._max_message_bytes:
                log.warning("upstream: message %d has %d bytes, over the %d-byte limit; rejected",
                            queued.id, size, self._max_message_bytes)
                return outcomes, True
            if not self._window.try_acquire(size) and not await within(
                    self._clock, asyncio.ensure_future(self._window.acquire(size)), self._ack_timeout):
                log.warning("upstream: no AMQP disposition within %.0f s; reconnecting", self._ack_timeout)
                self._links.disposition_timed_out()
                break
            outcome = channel.transfer(encode_telemetry(message))
            outcome.add_done_callback(functools.partial(self._settle, size))
            outcomes.append(outcome)
        return outcomes, False

    def _settle(self, size: int, outcome: asyncio.Future[Outcome]) -> None:
        self._window.release(size)
        if not outcome.cancelled():
            self.outcomes[outcome.result()] += 1

    async def _settled(self, outcomes: list[asyncio.Future[Outcome]]) -> tuple[int, bool]:
        """(leading accepted transfers, whether the one after them was rejected)."""
        pending = [o for o in outcomes if not o.done()]
        if pending and not await within(self._clock, asyncio.ensure_future(asyncio.wait(pending)),
                                        self._ack_timeout):
            log.warning("upstream: no AMQP disposition within %.0f s for %d message(s); reconnecting",
                        self._ack_timeout, sum(not o.done() for o in outcomes))
            self._links.disposition_timed_out()
        delivered = 0
        for outcome in outcomes:
            if not outcome.done() or outcome.result() is not Outcome.ACCEPTED:
                rejected = outcome.done() and outcome.result() is Outcome.REJECTED
                return delivered, rejected
            delivered += 1
        return delivered, False

    def _result(self, messages: Sequence[QueuedMessage], accepted: set[MessageId],
                rejected_ids: set[MessageId]) -> SendResult:
        lead = 0
        while lead < len(messages) and messages[lead].id in accepted:
            lead += 1
        sent_ahead = self._sent_ahead
        sent_ahead.difference_update(q.id for q in messages[:lead])
        sent_ahead.update(q.id for q in messages[lead:] if q.id in accepted)
        if len(sent_ahead) > MAX_SENT_AHEAD:
            sent_ahead.clear()
        if lead < len(messages) and messages[lead].id in rejected_ids:
            return SendResult(lead, rejected=True)
        if lead == 0 and not accepted:
            if not self._links.connected:
                raise EndpointUnavailable("upstream AMQP connection lost")
            raise EndpointUnavailable("no sender's AMQP link took its messages")
        return SendResult(lead)
