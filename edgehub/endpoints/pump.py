"""EndpointPump: moves one endpoint's queued messages from the store to the endpoint, in its drain order.

Owns read cursors, batching, the in-flight window, checkpoints, drain order, backoff and priority scheduling;
it never appends, routes or expires, and never checkpoints a message the endpoint did not confirm.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import logging
from collections.abc import Callable, Iterable
from typing import Final

from edgehub.clock import Clock, now_ms
from edgehub.endpoints.backoff import Backoff
from edgehub.endpoints.base import Endpoint, Unsubscribe
from edgehub.endpoints.cursor import Batch, QueueCursor
from edgehub.errors import EndpointUnavailable, StoreDamagedError, StoreError
from edgehub.message import MessageId
from edgehub.metrics import MESSAGES_DROPPED, OPERATION_RETRY, SentRecorder, sender_of
from edgehub.store.base import DEFAULT_PRIORITY, DrainOrder, QueuedMessage, QueueKey, Store

log = logging.getLogger(__name__)

DEFAULT_STARVATION_LIMIT: Final = 10
"""Batches a waiting queue may be passed over for more urgent ones before it gets one."""

DEFAULT_STOP_GRACE: Final = 5.0
"""Seconds ``stop`` lets in-flight sends finish before cancelling them."""

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


class EndpointPump:
    """Delivers the queues ``QueueKey(endpoint.name, p)`` of one endpoint, most urgent first.

    Order (docs/architecture.md §1 invariant 4): per queue, batches are read and ``send`` is
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

    Drain order ``newestFirst`` (edgeHub #2486: a backlog of a million messages hid live
    data for hours): each batch of a queue is the newest waiting messages not in flight (in
    id order within the batch, from one run of ids between batches in flight or delivered),
    so a message that arrives while a backlog waits goes out in the next batch, and the
    backlog drains behind the live traffic, from its newest end, at whatever rate the live
    traffic leaves. So that the backlog drains even when live traffic fills the link, and
    its oldest messages are not always the ones left to expire, after ``starvation_limit``
    (K) full newest-first batches were delivered the next batch of the queue is its oldest
    waiting messages (then the backlog gets at least one batch in K + 1; failed sends during
    an outage do not count). Batches are confirmed one by one (``Store.mark_delivered``), in
    any order: a shortfall sends only that batch's unconfirmed rest again. Per queue, newest
    first takes the place of invariant 4's ingest order; priorities are served as above.
    ``set_drain_order`` switches once the window is empty (it stops filling it until then).

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
        drain_order: DrainOrder = DrainOrder.FIFO,
        on_failure: Callable[[str, BaseException], None] | None = None,
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
        self._order = drain_order
        self._pending_order: DrainOrder | None = None
        # Store damage it cannot route around, or a crash: told to the hub (which stops with exit 3
        # on store damage), never left as a dead task; the other pumps keep running.
        self._on_failure = on_failure or _log_only
        self._cursors: list[QueueCursor] = []  # sorted by priority, most urgent first
        self._by_priority: dict[int, QueueCursor] = {}
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
    def drain_order(self) -> DrainOrder:
        """The order in force (a change waits for the window to empty)."""
        return self._order

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

    def set_drain_order(self, order: DrainOrder) -> None:
        """Drain in ``order`` from now on (a config reload): the pump stops filling its window,
        lets the batches in flight come back, then reads in the new order."""
        self._pending_order = None if order is self._order else order
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
        except Exception as exc:
            log.critical("endpoint pump %s crashed: %s", self._name, exc, exc_info=True)
            self._state = PumpState.STOPPED
            self._on_failure(self._name, exc)

    def _fill_window(self) -> None:
        if self._pending_order is not None:
            if self._in_flight_count:
                return  # the batches in flight settle in the order they were read in
            self._switch_order(self._pending_order)
        now = now_ms(self._clock)
        while self._in_flight_count < self._max_in_flight:
            try:
                picked = self._read_next(now)
            except StoreDamagedError as exc:  # damage the store could not pin on messages
                log.critical("endpoint %s: its queues cannot be read: %s", self._name, exc)
                self._draining = self._failed = True
                self._on_failure(self._name, exc)
                return
            except StoreError:
                log.exception("endpoint %s: reading its queues failed; retrying with backoff", self._name)
                self._draining = self._failed = True
                return
            if picked is None:
                return
            self._launch(*picked)

    def _read_next(self, now: int) -> tuple[QueueCursor, list[QueuedMessage]] | None:
        """The next batch by the priority-with-aging policy (see the class docstring)."""
        waiting = [cursor for cursor in self._cursors if cursor.waiting]
        limit = self._starvation_limit
        for cursor in sorted(waiting, key=lambda c: (c.passed_over < limit, c.key.priority)):
            if cursor.newest_first:
                batch = cursor.read_newest(self._store, self._batch_size, self._starvation_limit, now)
                if not batch:  # a short batch may sit above a backlog: only an empty read ends the wait
                    cursor.waiting = False
            else:
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

    def _launch(self, cursor: QueueCursor, messages: list[QueuedMessage]) -> None:
        # A reachability signal older than this send says nothing about its outcome.
        self._resume.clear()
        batch = Batch(cursor, messages, started=self._clock.monotonic())
        cursor.take(batch)
        self._in_flight_count += 1
        batch.task = asyncio.create_task(self._send(batch), name=f"send {cursor.key}")

    async def _send(self, batch: Batch) -> None:
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
            if cursor.newest_first:  # each batch on its own, in any order
                for batch in [batch for batch in cursor.in_flight if batch.done]:
                    cursor.in_flight.remove(batch)
                    self._in_flight_count -= 1
                    cursor.release(batch, self._settle_newest(batch))
                continue
            while cursor.in_flight and cursor.in_flight[0].done:
                self._in_flight_count -= 1
                self._settle(cursor.in_flight.popleft())

    def _settle(self, batch: Batch) -> None:
        """A FIFO batch came back: checkpoint over what the endpoint confirmed; after a
        shortfall the queue is re-read from the checkpoint."""
        if batch.queue.broken:
            return  # an older batch of this queue fell short: this one goes again after the drain
        self._settle_batch(batch, self._checkpoint_batch)

    def _settle_newest(self, batch: Batch) -> int:
        """A newest-first batch came back: mark what the endpoint confirmed delivered (returns
        how many, from the batch's start); the rest waits again, read again after the drain."""
        return self._settle_batch(batch, self._mark_delivered)

    def _settle_batch(self, batch: Batch, confirm: Callable[[Batch, int], bool]) -> int:
        """Record ``batch``'s outcome: ``confirm`` makes its first ``covered`` messages done in the
        store (a rejected message is dropped, so covered too); returns ``covered`` (0 when the
        send failed or ``confirm`` did)."""
        cursor = batch.queue
        result = batch.result
        if result is None:
            self._went_offline()
            self._fall_short(cursor, failed=True)
            return 0
        messages = batch.messages
        count = len(messages)
        delivered = min(result.delivered, count)
        if result.delivered > count:
            log.warning("endpoint %s confirmed %d of %d messages", self._name, result.delivered, count)
        rejected = result.rejected and delivered < count
        covered = delivered + 1 if rejected else delivered
        if covered:
            if not confirm(batch, covered):
                self._fall_short(cursor, failed=True)
                return 0
            if delivered:
                self._sent.record(
                    cursor.key.priority, [m.message for m in messages[:delivered]],
                    self._clock.monotonic() - batch.started, now_ms(self._clock),
                )
            if rejected:
                MESSAGES_DROPPED.labels("rejected", *sender_of(messages[delivered].message)).inc()
                log.warning("endpoint %s rejected message %d; dropped", self._name, messages[delivered].id)
            self._progressed()
        if covered < count:
            # Short of the whole batch: read again after the drain. Without any progress at all
            # it counts as a failure and backs off.
            self._fall_short(cursor, failed=not covered)
        return covered

    def _checkpoint_batch(self, batch: Batch, covered: int) -> bool:
        return self._checkpoint(batch.queue, batch.messages[covered - 1].id)

    def _mark_delivered(self, batch: Batch, covered: int) -> bool:
        cursor = batch.queue
        try:
            self._store.mark_delivered(cursor.key, [m.id for m in batch.messages[:covered]])
        except StoreError as exc:
            if isinstance(exc, StoreDamagedError):
                self._on_failure(self._name, exc)
            log.exception(
                "endpoint %s: marking %d messages of %s delivered failed; they will be sent again",
                self._name, covered, cursor.key,
            )
            return False
        return True

    def _checkpoint(self, cursor: QueueCursor, upto: MessageId) -> bool:
        try:
            self._store.checkpoint(cursor.key, upto)
        except StoreError as exc:
            if isinstance(exc, StoreDamagedError):
                self._on_failure(self._name, exc)
            log.exception(
                "endpoint %s: checkpoint of %s up to %d failed; those messages will be sent again",
                self._name, cursor.key, upto,
            )
            return False
        cursor.checkpointed = upto
        return True

    def _fall_short(self, cursor: QueueCursor, *, failed: bool) -> None:
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
            if cursor.newest_first:
                cursor.waiting = True  # what came back unconfirmed is waiting again
            elif cursor.read_after != cursor.checkpointed:
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

    def _switch_order(self, order: DrainOrder) -> None:
        """Take up ``order`` with an empty window: every queue is read afresh from the store."""
        log.info("endpoint %s: drain order %s", self._name, order.value)
        self._order, self._pending_order = order, None
        for cursor in self._cursors:
            cursor.restart(order is DrainOrder.NEWEST_FIRST)

    def _cursor(self, priority: int) -> QueueCursor:
        cursor = self._by_priority.get(priority)
        if cursor is None:
            newest_first = self._order is DrainOrder.NEWEST_FIRST
            cursor = QueueCursor(QueueKey(self._name, priority), newest_first=newest_first)
            self._by_priority[priority] = cursor
            bisect.insort(self._cursors, cursor, key=lambda c: c.key.priority)
        return cursor


def _log_only(name: str, exc: BaseException) -> None:
    """The failure report of a pump run without a hub (tests): the log line was written already."""
