"""EndpointPump: moves one endpoint's queued messages from the store to the endpoint, in order.

Owns read cursors, batching, the in-flight window, checkpoints, backoff and priority scheduling;
it never appends, routes or expires, and never checkpoints a message the endpoint did not confirm.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from edgehub.clock import Clock, now_ms
from edgehub.endpoints.backoff import Backoff
from edgehub.endpoints.base import Endpoint, SendResult, Unsubscribe
from edgehub.errors import EndpointUnavailable, StoreError
from edgehub.message import MessageId
from edgehub.metrics import MESSAGES_DROPPED, OPERATION_RETRY, SentRecorder, sender_of
from edgehub.store.base import DEFAULT_PRIORITY, QueuedMessage, QueueKey, Store

log = logging.getLogger(__name__)

DEFAULT_STARVATION_LIMIT: Final = 10
"""Batches a waiting queue may be passed over for more urgent ones before it gets one."""

DEFAULT_STOP_GRACE: Final = 5.0
"""Seconds ``stop`` lets in-flight sends finish before cancelling them."""

_BEFORE_FIRST: Final[MessageId] = -1
"""Cursor position before every id; the store's read skips what is already checkpointed."""


class PumpState(enum.Enum):
    """What the pump is doing; for logs, ``edgehub stats`` and tests.

    NEW -> (start) -> IDLE <-> SENDING -> DRAINING -> BACKING_OFF -> SENDING ...;
    any state -> (stop) -> STOPPING -> STOPPED.
    """

    NEW = "new"
    IDLE = "idle"  # nothing known to send; waits for notify()
    SENDING = "sending"  # batches in flight
    DRAINING = "draining"  # a batch fell short; waiting for the rest of the window to come back
    BACKING_OFF = "backing_off"  # the endpoint failed; waits for the backoff or on_reachable()
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(slots=True, eq=False)
class _Batch:
    """One ``send`` call: consecutive messages of one queue."""

    queue: _QueueCursor
    messages: list[QueuedMessage]
    started: float
    result: SendResult | None = None  # None once done: raised or was cancelled
    done: bool = False
    task: asyncio.Task[None] | None = None


@dataclass(slots=True, eq=False)
class _QueueCursor:
    """The pump's in-memory position in one queue (one endpoint at one priority)."""

    key: QueueKey
    read_after: MessageId = _BEFORE_FIRST  # last id handed to the endpoint (sent or in flight)
    checkpointed: MessageId = _BEFORE_FIRST  # last id this pump checkpointed
    waiting: bool = True  # may hold unread messages (set by notify, cleared by a short read)
    passed_over: int = 0  # batches served from more urgent queues while this one waited
    broken: bool = False  # a batch fell short: later in-flight batches are not checkpointed
    in_flight: deque[_Batch] = field(default_factory=deque)


