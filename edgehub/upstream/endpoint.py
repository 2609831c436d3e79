"""The ``$upstream`` Endpoint: publishes a pump's batch to the parent at QoS 1, reports the confirmed prefix.

Owns publish order across concurrent sends, the unacknowledged-bytes window and the PUBACK timeout;
it never connects, retries or checkpoints (MqttUpstream connects, the EndpointPump retries).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from edgehub.clock import Clock, within
from edgehub.endpoints.base import ReachableListeners, SendResult, Unsubscribe
from edgehub.errors import EndpointUnavailable
from edgehub.message import Identity
from edgehub.store.base import QueuedMessage
from edgehub.upstream.topics import upstream_topic

log = logging.getLogger(__name__)

UPSTREAM_ENDPOINT: Final = "$upstream"


class PublishChannel(Protocol):
    """Where the endpoint publishes: the link's current connection."""

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bool]:
        """QoS 1 PUBLISH now (call order is wire order); True on PUBACK, False if the
        connection ended first. ValueError when MQTT cannot carry it."""
        ...


class ByteWindow:
    """Bytes published but not yet acknowledged, bounded by ``limit``.

    One message larger than the whole window still goes when the window is empty, so
    nothing can wait forever. Only the sender holding the publish turn waits here.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"window must be >= 1 byte, got {limit}")
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Event()

    def try_acquire(self, size: int) -> bool:
        """Take ``size`` bytes if there is room now."""
        if self.used and self.used + size > self.limit:
            return False
        self.used += size
        return True

    async def acquire(self, size: int) -> None:
        """Take ``size`` bytes once there is room (cancellable: nothing is taken then)."""
        while not self.try_acquire(size):
            self._changed.clear()
            await self._changed.wait()

    def release(self, size: int) -> None:
        self.used -= size
        self._changed.set()


class UpstreamEndpoint:
    """``$upstream``: each message goes out on the telemetry topic of its original sender.

    Order (docs/architecture.md §1 invariant 4): the pump starts its sends in id order, possibly several at
    once (``UpstreamFanOutFactor``); each send takes the publish turn (a FIFO lock) before its
    first PUBLISH and keeps it until its last, so call order is wire order and PUBACK waits
    overlap. The result counts the leading messages whose PUBACK came (``SendResult.delivered``);
    a PUBACK later than ``ack_timeout`` (``MessageAckTimeoutSecs``) counts as not delivered, and
    the connection is then dropped through ``on_ack_timeout``: over MQTT 3.1.1 a lost PUBLISH is
    only sent again after reconnecting [MQTT-4.4.0-1].

    Memory: unacknowledged bytes (topics + bodies) are bounded by ``max_in_flight_bytes``
    (a 256 KiB batch per in-flight batch); a send waits for room rather than cutting its
    batch short, because a short batch makes the pump send its later batches again.
    """

    def __init__(
        self,
        clock: Clock,
        default_sender: Identity,
        *,
        max_batch_size: int = 100,
        ack_timeout: float = 30.0,
        max_message_bytes: int = 262_144,
        max_in_flight_bytes: int = 262_144 * 10,
        on_ack_timeout: Callable[[PublishChannel], None] = lambda channel: None,
        generic_topic: str = "",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._clock = clock
        self._default_sender = default_sender
        self._generic_topic = generic_topic
        self._max_batch_size = max_batch_size
        self._ack_timeout = ack_timeout
        self._max_message_bytes = max_message_bytes
        self._window = ByteWindow(max_in_flight_bytes)
        self._on_ack_timeout = on_ack_timeout
        self._channel: PublishChannel | None = None
        self._publish_turn = asyncio.Lock()
        self._listeners = ReachableListeners()
        self._sends = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- Endpoint --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return UPSTREAM_ENDPOINT

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    def subscribe_reachable(self, callback: Callable[[], None]) -> Unsubscribe:
        return self._listeners.subscribe(callback)

    async def send(self, messages: Sequence[QueuedMessage]) -> SendResult:
        if not messages:
            return SendResult(0)
        channel = self._channel
        if channel is None:
            raise EndpointUnavailable("upstream is not connected")
        self._sends += 1
        self._idle.clear()
        try:
            acks, rejected = await self._publish(channel, messages)
            if not acks:
                if rejected:
                    return SendResult(0, rejected=True)
                raise EndpointUnavailable("upstream connection lost")
            delivered = await self._confirmed(channel, acks)
        finally:
            self._sends -= 1
            if not self._sends:
                self._idle.set()
        if delivered < len(acks):
            if not delivered and self._channel is not channel:
                raise EndpointUnavailable("upstream connection lost before any PUBACK")
            return SendResult(delivered)
        return SendResult(delivered, rejected=rejected)

    # -- the link's side -------------------------------------------------------------------------

    @property
    def reachable(self) -> bool:
        return self._channel is not None

    @property
    def in_flight_bytes(self) -> int:
        return self._window.used

    def attach(self, channel: PublishChannel) -> None:
        """A connection is up: sends go through it, and waiting pumps resume at once
        (docs/architecture.md §1 invariant 7; edgeHub waited out its retry timer, Azure/iotedge PR #7528)."""
        self._channel = channel
        self._listeners.notify()

    def detach(self) -> None:
        """The connection is gone or being replaced: new sends raise EndpointUnavailable."""
        self._channel = None

    async def wait_idle(self) -> None:
        """Until no send is in progress (used before replacing a connection)."""
        await self._idle.wait()

    # -- internals -------------------------------------------------------------------------------

    async def _publish(
        self, channel: PublishChannel, messages: Sequence[QueuedMessage]
    ) -> tuple[list[asyncio.Future[bool]], bool]:
        """PUBLISH the batch in order, holding the turn; (PUBACK futures, stopped at a rejected one)."""
        acks: list[asyncio.Future[bool]] = []
        async with self._publish_turn:
            for queued in messages:
                message = queued.message
                if len(message.body) > self._max_message_bytes:
                    log.warning(
                        "upstream: message %d has %d bytes, over the %d-byte limit; rejected",
                        queued.id, len(message.body), self._max_message_bytes,
                    )
                    return acks, True
                topic = upstream_topic(message, self._default_sender, self._generic_topic)
                size = len(topic) + len(message.body)
                if not self._window.try_acquire(size) and not await self._within_ack_timeout(
                    asyncio.ensure_future(self._window.acquire(size))
                ):
                    # Nothing acknowledged for a whole ack timeout: the same remedy as in _confirmed.
                    log.warning("upstream: no PUBACK within %.0f s; reconnecting", self._ack_timeout)
                    self._on_ack_timeout(channel)
                    break
                if self._channel is not channel:
                    self._window.release(size)
                    break  # lost (or being replaced) while waiting for room
                try:
                    acked = channel.publish(topic, message.body)
                except ValueError as exc:
                    self._window.release(size)
                    log.warning("upstream: message %d cannot be published (%s); rejected", queued.id, exc)
                    return acks, True
                acked.add_done_callback(functools.partial(self._acked, size))
                acks.append(acked)
        return acks, False

    def _acked(self, size: int, _: asyncio.Future[bool]) -> None:
        self._window.release(size)

    async def _confirmed(self, channel: PublishChannel, acks: list[asyncio.Future[bool]]) -> int:
        """How many leading messages got their PUBACK within ``ack_timeout``."""
        outstanding = [acked for acked in acks if not acked.done()]
        if outstanding and not await self._all_done(outstanding):
            log.warning(
                "upstream: no PUBACK within %.0f s for %d message(s); reconnecting",
                self._ack_timeout, sum(not acked.done() for acked in acks),
            )
            self._on_ack_timeout(channel)
        delivered = 0
        for acked in acks:
            if not (acked.done() and acked.result()):
                break
            delivered += 1
        return delivered

    async def _all_done(self, futures: list[asyncio.Future[bool]]) -> bool:
        """Wait until every future is done (True) or ``ack_timeout`` of the clock passed (False)."""
        all_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        remaining = len(futures)

        def one_done(_: asyncio.Future[bool]) -> None:
            nonlocal remaining
            remaining -= 1
            if not remaining and not all_done.done():
                all_done.set_result(None)

        for future in futures:
            future.add_done_callback(one_done)
        try:
            return await self._within_ack_timeout(all_done)
        finally:
            for future in futures:
                future.remove_done_callback(one_done)

    async def _within_ack_timeout(self, waiter: asyncio.Future[None]) -> bool:
        """Wait for ``waiter`` at most ``ack_timeout`` of the clock; cancel it if it took longer."""
        return await within(self._clock, waiter, self._ack_timeout)
