"""Tests of edgehub.heads.mqtt.session_store: persistent sessions kept in a MessageStore, with
wall-time deadlines, restored by a new SessionTable as after a restart (sans-I/O, no sockets)."""

from __future__ import annotations

import json
import logging
import math

import pytest

from edgehub.errors import StoreError
from edgehub.heads.mqtt.events import DeliveryChanged, FeedChanged
from edgehub.heads.mqtt.session_store import DurableSessionStore, decode_record, encode_record
from edgehub.heads.mqtt.sessions import NEVER_EXPIRES, SessionState, SessionTable
from edgehub.iothub.twin_topics import Feed
from edgehub.message import Identity
from edgehub.mqtt.packets import MQTT_5, MQTT_311, ConnAck, Properties, Subscribe, Subscription
from edgehub.store.memory import MemoryKeyValue, MemoryStore
from tests.heads.mqtt.test_session import INPUTS, MODULE, Peer

START = 1_700_000_000.0
TWIN_RESPONSES = "$iothub/twin/res/#"
DESIRED = "$iothub/twin/PATCH/properties/desired/#"
METHODS = "$iothub/methods/POST/#"


class WallClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Host:
    """One hub process: a store over ``kv`` and a session table restored from it at ``monotonic``."""

    def __init__(self, kv: MemoryKeyValue, wall: WallClock, monotonic: float = 0.0) -> None:
        self.store = MemoryStore(kv=kv)
        self.table = SessionTable(store=DurableSessionStore(self.store, wall))
        self.restored = self.table.restore(monotonic)

    def peer(self, version: int = MQTT_311, now: float = 0.0) -> Peer:
        return Peer(version, table=self.table, now=now)


def record(store: MemoryStore, client_id: str = MODULE.id) -> dict[str, object]:
    data = store.get_session(client_id)
    assert data is not None
    loaded: dict[str, object] = json.loads(data)
    return loaded


def test_subscriptions_and_twin_feeds_survive_a_restart_while_connected() -> None:
    """kill -9 with the client connected: the record has no deadline, the full interval runs
    from the next start, and the client resumes with everything it had subscribed."""
    kv, wall = MemoryKeyValue(), WallClock()
    first = Host(kv, wall)
    peer = first.peer()
    peer.connect(clean=False)
    peer.send(Subscribe(1, tuple(Subscription(f, 1) for f in (INPUTS, TWIN_RESPONSES, DESIRED, METHODS))))
    assert record(first.store)["expiresAt"] is None
    wall.now += 3 * 24 * 3600  # down for longer than the 3.1.1 session expiry: it was connected

    second = Host(kv, wall, monotonic=7.0)  # the process (and its monotonic clock) starts over
    assert second.restored == 1
    again = second.peer(now=8.0)
    assert again.connect(clean=False) == [ConnAck(True, 0)]
    assert DeliveryChanged(True) in again.events
    assert {e.feed for e in again.events if isinstance(e, FeedChanged) and e.active} == {
        Feed.TWIN_RESPONSES, Feed.DESIRED_PATCHES, Feed.METHOD_REQUESTS,
    }


def test_a_parked_session_keeps_its_wall_clock_deadline_across_a_restart() -> None:
    kv, wall = MemoryKeyValue(), WallClock()
    first = Host(kv, wall)
    peer = first.peer(MQTT_5)
    peer.connect(clean=False, properties=Properties(session_expiry_interval=100))
    peer.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    peer.session.connection_lost(50.0)  # monotonic time of the first process
    assert record(first.store)["expiresAt"] == START + 100
    wall.now += 60

    second = Host(kv, wall, monotonic=0.0)
    assert second.restored == 1
    assert second.table.expire(39.0) == 0
    assert second.table.expire(40.0) == 1  # 100 s after the disconnect, not after the start
    assert second.store.session_keys() == []


