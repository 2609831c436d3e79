"""A pump's in-memory state of one queue: its read cursor, the batches in flight, and for drain
order ``newestFirst`` the spans of ids read from the newest end (see ``EndpointPump``).

Pure bookkeeping over ``Store`` reads: nothing here sends, checkpoints or waits.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from edgehub.endpoints.base import SendResult
from edgehub.message import MessageId
from edgehub.store.base import QueuedMessage, QueueKey, Store

MAX_SPANS: Final = 1024
"""Spans a newest-first queue remembers at most (they merge as the backlog drains)."""

BEFORE_FIRST: Final[MessageId] = -1
"""Cursor position before every id; the store's read skips what is already checkpointed."""


@dataclass(slots=True, eq=False)
class Batch:
    """One ``send`` call: consecutive messages of one queue."""

    queue: QueueCursor
    messages: list[QueuedMessage]
    started: float
    result: SendResult | None = None  # None once done: raised or was cancelled
    done: bool = False
    task: asyncio.Task[None] | None = None
    span: Span | None = None  # newest first: the ids this batch stands for


@dataclass(slots=True, eq=False)
class Span:
    """Newest first: a run of ids of one queue that holds no waiting message besides the
    batch in flight over it (``batch``), or none at all (``batch`` None: delivered). Reads
    skip spans, so they never wade through what was delivered (RocksDB's tombstones)."""

    first: MessageId
    last: MessageId
    batch: Batch | None
    full_newest: bool = False  # a full batch from the newest end: counts toward the next oldest-end one


@dataclass(slots=True, eq=False)
class QueueCursor:
    """The pump's in-memory position in one queue (one endpoint at one priority)."""

    key: QueueKey
    read_after: MessageId = BEFORE_FIRST  # last id handed to the endpoint (sent or in flight)
    checkpointed: MessageId = BEFORE_FIRST  # last id this pump checkpointed
    waiting: bool = True  # may hold unread messages (set by notify, cleared by a short read)
    passed_over: int = 0  # batches served from more urgent queues while this one waited
    broken: bool = False  # a batch fell short: later in-flight batches are not checkpointed
    in_flight: deque[Batch] = field(default_factory=deque)
    newest_first: bool = False  # drainOrder newestFirst: the fields below are used, read_after is not
    spans: list[Span] = field(default_factory=list)  # sorted, disjoint
    fresh_batches: int = 0  # full newest-first batches delivered since the last one from the oldest end
    pending: Span | None = None  # the span of the batch just read, until it is launched

    def take(self, batch: Batch) -> None:
        """``batch`` (just read from this queue) goes in flight."""
        if self.newest_first:
            span, self.pending = self.pending, None
            assert span is not None
            span.batch = batch
            batch.span = span
            bisect.insort(self.spans, span, key=lambda s: s.first)
        else:
            self.read_after = batch.messages[-1].id
        self.in_flight.append(batch)

    def restart(self, newest_first: bool) -> None:
        """Read afresh from the store (a new drain order, with nothing in flight)."""
        self.newest_first = newest_first
        self.read_after = self.checkpointed = BEFORE_FIRST
        self.fresh_batches = 0
        self.spans = []
        self.waiting = True

    def read_newest(self, store: Store, size: int, starvation_limit: int, now: int) -> list[QueuedMessage]:
        """The newest waiting messages of this queue outside its spans: from the gap above every
        span, else the next gap down; after ``starvation_limit`` full batches, the oldest waiting
        messages instead. Leaves the new batch's span in ``pending``."""
        key, spans = self.key, self.spans
        if self.fresh_batches >= starvation_limit:
            self.fresh_batches = 0
            oldest = self._read_oldest(store, size, now)
            if oldest:
                return oldest
        below: MessageId | None = None
        above = BEFORE_FIRST
        batch: list[QueuedMessage] = []
        for span in reversed(spans):
            above = span.last
            batch = store.read_newest(key, above, below, size, now)
            if batch:
                break
            below = span.first
        else:
            above = BEFORE_FIRST
            batch = store.read_newest(key, above, below, size, now)
        if not batch:
            return batch
        # The batch is the newest of its gap: nothing waits above it up to the gap's end, and
        # when it is short, nothing below it either.
        first = above + 1 if len(batch) < size else batch[0].id
        last = below - 1 if below is not None else batch[-1].id
        self.pending = Span(max(first, 0), last, None, full_newest=len(batch) == size)
        return batch

    def _read_oldest(self, store: Store, size: int, now: int) -> list[QueuedMessage]:
        """The oldest waiting messages outside the spans, from the lowest gap that holds any."""
        above = BEFORE_FIRST
        for span in [*self.spans, None]:
            bound = None if span is None else span.first
            read = store.read(self.key, above, size, now)
            batch = [m for m in read if bound is None or m.id < bound]
            if batch:
                # Nothing waits between the gap's start and the batch; up to the span above when
                # the read ran into it.
                last = bound - 1 if bound is not None and len(batch) < size else batch[-1].id
                self.pending = Span(max(above + 1, 0), last, None)
                return batch
            if span is not None:
                above = span.last
        return []

    def release(self, batch: Batch, covered: int) -> None:
        """The span of a settled newest-first batch: delivered up to its first unconfirmed
        message (merged with delivered neighbours), or gone when nothing was confirmed."""
        span = batch.span
        if span is None:
            return
        spans = self.spans
        index = spans.index(span)
        if covered and span.full_newest:  # only delivered batches age the backlog, not failed reads
            self.fresh_batches += 1
        if covered < len(batch.messages):
            span.last = batch.messages[covered].id - 1
        if not covered or span.last < span.first:
            del spans[index]
            return
        span.batch = None
        after = spans[index + 1] if index + 1 < len(spans) else None
        if after is not None and after.batch is None and after.first == span.last + 1:
            span.last = spans.pop(index + 1).last
        if index and spans[index - 1].batch is None and spans[index - 1].last + 1 == span.first:
            spans[index - 1].last = span.last
            del spans[index]
        if len(spans) > MAX_SPANS:  # only a hint for reads: forget the delivered ones
            self.spans = [kept for kept in spans if kept.batch is not None]
