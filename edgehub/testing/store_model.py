"""The store's stateful model test: random appends, reads (oldest and newest first), checkpoints,
out-of-order deliveries, expiry and reopens checked against a plain Python model, for any
backend (Hypothesis RuleBasedStateMachine).

Test support only; it opens stores through the opener it is given.
"""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path
from typing import ClassVar, Final

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edgehub.errors import StoreFullError
from edgehub.store.base import QueueKey
from edgehub.testing.store_suite import (
    MODULE,
    MODULE_URGENT,
    NOW,
    UPSTREAM,
    StoreOpener,
    item,
    to,
)

_QUEUES: Final = (UPSTREAM, MODULE, MODULE_URGENT)


class _ModelMessage:
    """A stored body and, per queue, its TTL expiry and the time an expire run drops it:
    the expiry, or just after the last run when the expiry was already past it."""

    __slots__ = ("body", "drops", "refs")

    def __init__(self, body: bytes, refs: dict[QueueKey, int], expired_upto: int) -> None:
        self.body = body
        self.refs = refs
        self.drops = {queue: max(expiry, expired_upto + 1) for queue, expiry in refs.items()}


class StoreModel(RuleBasedStateMachine):
    """Random appends, reads, checkpoints, out-of-order deliveries (``mark_delivered``), expiry
    runs and reopens, checked against plain Python queues. Subclasses set ``opener``."""

    opener: ClassVar[StoreOpener]

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="edgehub-model-")
        self.folder = Path(self.tmp.name) / "store"
        self.max_size: int | None = None
        self.store = type(self).opener(self.folder, None)
        self.now = NOW
        self.expired_upto = 0
        self.last_id = 0
        self.messages: dict[int, _ModelMessage] = {}
        self.checkpoints: dict[QueueKey, int] = {}
        self.removed: set[tuple[QueueKey, int]] = set()
        self.delivered: set[tuple[QueueKey, int]] = set()  # by mark_delivered, above the checkpoint
        self.used: set[QueueKey] = set()

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    def _live_refs(self, queue: QueueKey) -> list[tuple[int, int]]:
        checkpoint = self.checkpoints.get(queue, 0)
        return sorted(
            (message_id, message.refs[queue]) for message_id, message in self.messages.items()
            if queue in message.refs and message_id > checkpoint and not self._gone(queue, message_id)
        )

    def _gone(self, queue: QueueKey, message_id: int) -> bool:
        return (queue, message_id) in self.removed or (queue, message_id) in self.delivered

    def _reclaim(self) -> None:
        for message_id in [
            message_id for message_id, message in self.messages.items()
            if all(
                self.checkpoints.get(queue, 0) >= message_id or self._gone(queue, message_id)
                for queue in message.refs
            )
        ]:
            del self.messages[message_id]

    @rule(
        batch=st.lists(
            st.tuples(
                st.binary(max_size=40),
                st.dictionaries(st.sampled_from(_QUEUES), st.integers(-20, 200), max_size=3),
            ),
            min_size=1, max_size=6,
        ),
    )
    def append(self, batch: list[tuple[bytes, dict[QueueKey, int]]]) -> None:
        items = [item(body, *(to(queue, self.now + offset) for queue, offset in refs.items()))
                 for body, refs in batch]
        try:
            ids = self.store.append(items)
        except StoreFullError:
            assert self.max_size is not None
            return
        for (body, refs), message_id in zip(batch, ids, strict=True):
            if not refs:
                assert message_id == -1
                continue
            assert message_id > self.last_id
            self.last_id = message_id
            self.used.update(refs)
            expiries = {queue: self.now + offset for queue, offset in refs.items()}
            self.messages[message_id] = _ModelMessage(body, expiries, self.expired_upto)
        if self.max_size is not None:
            assert self.store.size_bytes() <= self.max_size

    @rule(queue=st.sampled_from(_QUEUES), back=st.integers(0, 8), limit=st.integers(1, 6))
    def read(self, queue: QueueKey, back: int, limit: int) -> None:
        after = max(0, self.last_id - back)
        expected = [(message_id, expiry) for message_id, expiry in self._live_refs(queue)
                    if message_id > after and expiry > self.now][:limit]
        read = self.store.read(queue, after, limit, self.now)
        assert [(q.id, q.expiry_ms) for q in read] == expected
        assert [q.message.body for q in read] == [self.messages[i].body for i, _ in expected]

    @rule(
        queue=st.sampled_from(_QUEUES), above_back=st.integers(0, 12),
        below_back=st.none() | st.integers(-1, 8), limit=st.integers(1, 6),
    )
    def read_newest(self, queue: QueueKey, above_back: int, below_back: int | None, limit: int) -> None:
        above = max(0, self.last_id - above_back)
        below = None if below_back is None else self.last_id - below_back
        expected = [
            (message_id, expiry) for message_id, expiry in self._live_refs(queue)
            if above < message_id and (below is None or message_id < below) and expiry > self.now
        ][-limit:]
        read = self.store.read_newest(queue, above, below, limit, self.now)
        assert [(q.id, q.expiry_ms) for q in read] == expected
        assert [q.message.body for q in read] == [self.messages[i].body for i, _ in expected]

    @rule(queue=st.sampled_from(_QUEUES), picks=st.lists(st.integers(0, 12), max_size=5))
    def mark_delivered(self, queue: QueueKey, picks: list[int]) -> None:
        ids = [self.last_id - back for back in picks]  # waiting, delivered, expired or never in the queue
        self.store.mark_delivered(queue, ids)
        for message_id in ids:
            message = self.messages.get(message_id)
            if (message is not None and queue in message.refs and message_id > self.checkpoints.get(queue, 0)
                    and not self._gone(queue, message_id)):
                self.delivered.add((queue, message_id))
        self._reclaim()

    @rule(queue=st.sampled_from(_QUEUES), back=st.integers(-2, 8))
    def checkpoint(self, queue: QueueKey, back: int) -> None:
        upto = min(self.last_id - back, self.last_id)
        self.store.checkpoint(queue, upto)
        if upto > self.checkpoints.get(queue, 0):
            self.used.add(queue)
            self.checkpoints[queue] = upto
        self._reclaim()

    @rule(step=st.integers(1, 120))
    def advance(self, step: int) -> None:
        self.now += step

    @rule()
    def expire(self) -> None:
        dropped: dict[QueueKey, int] = {}
        for message_id, message in self.messages.items():
            for queue, drop in message.drops.items():
                if (drop <= self.now and self.checkpoints.get(queue, 0) < message_id
                        and not self._gone(queue, message_id)):
                    self.removed.add((queue, message_id))
                    dropped[queue] = dropped.get(queue, 0) + 1
        self.expired_upto = max(self.expired_upto, self.now)
        assert self.store.expire(self.now) == {q: n for q, n in dropped.items() if n}
        self._reclaim()

    @rule(limit=st.sampled_from([None, 600, 2000]))
    def reopen(self, limit: int | None) -> None:
        before = (self.store.size_bytes(), self.store.queue_lengths(), self.store.next_id)
        self.store.close()
        self.store = type(self).opener(self.folder, limit)
        self.max_size = limit
        assert (self.store.size_bytes(), self.store.queue_lengths(), self.store.next_id) == before

    @invariant()
    def counts_match_the_model(self) -> None:
        assert self.store.message_count() == len(self.messages)
        assert (self.store.size_bytes() == 0) == (not self.messages)
        lengths = self.store.queue_lengths()
        for queue in _QUEUES:
            assert lengths.get(queue, 0) == len(self._live_refs(queue))
        assert set(self.store.queues()) == self.used


def stateful_store_test(opener: StoreOpener, *, max_examples: int = 40) -> type[unittest.TestCase]:
    """A TestCase running StoreModel against the backend ``opener`` opens."""
    machine: type[StoreModel] = type("StoreModelFor", (StoreModel,), {"opener": staticmethod(opener)})
    case: type[unittest.TestCase] = machine.TestCase
    case.settings = settings(  # type: ignore[attr-defined]  # hypothesis reads it off the TestCase
        max_examples=max_examples, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return case