def test_a_session_that_expired_while_the_hub_was_down_is_deleted_at_start() -> None:
    kv, wall = MemoryKeyValue(), WallClock()
    first = Host(kv, wall)
    peer = first.peer(MQTT_5)
    peer.connect(clean=False, properties=Properties(session_expiry_interval=10))
    peer.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    peer.session.connection_lost(1.0)
    wall.now += 10

    second = Host(kv, wall)
    assert second.restored == 0
    assert second.store.session_keys() == []
    again = second.peer(MQTT_5)
    [connack] = again.connect(clean=False, properties=Properties(session_expiry_interval=10))
    assert isinstance(connack, ConnAck)
    assert not connack.session_present


def test_a_session_that_never_expires_is_kept_without_a_deadline() -> None:
    store, wall = MemoryStore(), WallClock()
    sessions = DurableSessionStore(store, wall)
    sessions.save(SessionState(MODULE.id, MODULE, {INPUTS: 1}, NEVER_EXPIRES), parked=True)
    assert record(store)["expiresAt"] is None
    wall.now += 10 * 365 * 24 * 3600
    [loaded] = sessions.load_all()
    assert loaded.remaining == math.inf


def test_a_clock_set_back_never_lengthens_a_session() -> None:
    kv, wall = MemoryKeyValue(), WallClock()
    store = MemoryStore(kv=kv)
    DurableSessionStore(store, wall).save(SessionState(MODULE.id, MODULE, {}, 100), parked=True)
    wall.now -= 3600
    [loaded] = DurableSessionStore(store, wall).load_all()
    assert loaded.remaining == 100


def test_clean_start_deletes_the_kept_record() -> None:
    kv, wall = MemoryKeyValue(), WallClock()
    first = Host(kv, wall)
    peer = first.peer()
    peer.connect(clean=False)
    peer.session.connection_lost(1.0)
    second = Host(kv, wall)
    second.peer().connect(clean=True)
    assert second.store.session_keys() == []


def test_record_round_trips() -> None:
    state = SessionState("edge/$edgeHub", Identity("edge", "$edgeHub"), {"devices/a/#": 0, DESIRED: 1}, 42)
    decoded, expires_at = decode_record(state.client_id, encode_record(state, START + 42))
    assert (decoded.client_id, decoded.identity, decoded.subscriptions, decoded.expiry_interval) == (
        state.client_id, state.identity, state.subscriptions, 42,
    )
    assert expires_at == START + 42


@pytest.mark.parametrize("data", [
    b"not json",
    b'{"v": 2, "identity": "d", "subscriptions": {}, "expiryInterval": 1, "expiresAt": null}',
    b'{"v": 1, "identity": "", "subscriptions": {}, "expiryInterval": 1, "expiresAt": null}',
    b'{"v": 1, "identity": "d", "subscriptions": {"t": 2}, "expiryInterval": 1, "expiresAt": null}',
    b'{"v": 1, "identity": "d", "subscriptions": {}, "expiryInterval": 0, "expiresAt": null}',
    b'{"v": 1, "identity": "d", "subscriptions": {}, "expiryInterval": 1, "expiresAt": "soon"}',
    b'{"v": 1, "identity": "d", "subscriptions": {}}',
])
def test_an_unreadable_record_is_refused(data: bytes) -> None:
    with pytest.raises(StoreError, match="unreadable"):
        decode_record("d", data)


def test_an_unreadable_record_is_skipped_with_a_warning_and_the_rest_restored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kv, wall = MemoryKeyValue(), WallClock()
    store = MemoryStore(kv=kv)
    store.put_session("broken", b"{")
    DurableSessionStore(store, wall).save(SessionState(MODULE.id, MODULE, {INPUTS: 1}, 60), parked=False)
    with caplog.at_level(logging.WARNING):
        restored = Host(kv, wall).restored
    assert restored == 1
    assert "'broken' is unreadable" in caplog.text


def test_a_failed_write_is_logged_and_the_connection_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    kv, wall = MemoryKeyValue(), WallClock()
    host = Host(kv, wall)
    host.store.close()
    peer = host.peer()
    with caplog.at_level(logging.WARNING):
        [connack] = peer.connect(clean=False)
        peer.send(Subscribe(1, (Subscription(INPUTS, 1),)))
        peer.session.connection_lost(1.0)
    assert connack == ConnAck(False, 0)
    assert "not kept in the store" in caplog.text
    assert host.table.get(MODULE.id) is not None  # parked in memory all the same
