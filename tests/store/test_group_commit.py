"""GroupCommitter: one store.append per event-loop turn, acks only after the write
(docs/architecture.md §1, invariants 1 and 3)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from edgehub.errors import StoreError, StoreFullError
from edgehub.message import MessageId
from edgehub.store.base import IngestItem
from edgehub.store.group_commit import INLINE_MAX_BYTES, GroupCommitter
from edgehub.store.memory import MemoryStore
from edgehub.testing.clock import settle
from edgehub.testing.store_suite import UPSTREAM, bodies, item, to


class RecordingStore(MemoryStore):
    """A MemoryStore that records each append call and can hold the writer at a gate."""

    def __init__(self, *, max_size_bytes: int | None = None) -> None:
        super().__init__(max_size_bytes=max_size_bytes)
        self.calls: list[int] = []
        self.threads: set[int] = set()
        self.entered = threading.Event()
        self.gate: threading.Event | None = None
        self.failure: Exception | None = None

    def append(self, items: Sequence[IngestItem]) -> list[MessageId]:
        self.calls.append(len(items))
        self.threads.add(threading.get_ident())
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.failure is not None:
            raise self.failure
        return super().append(items)


def _items(label: str, count: int = 1, size: int = 1) -> list[IngestItem]:
    return [item(label.encode() * size, to(UPSTREAM)) for _ in range(count)]


@pytest.mark.parametrize("sync", [False, True])
async def test_appends_of_one_turn_share_one_store_append(sync: bool) -> None:
    store = RecordingStore()
    committer = GroupCommitter(store, sync=sync)
    results = await asyncio.gather(*(committer.append(_items(str(n), 2)) for n in range(20)))
    assert store.calls == [40]
    ids = [message_id for result in results for message_id in result]
    assert ids == sorted(ids)
    assert len(set(ids)) == 40
    assert bodies(store, UPSTREAM) == [str(n).encode() for n in range(20) for _ in range(2)]
    await committer.close()


async def test_without_sync_the_write_runs_inline_on_the_loop_thread() -> None:
    store = RecordingStore()
    committer = GroupCommitter(store, sync=False)
    assert committer.writes_inline(INLINE_MAX_BYTES)
    await committer.append(_items("a"))
    assert store.threads == {threading.get_ident()}
    await committer.close()


async def test_without_sync_a_large_batch_is_written_by_the_worker() -> None:
    store = RecordingStore()
    committer = GroupCommitter(store, sync=False)
    assert not committer.writes_inline(INLINE_MAX_BYTES + 1)
    await committer.append(_items("a", 2, size=INLINE_MAX_BYTES // 2 + 1))
    assert threading.get_ident() not in store.threads
    await committer.close()


async def test_with_sync_the_write_runs_off_the_loop_and_the_next_batch_accumulates() -> None:
    store = RecordingStore()
    store.gate = threading.Event()
    committer = GroupCommitter(store, sync=True)
    assert not committer.writes_inline(1)
    first = asyncio.ensure_future(committer.append(_items("first")))
    assert await asyncio.to_thread(store.entered.wait, 5)
    # The loop still serves while the writer is busy (in fsync): more appends queue up.
    later = [asyncio.ensure_future(committer.append(_items(str(n)))) for n in range(10)]
    await settle()
    assert not first.done()  # no ack before the write returned (invariant 1)
    assert store.calls == [1]
    store.gate.set()
    await asyncio.gather(first, *later)
    assert store.calls == [1, 10]
    assert threading.get_ident() not in store.threads
    await committer.close()


async def test_one_callers_oversize_batch_does_not_fail_the_others() -> None:
    store = RecordingStore(max_size_bytes=3000)
    committer = GroupCommitter(store, sync=False)
    small, big, other = await asyncio.gather(
        committer.append(_items("s")),
        committer.append(_items("b", size=5000)),
        committer.append(_items("o")),
        return_exceptions=True,
    )
    assert isinstance(big, StoreFullError)
    assert isinstance(small, list)
    assert isinstance(other, list)
    assert store.calls == [3, 1, 1, 1]
    assert bodies(store, UPSTREAM) == [b"s", b"o"]
    await committer.close()


async def test_each_full_caller_gets_its_own_error() -> None:
    store = RecordingStore(max_size_bytes=100)
    committer = GroupCommitter(store, sync=True)
    outcomes = await asyncio.gather(
        committer.append(_items("a", size=500)), committer.append(_items("b", size=500)),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, StoreFullError) for outcome in outcomes)
    assert outcomes[0] is not outcomes[1]
    await committer.close()


async def test_a_store_failure_reaches_every_caller_of_the_batch() -> None:
    store = RecordingStore()
    store.failure = StoreError("disk gone")
    committer = GroupCommitter(store, sync=True)
    outcomes = await asyncio.gather(
        committer.append(_items("a")), committer.append(_items("b")), return_exceptions=True,
    )
    assert [str(outcome) for outcome in outcomes] == ["disk gone", "disk gone"]
    await committer.close()


async def test_batches_are_cut_at_max_batch_items_but_a_caller_is_never_split() -> None:
    store = RecordingStore()
    committer = GroupCommitter(store, sync=False, max_batch_items=6)
    await asyncio.gather(*(committer.append(_items(str(n), 3)) for n in range(5)))
    assert store.calls == [6, 6, 3]
    await committer.append(_items("huge", 10))
    assert store.calls[-1] == 10
    await committer.close()


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    store = RecordingStore()
    store.gate = threading.Event()
    committer = GroupCommitter(store, sync=True)
    first = asyncio.ensure_future(committer.append(_items("first")))
    assert await asyncio.to_thread(store.entered.wait, 5)
    cancelled = asyncio.ensure_future(committer.append(_items("cancelled")))
    kept = asyncio.ensure_future(committer.append(_items("kept")))
    await settle()
    cancelled.cancel()
    store.gate.set()
    await asyncio.gather(first, kept)
    assert cancelled.cancelled()
    # Its items were in the batch already: stored (at-least-once), only the ack is lost.
    assert bodies(store, UPSTREAM) == [b"first", b"cancelled", b"kept"]
    await committer.close()


async def test_close_writes_what_is_pending_then_refuses_appends() -> None:
    store = RecordingStore()
    committer = GroupCommitter(store, sync=True)
    pending = [asyncio.ensure_future(committer.append(_items(str(n)))) for n in range(3)]
    await settle(1)
    await committer.close()
    assert all(task.done() for task in pending)
    assert store.message_count() == 3
    with pytest.raises(StoreError, match="closed"):
        await committer.append(_items("late"))


async def test_store_calls_run_after_the_write_in_flight() -> None:
    store = RecordingStore()
    store.gate = threading.Event()
    committer = GroupCommitter(store, sync=True)
    written = asyncio.ensure_future(committer.append(_items("a")))
    assert await asyncio.to_thread(store.entered.wait, 5)
    length = asyncio.ensure_future(committer.call(lambda: store.queue_lengths().get(UPSTREAM, 0)))
    store.gate.set()
    [message_id] = await written
    assert await length == 1
    await committer.call(store.checkpoint, UPSTREAM, message_id)
    assert store.message_count() == 0
    await committer.close()


def test_max_batch_items_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommitter(MemoryStore(), sync=False, max_batch_items=0)
