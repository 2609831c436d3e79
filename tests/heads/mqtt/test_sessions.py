"""Tests of edgehub.heads.mqtt.sessions: the session table and what it writes through its
SessionStore port (a recording fake here; the durable store is in test_sessions_store.py)."""

from __future__ import annotations

import math

from edgehub.heads.mqtt.events import DeliveryChanged
from edgehub.heads.mqtt.session import MqttSession
from edgehub.heads.mqtt.sessions import NEVER_EXPIRES, SessionState, SessionTable, StoredSession
from edgehub.message import Identity
from edgehub.mqtt.packets import MQTT_5, MQTT_311, ConnAck, Disconnect, Properties, Subscribe, Subscription
from edgehub.mqtt.packets import Unsubscribe as UnsubscribePacket
from tests.heads.mqtt.test_session import INPUTS, MODULE, Peer

OTHER_INPUT = "devices/edge/modules/filter/inputs/other/#"


class RecordingStore:
    """A SessionStore that keeps the last saved copy per client id and logs every call."""

    def __init__(self, stored: list[StoredSession] | None = None) -> None:
        self.calls: list[tuple[str, str, bool | None]] = []
        self.saved: dict[str, tuple[dict[str, int], int, bool]] = {}
        self._stored = stored or []

    def save(self, state: SessionState, *, parked: bool) -> None:
        self.calls.append(("save", state.client_id, parked))
        self.saved[state.client_id] = (dict(state.subscriptions), state.expiry_interval, parked)

    def delete(self, client_id: str) -> None:
        self.calls.append(("delete", client_id, None))
        self.saved.pop(client_id, None)

    def load_all(self) -> list[StoredSession]:
        return self._stored


def persistent_peer(table: SessionTable, version: int = MQTT_311, expiry: int = 600) -> Peer:
    peer = Peer(version, table=table)
    props = Properties(session_expiry_interval=expiry) if version == MQTT_5 else None
    peer.connect(clean=False, properties=props)
    return peer


def stored(client_id: str, remaining: float, subscriptions: dict[str, int] | None = None,
           interval: int = 600) -> StoredSession:
    identity = Identity.parse(client_id)
    return StoredSession(SessionState(client_id, identity, subscriptions or {INPUTS: 1}, interval), remaining)


# --- what is written, and when -------------------------------------------------------------


def test_persistent_session_is_saved_at_connect_subscribe_and_when_it_ends() -> None:
    store = RecordingStore()
    table = SessionTable(store=store)
    peer = persistent_peer(table)
    assert store.calls == [("save", MODULE.id, False)]
    peer.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    assert store.saved[MODULE.id] == ({INPUTS: 1}, 24 * 3600, False)
    peer.session.connection_lost(5.0)
    assert store.calls[-1] == ("save", MODULE.id, True)
    assert store.saved[MODULE.id] == ({INPUTS: 1}, 24 * 3600, True)


def test_clean_sessions_write_nothing() -> None:
    store = RecordingStore()
    table = SessionTable(store=store)
    peer = Peer(table=table)
    peer.connect(clean=True)
    peer.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    peer.send(UnsubscribePacket(2, (INPUTS,)))
    peer.session.connection_lost(1.0)
    assert store.calls == []


def test_a_subscribe_that_changes_nothing_writes_nothing() -> None:
    store = RecordingStore()
    peer = persistent_peer(SessionTable(store=store))
    peer.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    before = len(store.calls)
    peer.send(Subscribe(2, (Subscription(INPUTS, 1),)))  # the same grant again
    peer.send(Subscribe(3, (Subscription("devices/edge/modules/other/inputs/#", 1),)))  # refused
    peer.send(UnsubscribePacket(4, ("never/subscribed",)))
    assert len(store.calls) == before


def test_unsubscribe_saves_what_is_left() -> None:
    store = RecordingStore()
    peer = persistent_peer(SessionTable(store=store))
    peer.send(Subscribe(1, (Subscription(INPUTS, 1), Subscription(OTHER_INPUT, 0))))
    peer.send(UnsubscribePacket(2, (INPUTS,)))
    assert store.saved[MODULE.id][0] == {OTHER_INPUT: 0}


def test_clean_start_over_a_kept_session_deletes_it() -> None:
    store = RecordingStore()
    table = SessionTable(store=store)
    first = persistent_peer(table)
    first.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    first.session.connection_lost(1.0)
    again = Peer(table=table)
    assert again.connect(clean=True) == [ConnAck(False, 0)]
    assert store.calls[-1] == ("delete", MODULE.id, None)
    assert MODULE.id not in store.saved


