"""Test doubles for endpoint tests: an endpoint and a client link that succeed, fail or hold on command.

Test support only; nothing here sleeps for real or reads the real clock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgehub.endpoints.base import ReachableListeners, SendResult, Unsubscribe
from edgehub.errors import EndpointUnavailable
from edgehub.message import Message
from edgehub.store.base import DEFAULT_PRIORITY, Delivery, IngestItem, QueuedMessage, QueueKey, Store
from edgehub.testing.clock import FakeClock

FAR_FUTURE_MS = 2**62


def enqueue(
    store: Store,
    endpoint: str,
    bodies: Sequence[bytes],
    *,
    priority: int = DEFAULT_PRIORITY,
    expiry_ms: int = FAR_FUTURE_MS,
) -> list[int]:
    """Append one message per body to ``endpoint``'s queue at ``priority``; their ids."""
    queue = QueueKey(endpoint, priority)
    items = [IngestItem(Message(body), (Delivery(queue, expiry_ms),)) for body in bodies]
    return store.append(items)


def queued_ids(store: Store, endpoint: str, priority: int = DEFAULT_PRIORITY, now_ms: int = 0) -> list[int]:
    """Ids still queued (not checkpointed) for ``endpoint`` at ``priority``."""
    return [queued.id for queued in store.read(QueueKey(endpoint, priority), -1, 1_000_000, now_ms)]


@dataclass(frozen=True, slots=True)
class SendCall:
    """One ``send`` the endpoint saw: the ids, their queue priority, and when (monotonic)."""

    ids: list[int]
    priority: int
    at: float


@dataclass(slots=True)
class HeldSend:
    """A send waiting for the test to decide its outcome."""

    messages: Sequence[QueuedMessage]
    future: asyncio.Future[SendResult | BaseException] = field(repr=False)

    def complete(self, delivered: int | None = None, *, rejected: bool = False) -> None:
        count = len(self.messages) if delivered is None else delivered
        self.future.set_result(SendResult(count, rejected))

    def fail(self) -> None:
        self.future.set_result(EndpointUnavailable("held send failed"))


class FakeEndpoint:
    """An Endpoint whose sends succeed, fail, follow a script, or wait for the test.

    Precedence per send: ``hold`` (the test completes it), then the next scripted
    outcome in ``outcomes``, then ``available``.
    """

    def __init__(self, clock: FakeClock, name: str = "$upstream", max_batch_size: int = 10) -> None:
        self._clock = clock
        self._name = name
        self._max_batch_size = max_batch_size
        self.available = True
        self.hold = False
        self.outcomes: deque[SendResult | BaseException] = deque()
        self.calls: list[SendCall] = []
        self.delivered: list[QueuedMessage] = []
        self.held: list[HeldSend] = []
        self._listeners = ReachableListeners()

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def delivered_ids(self) -> list[int]:
        return [queued.id for queued in self.delivered]

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def call_ids(self) -> list[list[int]]:
        return [call.ids for call in self.calls]

    async def send(self, messages: Sequence[QueuedMessage]) -> SendResult:
        assert 0 < len(messages) <= self._max_batch_size
        self.calls.append(
            SendCall([queued.id for queued in messages], messages[0].queue.priority, self._clock.monotonic())
        )
        outcome: SendResult | BaseException
        if self.hold:
            future: asyncio.Future[SendResult | BaseException] = asyncio.get_running_loop().create_future()
            self.held.append(HeldSend(messages, future))
            outcome = await future
        elif self.outcomes:
            outcome = self.outcomes.popleft()
        elif not self.available:
            outcome = EndpointUnavailable(f"{self._name} is down")
        else:
            outcome = SendResult(len(messages))
        if isinstance(outcome, BaseException):
            raise outcome
        self.delivered.extend(messages[: outcome.delivered])
        return outcome

    def subscribe_reachable(self, callback: Callable[[], None]) -> Unsubscribe:
        return self._listeners.subscribe(callback)

    def become_reachable(self) -> None:
        self.available = True
        self._listeners.notify()


@dataclass(slots=True)
class Delivered:
    input_name: str | None
    bodies: list[bytes]


class FakeLink:
    """A ClientLink that acknowledges everything (or ``acks`` messages), or is gone."""

    def __init__(self, acks: int | None = None) -> None:
        self.acks = acks
        self.gone = False
        self.deliveries: list[Delivered] = []

    @property
    def bodies(self) -> list[bytes]:
        return [body for delivered in self.deliveries for body in delivered.bodies]

    async def deliver(self, input_name: str | None, messages: Sequence[Message]) -> int:
        if self.gone:
            raise EndpointUnavailable("session closed")
        self.deliveries.append(Delivered(input_name, [message.body for message in messages]))
        return len(messages) if self.acks is None else self.acks
