"""Tests of edgehub.broker.core: fan-out, retained messages, subscription options, shared groups,
queues of persistent sessions, wills and restore, with a fake link and a real (memory) store."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from edgehub.broker.core import NEVER_EXPIRES, Broker
from edgehub.broker.message import BrokerMessage, SubscriptionOptions
from edgehub.broker.session import BrokerSession
from edgehub.heads.mqtt.broker_store import DurableBrokerStore
from edgehub.store.memory import MemoryKeyValue, MemoryStore


@dataclass
class Link:
    """A connection that records what it was given."""

    now: list[tuple[str, bytes, bool, tuple[int, ...]]] = field(default_factory=list)
    wakes: int = 0

    def send_now(self, message: BrokerMessage, retain: bool, subscription_ids: tuple[int, ...]) -> None:
        self.now.append((message.topic, message.payload, retain, subscription_ids))

    def wake(self) -> None:
        self.wakes += 1


def connect(broker: Broker, client_id: str, *, expiry: int = 0, resume: bool = False,
            now: float = 0.0) -> tuple[BrokerSession, Link]:
    link = Link()
    session, _ = broker.connect(client_id, resume=resume, expiry_interval=expiry, link=link, now=now)
    return session, link


def msg(topic: str, payload: bytes = b"x", qos: int = 0, *, retain: bool = False, origin: str = "pub",
        expires_at: float | None = None) -> BrokerMessage:
    return BrokerMessage(topic, payload, qos, retain, origin, expires_at)


def queued(session: BrokerSession) -> list[tuple[str, bytes, int]]:
    return [(e.message.topic, e.message.payload, e.qos) for e in session.queue.values()]


def test_overlapping_subscriptions_deliver_once_at_the_highest_qos() -> None:
    broker = Broker()
    session, link = connect(broker, "c")
    broker.subscribe(session, "a/+", SubscriptionOptions(qos=0, subscription_id=1), 0)
    broker.subscribe(session, "a/#", SubscriptionOptions(qos=1, subscription_id=2), 0)
    assert broker.publish(msg("a/b", qos=2), 0) == 1
    assert link.now == []
    [entry] = session.queue.values()
    assert entry.qos == 1
    assert sorted(entry.subscription_ids) == [1, 2]


def test_delivered_qos_is_the_lower_of_publish_and_grant() -> None:
    broker = Broker()
    session, link = connect(broker, "c")
    broker.subscribe(session, "a", SubscriptionOptions(qos=2), 0)
    broker.publish(msg("a", qos=0), 0)
    assert link.now == [("a", b"x", False, ())]
    assert session.queue == {}


def test_retained_message_is_set_replaced_and_cleared() -> None:
    broker = Broker()
    broker.publish(msg("t", b"one", retain=True), 0)
    broker.publish(msg("t", b"two", retain=True), 0)
    session, link = connect(broker, "c")
    broker.subscribe(session, "#", SubscriptionOptions(), 0)
    assert link.now == [("t", b"two", True, ())]  # [MQTT-3.3.1-6]: RETAIN 1 on subscribe
    broker.publish(msg("t", b"", retain=True), 0)  # [MQTT-3.3.1-10]: empty payload clears
    assert broker.retained_count == 0
    assert link.now[-1] == ("t", b"", False, ())  # forwarded live with RETAIN 0 [MQTT-3.3.1-12]


def test_retain_handling_and_retain_as_published() -> None:
    broker = Broker()
    broker.publish(msg("t", b"kept", retain=True), 0)
    session, link = connect(broker, "c")
    broker.subscribe(session, "t", SubscriptionOptions(retain_handling=2), 0)
    assert link.now == []
    broker.subscribe(session, "t", SubscriptionOptions(retain_handling=1), 0)
    assert link.now == []  # 1: only for a new subscription
    broker.subscribe(session, "u", SubscriptionOptions(retain_handling=1, retain_as_published=True), 0)
    broker.publish(msg("u", b"live", retain=True), 0)
    assert link.now == [("u", b"live", True, ())]


def test_no_local_skips_the_publishers_own_subscription() -> None:
    broker = Broker()
    session, link = connect(broker, "me")
    broker.subscribe(session, "chat", SubscriptionOptions(no_local=True), 0)
    broker.publish(msg("chat", origin="me"), 0)
    broker.publish(msg("chat", b"other", origin="you"), 0)
    assert link.now == [("chat", b"other", False, ())]


def test_shared_group_gives_each_message_to_one_member_in_turn() -> None:
    broker = Broker()
    links = {}
    for name in ("w1", "w2"):
        session, links[name] = connect(broker, name)
        broker.subscribe(session, "$share/g/jobs/+", SubscriptionOptions(), 0)
    plain, watcher = connect(broker, "watch")
    broker.subscribe(plain, "jobs/#", SubscriptionOptions(), 0)
    for i in range(4):
        broker.publish(msg("jobs/a", str(i).encode()), 0)
    assert len(links["w1"].now) == 2
    assert len(links["w2"].now) == 2
    assert len(watcher.now) == 4


def test_shared_group_prefers_online_members() -> None:
    broker = Broker()
    offline, _ = connect(broker, "w1", expiry=60)
    broker.subscribe(offline, "$share/g/jobs", SubscriptionOptions(qos=1), 0)
    broker.disconnect(offline, offline.link, 0)  # type: ignore[arg-type]
    online, _link = connect(broker, "w2")
    broker.subscribe(online, "$share/g/jobs", SubscriptionOptions(qos=1), 0)
    for _ in range(3):
        broker.publish(msg("jobs", qos=1), 0)
    assert len(online.queue) == 3
    parked = broker.session("w1")
    assert parked is not None
    assert not parked.queue


def test_full_queue_drops_the_oldest_waiting_message() -> None:
    broker = Broker(max_queued=3)
    session, link = connect(broker, "c", expiry=60)
    broker.subscribe(session, "t", SubscriptionOptions(qos=1), 0)
    broker.disconnect(session, link, 0)
    for i in range(5):
        broker.publish(msg("t", str(i).encode(), qos=1), 0)
    assert [p for _, p, _ in queued(session)] == [b"2", b"3", b"4"]
    assert broker.dropped == 2


def test_clean_session_ends_with_its_connection() -> None:
    broker = Broker()
    session, link = connect(broker, "c")
    broker.subscribe(session, "t", SubscriptionOptions(qos=1), 0)
    broker.disconnect(session, link, 0)
    assert broker.session("c") is None
    assert broker.publish(msg("t", qos=1), 0) == 0


def test_will_is_published_after_its_delay_unless_the_client_returns() -> None:
    broker = Broker()
    watcher, seen = connect(broker, "w")
    broker.subscribe(watcher, "status/#", SubscriptionOptions(), 0)
    session, link = connect(broker, "c", expiry=100)
    broker.disconnect(session, link, 10, will=msg("status/c", b"gone", origin="c"), will_delay=5)
    broker.expire(14)
    assert seen.now == []
    broker.expire(15)
    assert seen.now == [("status/c", b"gone", False, ())]
    # a second time: the client comes back within the delay, the will is cancelled
    session, link = connect(broker, "c", expiry=100, resume=True, now=20)
    broker.disconnect(session, link, 20, will=msg("status/c", b"again", origin="c"), will_delay=5)
    connect(broker, "c", expiry=100, resume=True, now=22)
    broker.expire(30)
    assert len(seen.now) == 1


def test_will_delay_is_cut_short_by_session_expiry() -> None:
    broker = Broker()
    watcher, seen = connect(broker, "w")
    broker.subscribe(watcher, "s", SubscriptionOptions(), 0)
    session, link = connect(broker, "c", expiry=2)
    broker.disconnect(session, link, 0, will=msg("s", b"will", origin="c"), will_delay=60)
    broker.expire(2)
    assert seen.now == [("s", b"will", False, ())]
    assert broker.session("c") is None


def test_expired_messages_are_never_delivered() -> None:
    broker = Broker()
    session, link = connect(broker, "c", expiry=60)
    broker.subscribe(session, "t", SubscriptionOptions(qos=1), 0)
    broker.disconnect(session, link, 0)
    broker.publish(msg("t", qos=1, expires_at=5), 0)
    broker.expire(6)
    assert session.queue == {}


def test_persistent_session_and_its_queue_come_back_from_the_store() -> None:
    kv = MemoryKeyValue()
    broker = Broker(store=DurableBrokerStore(MemoryStore(kv=kv).broker_table()))
    session, link = connect(broker, "c", expiry=3600)
    broker.subscribe(session, "t/#", SubscriptionOptions(qos=2, subscription_id=7), 0)
    broker.publish(msg("t/r", b"retained", retain=True, qos=1), 0)
    broker.disconnect(session, link, 0)
    broker.publish(msg("t/1", b"a", qos=1), 0)
    broker.publish(msg("t/2", b"b", qos=2), 0)
    broker.qos2_received(session, 42, pending=True)

    again = Broker(store=DurableBrokerStore(MemoryStore(kv=kv).broker_table()))
    assert again.restore(now=100) == 1
    assert again.retained_count == 1
    restored = again.session("c")
    assert restored is not None
    assert restored.subscriptions == {"t/#": SubscriptionOptions(qos=2, subscription_id=7)}
    assert restored.inbound_qos2 == {42}
    assert [(t, p, q) for t, p, q in queued(restored)] == [("t/r", b"retained", 1), ("t/1", b"a", 1),
                                                             ("t/2", b"b", 2)]
    # the subscription is live again: new messages queue for it
    again.publish(msg("t/3", b"c", qos=1), 100)
    assert len(restored.queue) == 4


def test_session_connected_at_a_crash_gets_its_full_expiry_from_restart() -> None:
    kv = MemoryKeyValue()
    broker = Broker(store=DurableBrokerStore(MemoryStore(kv=kv).broker_table()))
    connect(broker, "c", expiry=50)  # never disconnected: the process died
    again = Broker(store=DurableBrokerStore(MemoryStore(kv=kv).broker_table()))
    again.restore(now=1000)
    again.expire(1049)
    assert again.session("c") is not None
    again.expire(1050)
    assert again.session("c") is None
    assert Broker(store=DurableBrokerStore(MemoryStore(kv=kv).broker_table())).restore(now=0) == 0


def test_session_that_never_expires_is_kept() -> None:
    broker = Broker()
    session, link = connect(broker, "c", expiry=NEVER_EXPIRES)
    broker.disconnect(session, link, 0)
    broker.expire(10**9)
    assert broker.session("c") is session


def test_clean_start_discards_the_stored_session() -> None:
    kv = MemoryKeyValue()
    broker = Broker(store=DurableBrokerStore(MemoryStore(kv=kv).broker_table()))
    session, link = connect(broker, "c", expiry=60)
    broker.subscribe(session, "t", SubscriptionOptions(qos=1), 0)
    broker.disconnect(session, link, 0)
    broker.publish(msg("t", qos=1), 0)
    fresh, _ = connect(broker, "c", expiry=60, resume=False)
    assert fresh.subscriptions == {}
    assert fresh.queue == {}
    again = Broker(store=DurableBrokerStore(MemoryStore(kv=kv).broker_table()))
    again.restore(0)
    restored = again.session("c")
    assert restored is not None
    assert restored.queue == {}
    assert restored.subscriptions == {}


def test_max_queued_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_queued"):
        Broker(max_queued=0)