class EndpointPump:
    """Delivers the queues ``QueueKey(endpoint.name, p)`` of one endpoint, most urgent first.

    Order (DESIGN §1 invariant 4): per queue, batches are read and ``send`` is
    called strictly in id order; after any shortfall the pump re-reads from its
    last checkpoint, so a retry never overtakes an older message. With
    ``max_in_flight_batches > 1`` (edgeHub's ``UpstreamFanOutFactor``) several
    batches are in flight; their ``send`` calls start in id order (the endpoint
    must keep call order on the wire) and the checkpoint advances only over a
    contiguous confirmed prefix. Later confirmed batches beyond a gap are sent
    again (at-least-once, like edgeHub).

    TTL (invariant 5): a batch is read right before it is sent and is never
    held across a backoff; after a failure the pump re-reads from the
    checkpoint at the current time, so the store's read skips every message
    that expired meanwhile.

    Starvation: edgeHub serves priorities strictly, so a busy priority 0 route
    starves priority 1 for as long as the load lasts. Here priority is strict
    with aging: a queue that holds messages and was passed over for
    ``starvation_limit`` (K) consecutive batches from more urgent queues gets
    the next batch (aged queues first, most urgent aged first). Under
    sustained load on priority 0 a waiting priority 1 queue thus still gets one
    batch in K + 1 (priority 0 keeps K/(K+1) of the endpoint; with n busy
    queues the most urgent keeps at least K/(K+n-1)). No waiting queue waits
    forever: after K batches of more urgent queues it is aged, and from then
    on only aged queues more urgent than it go first. K = 10 by default:
    urgent traffic keeps >= 90 % against one busy lower priority, and a bulk
    queue still drains at batch rate / 11 instead of never.

    Never spins: when idle it waits for ``notify``; after a failure it waits
    for the backoff or ``on_reachable`` (invariant 7), whichever comes first.

    Metrics updated here (edgeHub's names): ``edgehub_messages_sent_total`` (counted
    once per message, when its checkpoint is written, per sender and output),
    ``edgehub_message_send_duration_seconds``, ``edgehub_message_process_duration_seconds``
    (enqueued until confirmed), ``edgehub_messages_dropped_total{reason="rejected"}`` and
    ``edgehub_operation_retry_total{operation="send"}`` (one per backoff). Going offline
    is the upstream link's metric; ``edgehub_queue_length`` is left to the hub.
    """

    def __init__(
        self,
        store: Store,
        endpoint: Endpoint,
        clock: Clock,
        *,
        priorities: Iterable[int] = (),
        batch_size: int | None = None,
        max_in_flight_batches: int = 1,
        starvation_limit: int = DEFAULT_STARVATION_LIMIT,
        backoff: Backoff | None = None,
    ) -> None:
        limit = endpoint.max_batch_size
        batch_size = limit if batch_size is None else min(batch_size, limit)
        if batch_size < 1:
            raise ValueError(f"batch size of {endpoint.name} must be >= 1, got {batch_size}")
        if max_in_flight_batches < 1:
            raise ValueError(f"max_in_flight_batches must be >= 1, got {max_in_flight_batches}")
        if starvation_limit < 1:
            raise ValueError(f"starvation_limit must be >= 1, got {starvation_limit}")
        self._store = store
        self._endpoint = endpoint
        self._clock = clock
        self._name = endpoint.name
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight_batches
        self._starvation_limit = starvation_limit
        self._backoff = backoff or Backoff()
        self._cursors: list[_QueueCursor] = []  # sorted by priority, most urgent first
        self._by_priority: dict[int, _QueueCursor] = {}
        for priority in priorities:
            self._cursor(priority)
        self._in_flight_count = 0
        self._draining = False
        self._failed = False  # the drain ends in a backoff
        self._offline_since: float | None = None
        self._wake = asyncio.Event()  # notify, a send came back, reachable, stop
        self._resume = asyncio.Event()  # reachable (or stop) since the last send started
        self._stopping = False
        self._stop_grace = DEFAULT_STOP_GRACE
        self._state = PumpState.NEW
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Unsubscribe | None = None
        self._sent = SentRecorder(self._name)
        self._retries = OPERATION_RETRY.labels(id=self._name, operation="send")

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def state(self) -> PumpState:
        return self._state

    @property
    def priorities(self) -> list[int]:
        """The priorities this pump serves, most urgent first."""
        return [cursor.key.priority for cursor in self._cursors]

    # -- control ---------------------------------------------------------------

    def start(self) -> None:
        """Start pumping (on the running loop). Also serves every queue of this
        endpoint the store already holds, so messages left by a previous run go out."""
        if self._task is not None:
            raise RuntimeError(f"pump of {self._name} already started")
        for key in self._store.queues():
            if key.endpoint == self._name:
                self._cursor(key.priority)
        self._unsubscribe = self._endpoint.subscribe_reachable(self.on_reachable)
        self._state = PumpState.IDLE
        self._task = asyncio.create_task(self._run(), name=f"pump {self._name}")

    async def stop(self, grace: float = DEFAULT_STOP_GRACE) -> None:
        """Stop sending. In-flight sends get ``grace`` seconds (of the pump's clock) to
        finish and are checkpointed if confirmed; then they are cancelled and
        their messages stay queued. Idempotent."""
        if self._task is None:
            self._state = PumpState.STOPPED
            return
        self._stop_grace = grace
        self._stopping = True
        self._wake.set()
        self._resume.set()
        try:
            await self._task
        finally:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None

    def notify(self, priority: int = DEFAULT_PRIORITY) -> None:
        """Messages were appended to this endpoint's queue at ``priority``: wake an
        idle pump (no store poll needed). Call on the event loop thread."""
        self._cursor(priority).waiting = True
        self._wake.set()

    def on_reachable(self) -> None:
        """The endpoint is reachable again: end a backoff at once (invariant 7;
        edgeHub waited out its timer, up to 60 s, until PR #7528)."""
        self._resume.set()
        self._wake.set()

    # -- the loop --------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._stopping:
                self._wake.clear()
                self._settle_completed()
                if self._draining:
                    if self._in_flight_count:
                        self._state = PumpState.DRAINING
                        await self._wake.wait()
                    elif self._end_drain():
                        await self._back_off()
                    continue
                self._fill_window()
                self._state = PumpState.SENDING if self._in_flight_count else PumpState.IDLE
                await self._wake.wait()
            await self._shut_down()
        except Exception:
            log.exception("endpoint pump %s crashed", self._name)
            raise

    def _fill_window(self) -> None:
        now = now_ms(self._clock)
        while self._in_flight_count < self._max_in_flight:
            try:
                picked = self._read_next(now)
            except StoreError:
                log.exception("endpoint %s: reading its queues failed; retrying with backoff", self._name)
                self._draining = self._failed = True
                return
            if picked is None:
                return
            self._launch(*picked)

    def _read_next(self, now: int) -> tuple[_QueueCursor, list[QueuedMessage]] | None:
        """The next batch by the priority-with-aging policy (see the class docstring)."""
        waiting = [cursor for cursor in self._cursors if cursor.waiting]
        limit = self._starvation_limit
        for cursor in sorted(waiting, key=lambda c: (c.passed_over < limit, c.key.priority)):
            batch = self._store.read(cursor.key, cursor.read_after, self._batch_size, now)
            if len(batch) < self._batch_size:
                cursor.waiting = False
            if batch:
                for other in waiting:
                    if other.waiting and other.key.priority > cursor.key.priority:
                        other.passed_over += 1
                cursor.passed_over = 0
                return cursor, batch
        return None

    def _launch(self, cursor: _QueueCursor, messages: list[QueuedMessage]) -> None:
        # A reachability signal older than this send says nothing about its outcome.
        self._resume.clear()
        batch = _Batch(cursor, messages, started=self._clock.monotonic())
        cursor.read_after = messages[-1].id
        cursor.in_flight.append(batch)
        self._in_flight_count += 1
        batch.task = asyncio.create_task(self._send(batch), name=f"send {cursor.key}")

    async def _send(self, batch: _Batch) -> None:
        try:
            batch.result = await self._endpoint.send(batch.messages)
        except EndpointUnavailable as exc:
            log.debug("endpoint %s unavailable: %s", self._name, exc)
        except Exception:
            log.exception("endpoint %s: send failed unexpectedly; retrying with backoff", self._name)
        finally:
            batch.done = True
            self._wake.set()

    # -- outcomes --------------------------------------------------------------

    def _settle_completed(self) -> None:
        """Checkpoint each queue's leading completed batches, in send order."""
        for cursor in self._cursors:
            while cursor.in_flight and cursor.in_flight[0].done:
                self._in_flight_count -= 1
                self._settle(cursor.in_flight.popleft())

    def _settle(self, batch: _Batch) -> None:
        cursor = batch.queue
        if cursor.broken:
            return  # an older batch of this queue fell short: this one goes again after the drain
        result = batch.result
        if result is None:
            self._went_offline()
            self._fall_short(cursor, failed=True)
            return
        count = len(batch.messages)
        delivered = min(result.delivered, count)
        if result.delivered > count:
            log.warning("endpoint %s confirmed %d of %d messages", self._name, result.delivered, count)
        rejected = result.rejected and delivered < count
        covered = delivered + 1 if rejected else delivered  # a rejected message is dropped: checkpointed
        if covered:
            if not self._checkpoint(cursor, batch.messages[covered - 1].id):
                self._fall_short(cursor, failed=True)
                return
            if delivered:
                self._sent.record(
                    cursor.key.priority, [m.message for m in batch.messages[:delivered]],
                    self._clock.monotonic() - batch.started, now_ms(self._clock),
                )
            if rejected:
                MESSAGES_DROPPED.labels("rejected", *sender_of(batch.messages[delivered].message)).inc()
                log.warning(
                    "endpoint %s rejected message %d; dropped", self._name, batch.messages[delivered].id
                )
            self._progressed()
        if covered < count:
            # Short of the whole batch: re-read after the checkpoint. Without any
            # progress at all it counts as a failure and backs off.
            self._fall_short(cursor, failed=not covered)

    def _checkpoint(self, cursor: _QueueCursor, upto: MessageId) -> bool:
        try:
            self._store.checkpoint(cursor.key, upto)
        except StoreError:
            log.exception(
                "endpoint %s: checkpoint of %s up to %d failed; those messages will be sent again",
                self._name, cursor.key, upto,
            )
            return False
        cursor.checkpointed = upto
        return True

    def _fall_short(self, cursor: _QueueCursor, *, failed: bool) -> None:
        cursor.broken = True
        self._draining = True
        self._failed = self._failed or failed

    def _went_offline(self) -> None:
        if self._offline_since is None:
            self._offline_since = self._clock.monotonic()
            log.warning("endpoint %s unavailable; retrying with backoff", self._name)

    def _progressed(self) -> None:
        self._backoff.reset()
        if self._offline_since is not None:
            offline = self._clock.monotonic() - self._offline_since
            self._offline_since = None
            log.info("endpoint %s delivering again after %.1f s", self._name, offline)

    def _end_drain(self) -> bool:
        """The window is empty: rewind every queue to its checkpoint. True if a backoff is due."""
        failed, self._failed, self._draining = self._failed, False, False
        for cursor in self._cursors:
            cursor.broken = False
            if cursor.read_after != cursor.checkpointed:
                cursor.read_after = cursor.checkpointed
                cursor.waiting = True
        return failed

    async def _back_off(self) -> None:
        delay = self._backoff.next_delay()
        self._retries.inc()
        if self._resume.is_set():
            return  # reachable again since the failed send started: retry at once
        self._state = PumpState.BACKING_OFF
        log.debug("endpoint %s: retry %d in %.2f s", self._name, self._backoff.failures, delay)
        timer = asyncio.ensure_future(self._clock.sleep(delay))
        resumed = asyncio.ensure_future(self._resume.wait())
        try:
            await asyncio.wait({timer, resumed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            resumed.cancel()
            await asyncio.wait({timer, resumed})

    async def _shut_down(self) -> None:
        self._state = PumpState.STOPPING
        sends: set[asyncio.Future[None]] = {
            batch.task for cursor in self._cursors for batch in cursor.in_flight if batch.task is not None
        }
        if sends:
            timer = asyncio.ensure_future(self._clock.sleep(self._stop_grace))
            try:
                while sends and not timer.done():
                    done, _ = await asyncio.wait(sends | {timer}, return_when=asyncio.FIRST_COMPLETED)
                    sends -= done
            finally:
                timer.cancel()
            for send in sends:
                send.cancel()
            await asyncio.wait({*sends, timer})
            self._settle_completed()
        self._state = PumpState.STOPPED

    # -- queues ----------------------------------------------------------------

    def _cursor(self, priority: int) -> _QueueCursor:
        cursor = self._by_priority.get(priority)
        if cursor is None:
            cursor = _QueueCursor(QueueKey(self._name, priority))
            self._by_priority[priority] = cursor
            bisect.insort(self._cursors, cursor, key=lambda c: c.key.priority)
        return cursor
