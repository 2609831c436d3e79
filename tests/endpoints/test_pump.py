"""Tests of EndpointPump: order (oldest and newest first), checkpoints, retries, reachability, TTL,
priorities, fan-out, stop.

Virtual time only (FakeClock); the store is the in-memory MemoryStore.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub.clock import now_ms
from edgehub.endpoints.backoff import Backoff
from edgehub.endpoints.base import SendResult
from edgehub.endpoints.pump import EndpointPump, PumpState
from edgehub.errors import StoreError
from edgehub.metrics import INNER as REGISTRY
from edgehub.store.base import DEFAULT_PRIORITY, DrainOrder, QueueKey
from edgehub.store.memory import MemoryStore
from edgehub.testing.clock import FakeClock, settle
from tests.endpoints.fakes import FakeEndpoint, enqueue, queued_ids

UPSTREAM = "$upstream"

PumpFactory = Callable[..., EndpointPump]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def endpoint(clock: FakeClock) -> FakeEndpoint:
    return FakeEndpoint(clock, UPSTREAM, max_batch_size=10)


@pytest.fixture
async def make_pump(
    store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> AsyncIterator[PumpFactory]:
    """Builds started pumps with exact (jitter-free) backoff; stops them after the test."""
    pumps: list[EndpointPump] = []

    def make(**options: Any) -> EndpointPump:
        options.setdefault("backoff", Backoff(random=lambda: 0.0))
        pump = EndpointPump(options.pop("store", store), options.pop("endpoint", endpoint), clock, **options)
        pump.start()
        pumps.append(pump)
        return pump

    yield make
    endpoint.hold = False
    for pump in pumps:
        await pump.stop(grace=0)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


SENT_UPSTREAM = {"from": "", "to": "upstream", "from_route_output": "", "to_route_input": "",
                 "priority": str(DEFAULT_PRIORITY)}


# -- order and checkpoints -----------------------------------------------------


async def test_delivers_queue_in_id_order_in_batches(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m%d" % i for i in range(25)])
    make_pump()
    await settle()
    assert endpoint.call_ids() == [ids[0:10], ids[10:20], ids[20:25]]
    assert endpoint.delivered_ids == ids
    assert queued_ids(store, UPSTREAM) == []


async def test_batch_size_is_capped_by_the_endpoint(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 12)
    make_pump(batch_size=500)
    await settle()
    assert [len(call) for call in endpoint.call_ids()] == [10, 2]
    assert endpoint.delivered_ids == ids


async def test_counts_sent_messages_once_per_checkpoint(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    before = metric("edgehub_messages_sent_total", **SENT_UPSTREAM)
    enqueue(store, UPSTREAM, [b"m"] * 7)
    make_pump(batch_size=3)
    await settle()
    assert metric("edgehub_messages_sent_total", **SENT_UPSTREAM) - before == 7


async def test_checkpoints_only_the_confirmed_prefix(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 5)
    endpoint.hold = True
    make_pump()
    await settle()
    endpoint.held[0].complete(3)
    await settle()
    assert endpoint.call_ids() == [ids, ids[3:]]
    assert queued_ids(store, UPSTREAM) == ids[3:]  # the retry of the rest is still in flight
    endpoint.held[1].complete()
    await settle()
    assert queued_ids(store, UPSTREAM) == []
    assert endpoint.delivered_ids == ids


async def test_partial_success_resends_the_rest_without_backoff(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 4)
    endpoint.outcomes.extend([SendResult(1), SendResult(1)])
    make_pump()
    await settle()
    assert endpoint.call_ids() == [ids, ids[1:], ids[2:]]
    assert all(call.at == 0 for call in endpoint.calls)
    assert endpoint.delivered_ids == ids
    assert clock.sleepers == 0


async def test_rejected_message_is_dropped_counted_and_skipped(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    labels = {"reason": "rejected", "from": "", "from_route_output": ""}
    before = metric("edgehub_messages_dropped_total", **labels)
    ids = enqueue(store, UPSTREAM, [b"m"] * 5)
    endpoint.outcomes.append(SendResult(2, rejected=True))
    make_pump()
    await settle()
    assert endpoint.call_ids() == [ids, ids[3:]]
    assert endpoint.delivered_ids == ids[:2] + ids[3:]
    assert queued_ids(store, UPSTREAM) == []
    assert metric("edgehub_messages_dropped_total", **labels) - before == 1


async def test_idle_pump_waits_for_notify_and_never_polls(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    pump = make_pump(priorities=[DEFAULT_PRIORITY])
    await settle()
    assert pump.state is PumpState.IDLE
    assert clock.sleepers == 0  # no poll timer
    ids = enqueue(store, UPSTREAM, [b"a", b"b"])
    await clock.advance(3600)
    assert endpoint.calls == []  # appended without notify: nobody looked
    pump.notify(DEFAULT_PRIORITY)
    await settle()
    assert endpoint.delivered_ids == ids
    assert endpoint.calls[0].at == 3600


async def test_notify_of_a_new_priority_adds_its_queue(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    pump = make_pump(priorities=[1])
    await settle()
    ids = enqueue(store, UPSTREAM, [b"x"], priority=7)
    pump.notify(7)
    await settle()
    assert endpoint.delivered_ids == ids
    assert pump.priorities == [1, 7]


async def test_restarted_pump_resumes_after_the_checkpoint(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    first = enqueue(store, UPSTREAM, [b"a"] * 3)
    pump = make_pump()
    await settle()
    await pump.stop()
    second = enqueue(store, UPSTREAM, [b"b"] * 2, priority=4)
    make_pump()  # finds both queues in the store, no notify needed
    await settle()
    assert endpoint.delivered_ids == first + second


# -- retries, backoff, reachability --------------------------------------------


async def test_retries_with_exponential_backoff_up_to_the_cap(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"])
    endpoint.available = False
    pump = make_pump()
    await clock.advance(400)
    waits = [later.at - earlier.at for earlier, later in itertools.pairwise(endpoint.calls)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60]
    assert all(call.ids == ids for call in endpoint.calls)
    assert pump.state is PumpState.BACKING_OFF
    assert clock.sleepers == 1  # one backoff timer, no spinning


async def test_backoff_resets_after_a_success(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    pump = make_pump(priorities=[DEFAULT_PRIORITY])
    endpoint.available = False
    enqueue(store, UPSTREAM, [b"a"])
    pump.notify()
    await clock.advance(7)  # failures at 0, 1, 3, 7
    endpoint.available = True
    await clock.advance(8)  # retried at 15
    assert len(endpoint.delivered) == 1
    endpoint.available = False
    enqueue(store, UPSTREAM, [b"b"])
    pump.notify()
    await settle()
    assert clock.next_deadline() == 1  # back to the first step


async def test_send_without_any_confirmation_backs_off(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 2)
    endpoint.outcomes.append(SendResult(0))
    make_pump()
    await settle()
    assert endpoint.call_ids() == [ids]
    await clock.advance(1)
    assert endpoint.call_ids() == [ids, ids]
    assert endpoint.calls[1].at == 1


async def test_unexpected_send_error_is_retried_like_unavailable(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"])
    endpoint.outcomes.append(RuntimeError("bug in endpoint"))
    make_pump()
    await clock.advance(1)
    assert endpoint.delivered_ids == ids
    assert endpoint.calls[-1].at == 1


async def test_reachable_signal_ends_the_backoff_at_once(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    ids = enqueue(store, UPSTREAM, [b"a", b"b"])
    endpoint.available = False
    pump = make_pump()
    await clock.advance(64)  # failures at 0, 1, 3, 7, 15, 31, 63: waiting 60 s now
    assert pump.state is PumpState.BACKING_OFF
    assert clock.next_deadline() == 59
    endpoint.become_reachable()
    await settle()
    assert endpoint.delivered_ids == ids
    assert endpoint.calls[-1].at == 64  # the same virtual instant, not 123
    assert clock.sleepers == 0


async def test_reachable_while_the_failing_send_was_in_flight_skips_the_backoff(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    ids = enqueue(store, UPSTREAM, [b"a"])
    endpoint.hold = True
    make_pump()
    await settle()
    endpoint.become_reachable()  # e.g. the link came back while the old send was failing
    endpoint.hold = False
    endpoint.held[0].fail()
    await settle()
    assert endpoint.delivered_ids == ids
    assert [call.at for call in endpoint.calls] == [0, 0]


async def test_reachable_before_a_send_does_not_skip_its_backoff(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    pump = make_pump(priorities=[DEFAULT_PRIORITY])
    await settle()
    pump.on_reachable()  # stale: happened before the next send
    endpoint.available = False
    enqueue(store, UPSTREAM, [b"a"])
    pump.notify()
    await settle()
    assert len(endpoint.calls) == 1
    assert pump.state is PumpState.BACKING_OFF
    assert clock.next_deadline() == 1


async def test_notify_does_not_cut_a_backoff_short(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    enqueue(store, UPSTREAM, [b"a"])
    endpoint.available = False
    pump = make_pump()
    await clock.advance(1.5)  # failed at 0 and 1; next try at 3
    enqueue(store, UPSTREAM, [b"b"])
    pump.notify()
    await settle()
    assert len(endpoint.calls) == 2
    await clock.advance(1.5)
    assert len(endpoint.calls) == 3


async def test_each_retry_after_a_failed_send_is_counted(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    labels = {"id": UPSTREAM, "operation": "send"}
    before = metric("edgehub_operation_retry_total", **labels)
    enqueue(store, UPSTREAM, [b"a"])
    endpoint.available = False
    make_pump()
    await clock.advance(1.5)  # failed at 0 and 1: two backoffs so far
    endpoint.become_reachable()
    await settle()
    assert endpoint.delivered_ids
    assert metric("edgehub_operation_retry_total", **labels) - before == 2


# -- time to live --------------------------------------------------------------


async def test_message_that_expired_during_a_backoff_is_never_delivered(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    expiring = enqueue(store, UPSTREAM, [b"short"], expiry_ms=now_ms(clock) + 5_000)
    lasting = enqueue(store, UPSTREAM, [b"long"])
    endpoint.available = False
    make_pump()
    await clock.advance(3)  # tried at 0, 1, 3 with both messages
    assert endpoint.calls[-1].ids == expiring + lasting
    endpoint.available = True
    await clock.advance(4)  # next try at 7: the first one expired at 5
    assert endpoint.delivered_ids == lasting
    assert endpoint.calls[-1].ids == lasting


async def test_expired_message_is_not_read_after_a_notify(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    pump = make_pump(priorities=[DEFAULT_PRIORITY])
    await settle()
    enqueue(store, UPSTREAM, [b"gone"], expiry_ms=now_ms(clock) + 1_000)
    await clock.advance(2)
    pump.notify()
    await settle()
    assert endpoint.calls == []


# -- priorities and starvation -------------------------------------------------


async def test_more_urgent_queue_goes_first(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    low = enqueue(store, UPSTREAM, [b"low"] * 2, priority=5)
    high = enqueue(store, UPSTREAM, [b"high"] * 2, priority=0)
    make_pump(priorities=[5, 0])
    await settle()
    assert endpoint.delivered_ids == high + low
    assert [call.priority for call in endpoint.calls] == [0, 5]


async def test_waiting_queue_gets_a_batch_after_the_starvation_limit(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    enqueue(store, UPSTREAM, [b"urgent"] * 12, priority=0)
    enqueue(store, UPSTREAM, [b"bulk"] * 3, priority=1)
    make_pump(priorities=[0, 1], batch_size=1, starvation_limit=3)
    await settle()
    order = [call.priority for call in endpoint.calls]
    assert order == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]


async def test_every_waiting_priority_is_served_under_sustained_urgent_load(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    for priority in (0, 1, 2):
        enqueue(store, UPSTREAM, [b"m"] * 30, priority=priority)
    make_pump(priorities=[0, 1, 2], batch_size=1, starvation_limit=2)
    await settle(1000)
    order = [call.priority for call in endpoint.calls][:32]
    # 1 and 2 age together after two urgent batches; the more urgent aged one goes first.
    assert order == [0, 0, 1, 2] * 8


async def test_strict_order_holds_within_each_priority(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    urgent = enqueue(store, UPSTREAM, [b"u"] * 9, priority=0)
    bulk = enqueue(store, UPSTREAM, [b"b"] * 9, priority=1)
    make_pump(priorities=[0, 1], batch_size=2, starvation_limit=1)
    await settle()
    delivered = endpoint.delivered_ids
    assert [i for i in delivered if i in urgent] == urgent
    assert [i for i in delivered if i in bulk] == bulk


# -- fan-out (several batches in flight) ---------------------------------------


async def test_fan_out_keeps_the_window_bounded(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 10)
    endpoint.hold = True
    make_pump(batch_size=2, max_in_flight_batches=3)
    await settle()
    assert endpoint.call_ids() == [ids[0:2], ids[2:4], ids[4:6]]
    endpoint.held[1].complete()
    await settle()
    assert len(endpoint.calls) == 3  # a batch holds its slot until every older one came back
    endpoint.held[0].complete()
    await settle()
    assert endpoint.call_ids()[3:] == [ids[6:8], ids[8:10]]


async def test_fan_out_checkpoints_only_a_contiguous_confirmed_prefix(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 6)
    endpoint.hold = True
    make_pump(batch_size=2, max_in_flight_batches=3)
    await settle()
    first, second, third = endpoint.held
    third.complete()
    second.complete()
    await settle()
    assert queued_ids(store, UPSTREAM) == ids  # nothing before batch 1 is confirmed
    first.complete()
    await settle()
    assert queued_ids(store, UPSTREAM) == []


async def test_fan_out_failure_resends_from_the_checkpoint_in_order(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 6)
    endpoint.hold = True
    make_pump(batch_size=2, max_in_flight_batches=3)
    await settle()
    first, second, third = endpoint.held
    first.complete()
    third.complete()
    second.fail()
    await settle()
    assert queued_ids(store, UPSTREAM) == ids[2:]  # batch 3 is beyond the gap
    endpoint.hold = False
    await clock.advance(1)
    assert endpoint.call_ids()[3:] == [ids[2:4], ids[4:6]]
    assert queued_ids(store, UPSTREAM) == []


# -- drain order newestFirst ---------------------------------------------------

NEWEST = DrainOrder.NEWEST_FIRST
REJECTED = {"reason": "rejected", "from": "", "from_route_output": ""}


async def test_newest_first_sends_the_newest_batch_first_and_drains_the_backlog_behind_it(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 25)
    make_pump(drain_order=NEWEST)
    await settle()
    assert endpoint.call_ids() == [ids[15:25], ids[5:15], ids[0:5]]
    assert sorted(endpoint.delivered_ids) == ids
    assert queued_ids(store, UPSTREAM) == []
    assert store.checkpoint_of(QueueKey(UPSTREAM)) == ids[-1]


async def test_newest_first_live_message_goes_out_before_the_rest_of_a_backlog(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    backlog = enqueue(store, UPSTREAM, [b"old"] * 100)
    endpoint.hold = True
    pump = make_pump(drain_order=NEWEST)
    await settle()
    [live] = enqueue(store, UPSTREAM, [b"live"])
    pump.notify()
    endpoint.held[0].complete()
    await settle()
    assert endpoint.call_ids() == [backlog[90:], [live]]
    endpoint.hold = False
    endpoint.held[1].complete()
    await settle()
    assert endpoint.call_ids()[2] == backlog[80:90]  # then the backlog, from its newest end
    assert sorted(endpoint.delivered_ids) == [*backlog, live]
    assert queued_ids(store, UPSTREAM) == []


async def test_newest_first_after_an_outage_the_newest_messages_go_first(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    endpoint.available = False
    pump = make_pump(drain_order=NEWEST, starvation_limit=2)
    backlog = enqueue(store, UPSTREAM, [b"during the outage"] * 50)
    pump.notify()
    await clock.advance(40)  # failed sends of full batches do not count toward an oldest-end batch
    assert len(endpoint.calls) > 2
    live = enqueue(store, UPSTREAM, [b"live"] * 3)
    pump.notify()
    before = len(endpoint.calls)
    endpoint.become_reachable()
    await settle()
    assert endpoint.call_ids()[before] == [*backlog[-7:], *live]
    assert sorted(endpoint.delivered_ids) == [*backlog, *live]
    assert queued_ids(store, UPSTREAM) == []


async def test_newest_first_backlog_still_drains_when_live_traffic_fills_the_link(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    backlog = enqueue(store, UPSTREAM, [b"old"] * 40)
    endpoint.hold = True
    pump = make_pump(drain_order=NEWEST, starvation_limit=3)
    await settle()
    for _ in range(12):  # a full batch of live messages arrives during every send
        enqueue(store, UPSTREAM, [b"live"] * 10)
        pump.notify()
        endpoint.held[-1].complete()
        await settle()
    calls = endpoint.call_ids()
    assert calls[0] == backlog[30:40]  # newest first
    assert calls[3] == backlog[0:10]  # after 3 full newest-first batches, the oldest waiting ones
    assert calls[7] == backlog[10:20]
    assert calls[11] == backlog[20:30]
    assert all(min(call) > backlog[-1] for call in (calls[1], calls[2], calls[4], calls[5], calls[6]))
    assert set(endpoint.delivered_ids) >= set(backlog)


async def test_newest_first_partial_confirmation_resends_only_the_rest(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 15)
    endpoint.hold = True
    make_pump(drain_order=NEWEST)
    await settle()
    endpoint.held[0].complete(4)
    await settle()
    assert queued_ids(store, UPSTREAM) == ids[:5] + ids[9:]
    assert endpoint.call_ids()[1] == ids[9:]  # the unconfirmed rest is the newest again
    endpoint.hold = False
    endpoint.held[1].complete()
    await settle()
    assert endpoint.call_ids()[2] == ids[:5]
    assert queued_ids(store, UPSTREAM) == []
    assert sorted(endpoint.delivered_ids) == ids


async def test_newest_first_fan_out_marks_each_confirmed_batch_at_once(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 6)
    endpoint.hold = True
    make_pump(batch_size=2, max_in_flight_batches=3, drain_order=NEWEST)
    await settle()
    assert endpoint.call_ids() == [ids[4:6], ids[2:4], ids[0:2]]
    endpoint.held[2].complete()
    await settle()
    assert queued_ids(store, UPSTREAM) == ids[2:]  # no contiguous prefix needed
    endpoint.held[1].fail()
    endpoint.held[0].complete()
    await settle()
    assert queued_ids(store, UPSTREAM) == ids[2:4]


async def test_newest_first_rejected_message_is_dropped_and_counted(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    before = metric("edgehub_messages_dropped_total", **REJECTED)
    ids = enqueue(store, UPSTREAM, [b"m"] * 3)
    endpoint.outcomes.append(SendResult(1, rejected=True))
    make_pump(drain_order=NEWEST)
    await settle()
    assert endpoint.call_ids() == [ids, ids[2:]]
    assert queued_ids(store, UPSTREAM) == []
    dropped = metric("edgehub_messages_dropped_total", **REJECTED)
    assert dropped - before == 1


async def test_drain_order_changes_once_the_window_is_empty(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 30)
    endpoint.hold = True
    pump = make_pump(batch_size=5, max_in_flight_batches=2)
    await settle()
    pump.set_drain_order(NEWEST)
    endpoint.held[0].complete()
    await settle()
    assert len(endpoint.calls) == 2  # nothing new while a batch read oldest first is in flight
    assert pump.drain_order is DrainOrder.FIFO
    endpoint.held[1].complete()
    await settle()
    assert pump.drain_order is NEWEST
    assert endpoint.call_ids()[2:] == [ids[25:30], ids[20:25]]
    pump.set_drain_order(DrainOrder.FIFO)
    endpoint.hold = False
    for held in endpoint.held[2:]:
        held.complete()
    await settle()
    assert endpoint.call_ids()[4:] == [ids[10:15], ids[15:20]]
    assert sorted(endpoint.delivered_ids) == ids
    assert queued_ids(store, UPSTREAM) == []


# -- stop ----------------------------------------------------------------------


async def test_stop_lets_an_in_flight_send_finish_and_checkpoints_it(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 3)
    endpoint.hold = True
    pump = make_pump()
    await settle()
    stopping = asyncio.create_task(pump.stop(grace=5))
    await clock.advance(2)
    assert not stopping.done()
    states = [pump.state]
    endpoint.held[0].complete()
    await settle()
    assert stopping.done()
    await stopping
    states.append(pump.state)
    assert states == [PumpState.STOPPING, PumpState.STOPPED]
    assert queued_ids(store, UPSTREAM) == []
    assert endpoint.listeners == 0
    assert endpoint.delivered_ids == ids


async def test_stop_cancels_a_send_after_the_grace_and_keeps_its_messages(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    ids = enqueue(store, UPSTREAM, [b"m"] * 3)
    endpoint.hold = True
    pump = make_pump()
    await settle()
    stopping = asyncio.create_task(pump.stop(grace=5))
    await clock.advance(5)
    assert stopping.done()
    await stopping
    assert endpoint.held[0].future.cancelled()
    assert queued_ids(store, UPSTREAM) == ids


async def test_stop_during_a_backoff_returns_at_once(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    enqueue(store, UPSTREAM, [b"m"])
    endpoint.available = False
    pump = make_pump()
    await clock.advance(1.5)
    await pump.stop()
    assert pump.state is PumpState.STOPPED
    assert clock.sleepers == 0
    await pump.stop()  # idempotent


async def test_store_failure_on_checkpoint_resends_later(
    make_pump: PumpFactory, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    class FlakyStore(MemoryStore):
        failures = 1

        def checkpoint(self, queue: QueueKey, upto: int) -> None:
            if self.failures:
                self.failures -= 1
                raise StoreError("disk full")
            super().checkpoint(queue, upto)

    store = FlakyStore()
    ids = enqueue(store, UPSTREAM, [b"m"] * 2)
    make_pump(store=store)
    await clock.advance(1)
    assert endpoint.delivered_ids == ids + ids  # at-least-once: sent again after the failed checkpoint
    assert queued_ids(store, UPSTREAM) == []


# -- settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("batch_size", 0), ("max_in_flight_batches", 0), ("starvation_limit", 0)],
)
def test_invalid_settings_are_refused(
    option: str, value: int, store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ValueError, match=option.split("_")[0]):
        EndpointPump(store, endpoint, clock, **options)


async def test_pump_cannot_start_twice(make_pump: PumpFactory) -> None:
    pump = make_pump()
    with pytest.raises(RuntimeError, match="already started"):
        pump.start()


async def test_stop_before_start_is_harmless(
    store: MemoryStore, endpoint: FakeEndpoint, clock: FakeClock
) -> None:
    pump = EndpointPump(store, endpoint, clock)
    await pump.stop()
    assert pump.state is PumpState.STOPPED
    assert endpoint.listeners == 0


# -- any mix of outcomes -------------------------------------------------------

Outcome = tuple[int, str, int]  # (which open send, what happens, how many confirmed)


async def drive(
    count: int, batch_size: int, window: int, outcomes: list[Outcome], order: DrainOrder = DrainOrder.FIFO,
) -> None:
    clock = FakeClock()
    store = MemoryStore()
    endpoint = FakeEndpoint(clock, UPSTREAM, max_batch_size=batch_size)
    endpoint.hold = True
    ids = enqueue(store, UPSTREAM, [b"m"] * count)
    pump = EndpointPump(
        store, endpoint, clock, max_in_flight_batches=window, backoff=Backoff(random=lambda: 0.0),
        drain_order=order,
    )
    pump.start()
    await settle()
    settled: set[int] = set()  # confirmed or rejected: the only ids the pump may checkpoint
    settled_at: dict[int, int] = {}  # id -> how many sends had started when it was settled
    drain: list[Outcome] = [(0, "all", 0)] * (4 * count + 20)
    for pick, kind, confirmed in outcomes + drain:
        open_sends = [held for held in endpoint.held if not held.future.done()]
        if not open_sends:
            if not queued_ids(store, UPSTREAM):
                break
            await clock.advance(60)
            continue
        held = open_sends[pick % len(open_sends)]
        sent = [queued.id for queued in held.messages]
        confirmed = len(sent) if kind == "all" else confirmed % len(sent)
        if kind == "fail":
            held.fail()
        else:
            held.complete(confirmed, rejected=kind == "reject")
            for message_id in sent[: confirmed + (kind == "reject")]:
                settled_at.setdefault(message_id, len(endpoint.calls))
                settled.add(message_id)
        await settle()
        assert set(ids) - settled <= set(queued_ids(store, UPSTREAM))
    await pump.stop(grace=0)
    assert queued_ids(store, UPSTREAM) == []
    assert settled == set(ids)
    assert all(call.ids == sorted(call.ids) for call in endpoint.calls)
    first_sends = list(dict.fromkeys(i for call in endpoint.calls for i in call.ids))
    if order is DrainOrder.FIFO:
        assert first_sends == ids  # every message first went out in id order
    else:
        assert first_sends[: min(batch_size, count)] == ids[-batch_size:]  # the newest went out first
        for index, call in enumerate(endpoint.calls):  # a confirmed message is never sent again
            assert not [i for i in call.ids if settled_at.get(i, index + 1) <= index]


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 12),
    batch_size=st.integers(1, 4),
    window=st.integers(1, 3),
    outcomes=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["all", "part", "reject", "fail"]), st.integers(0, 4)),
        max_size=40,
    ),
)
def test_any_mix_of_outcomes_keeps_order_and_checkpoints_only_what_was_settled(
    count: int, batch_size: int, window: int, outcomes: list[Outcome]
) -> None:
    asyncio.run(drive(count, batch_size, window, outcomes))


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 12),
    batch_size=st.integers(1, 4),
    window=st.integers(1, 3),
    outcomes=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["all", "part", "reject", "fail"]), st.integers(0, 4)),
        max_size=40,
    ),
)
def test_any_mix_of_outcomes_newest_first_delivers_everything_and_never_resends_a_confirmed_message(
    count: int, batch_size: int, window: int, outcomes: list[Outcome]
) -> None:
    asyncio.run(drive(count, batch_size, window, outcomes, DrainOrder.NEWEST_FIRST))