def test_v5_clean_start_with_an_expiry_replaces_the_kept_session() -> None:
    store = RecordingStore()
    table = SessionTable(store=store)
    first = persistent_peer(table, MQTT_5)
    first.send(Subscribe(1, (Subscription(INPUTS, 1),)))
    first.session.connection_lost(1.0)
    again = Peer(MQTT_5, table=table)
    again.connect(clean=True, properties=Properties(session_expiry_interval=60))
    assert store.saved[MODULE.id] == ({}, 60, False)


def test_v5_disconnect_with_expiry_zero_deletes_the_kept_session() -> None:
    store = RecordingStore()
    table = SessionTable(store=store)
    peer = persistent_peer(table, MQTT_5)
    peer.send(Disconnect(0, Properties(session_expiry_interval=0)))
    assert store.calls[-1] == ("delete", MODULE.id, None)
    assert table.get(MODULE.id) is None


def test_v5_disconnect_with_a_new_expiry_saves_it_parked() -> None:
    store = RecordingStore()
    table = SessionTable(store=store)
    peer = persistent_peer(table, MQTT_5, expiry=600)
    peer.send(Disconnect(0, Properties(session_expiry_interval=30)))
    assert store.saved[MODULE.id] == ({}, 30, True)


def test_an_expired_session_is_deleted_from_the_store() -> None:
    store = RecordingStore()
    table = SessionTable(store=store)
    peer = persistent_peer(table, MQTT_5, expiry=60)
    peer.session.connection_lost(100.0)
    assert table.expire(160.0) == 1
    assert store.calls[-1] == ("delete", MODULE.id, None)


def test_a_taken_over_connection_ending_writes_nothing_more() -> None:
    store = RecordingStore()
    table = SessionTable(store=store)
    first = persistent_peer(table)
    second = persistent_peer(table)
    calls = len(store.calls)
    first.session.take_over()
    assert len(store.calls) == calls  # the new owner holds the session; nothing is parked
    assert second.session.state is first.session.state


# --- restore at start ------------------------------------------------------------------------


def test_restore_parks_kept_sessions_with_the_expiry_they_have_left() -> None:
    store = RecordingStore([stored(MODULE.id, 30.0), stored("edge/never", math.inf, interval=NEVER_EXPIRES)])
    table = SessionTable(store=store)
    assert table.restore(1000.0) == 2
    assert table.parked == 2
    assert table.expire(1029.0) == 0
    assert table.expire(1030.0) == 1
    assert table.get(MODULE.id) is None
    assert store.calls[-1] == ("delete", MODULE.id, None)
    assert table.expire(1e12) == 0
    assert table.get("edge/never") is not None


def test_restore_deletes_sessions_that_expired_while_the_hub_was_down() -> None:
    store = RecordingStore([stored(MODULE.id, 0.0), stored("edge/late", -5.0)])
    table = SessionTable(store=store)
    assert table.restore(0.0) == 0
    assert sorted(store.calls) == [("delete", MODULE.id, None), ("delete", "edge/late", None)]
    assert table.get(MODULE.id) is None


def test_restored_session_is_resumed_with_session_present_and_its_subscriptions() -> None:
    store = RecordingStore([stored(MODULE.id, 60.0, {INPUTS: 1})])
    table = SessionTable(store=store)
    table.restore(0.0)
    peer = Peer(table=table, now=5.0)
    [connack] = peer.connect(clean=False)
    assert connack == ConnAck(True, 0)
    assert DeliveryChanged(True) in peer.events
    assert peer.session.accepts("devices/edge/modules/filter/inputs/in1/")
    assert store.calls[-1] == ("save", MODULE.id, False)  # connected again: no deadline runs


def test_restored_session_of_another_identity_is_not_resumed() -> None:
    store = RecordingStore([stored(MODULE.id, 60.0)])
    table = SessionTable(store=store)
    table.restore(0.0)
    session = MqttSession(lambda request: Identity("edge", "intruder"), table, 0.0)
    assert table.open(MODULE.id, Identity("edge", "intruder"), clean_start=False, expiry_interval=60,
                      owner=session, now=1.0) is not None
    state = table.get(MODULE.id)
    assert state is not None
    assert state.subscriptions == {}
