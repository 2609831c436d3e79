"""The broker table (edgehub.store.broker_table) on every backend: atomic change sets, reads after
reopen, stores written before it existed, and acknowledged writes surviving kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from rocksdict import Options, Rdict

from edgehub.broker.core import Broker
from edgehub.broker.message import BrokerMessage, SubscriptionOptions
from edgehub.heads.mqtt.broker_store import DurableBrokerStore
from edgehub.store.broker_table import parse_queue_key, queue_key
from edgehub.store.kv import BROKER, TABLE_NAMES
from edgehub.store.memory import MemoryStore
from edgehub.store.message_store import MessageStore
from edgehub.store.open import open_store
from edgehub.store.sqlite import DATABASE_FILE

BackendName = Literal["rocksdb", "sqlite"]
BACKENDS = ["rocksdb", "sqlite"]


def _fill(store: MessageStore) -> None:
    table = store.broker_table()
    table.write(retained_put=[("a/b", b"R1"), ("a/c", b"R2")], session_put=[("c1", b"S1")],
                queue_put=[("c1", 2, b"Q2"), ("c1", 1, b"Q1"), ("c/2", 1, b"Q3")])
    table.write(retained_delete=["a/c"], queue_delete=[("c1", 2)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_broker_records_are_read_back_after_reopen(tmp_path: Path, backend: BackendName) -> None:
    store = open_store(tmp_path / "s", backend=backend)
    _fill(store)
    store.close()
    store = open_store(tmp_path / "s", backend=backend)
    try:
        table = store.broker_table()
        assert table.retained() == [("a/b", b"R1")]
        assert table.sessions() == [("c1", b"S1")]
        assert table.queued() == [("c1", 1, b"Q1"), ("c/2", 1, b"Q3")]
    finally:
        store.close()


def test_memory_backend_keeps_the_same_records() -> None:
    store = MemoryStore()
    _fill(store)
    table = store.broker_table()
    assert table.retained() == [("a/b", b"R1")]
    assert table.queued() == [("c1", 1, b"Q1"), ("c/2", 1, b"Q3")]


def test_a_key_both_deleted_and_put_in_one_change_set_is_put() -> None:
    store = MemoryStore()
    table = store.broker_table()
    table.write(queue_put=[("c", 1, b"old")])
    table.write(queue_put=[("c", 1, b"new")], queue_delete=[("c", 1)])
    assert table.queued() == [("c", 1, b"new")]


def test_queue_keys_keep_one_session_in_delivery_order() -> None:
    keys = sorted(queue_key("c", seq) for seq in (300, 2, 1 << 40))
    assert [parse_queue_key(k) for k in keys] == [("c", 2), ("c", 300), ("c", 1 << 40)]
    assert queue_key("ab", 1) > queue_key("b", 99)  # the length prefix keeps clients apart


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_without_broker_table_opens_and_gets_it(tmp_path: Path, backend: BackendName) -> None:
    folder = tmp_path / "s"
    open_store(folder, backend=backend).close()
    name = TABLE_NAMES[BROKER]
    if backend == "sqlite":
        with sqlite3.connect(folder / DATABASE_FILE) as connection:
            connection.execute(f"DROP TABLE {name}")
    else:
        families = {family: Options(raw_mode=True) for family in TABLE_NAMES}
        db = Rdict(str(folder), Options(raw_mode=True), column_families=families)
        db.drop_column_family(name)
        db.close()
    read_only = open_store(folder, backend=backend, read_only=True)
    try:
        assert read_only.broker_table().retained() == []
    finally:
        read_only.close()
    store = open_store(folder, backend=backend)
    try:
        store.broker_table().write(retained_put=[("t", b"v")])
        assert store.broker_table().retained() == [("t", b"v")]
    finally:
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_broker_state_comes_back_through_the_durable_store(tmp_path: Path, backend: BackendName) -> None:
    store = open_store(tmp_path / "s", backend=backend)
    broker = Broker(store=DurableBrokerStore(store.broker_table()))
    broker.publish(BrokerMessage("t/r", b"keep", 1, True, "p", None, 1, "text/plain", "reply/to", b"\x00\x01",
                                 (("k", "v"), ("k", "w"))), 0)
    store.close()
    store = open_store(tmp_path / "s", backend=backend)
    try:
        again = Broker(store=DurableBrokerStore(store.broker_table()))
        again.restore(0)
        [message] = again.retained_matching("#", 0)
        assert message == BrokerMessage("t/r", b"keep", 1, True, "p", None, 1, "text/plain", "reply/to",
                                        b"\x00\x01", (("k", "v"), ("k", "w")))
    finally:
        store.close()


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from edgehub.broker.core import Broker
    from edgehub.broker.message import BrokerMessage, SubscriptionOptions
    from edgehub.heads.mqtt.broker_store import DurableBrokerStore
    from edgehub.store.open import open_store

    class Link:
        def send_now(self, message, retain, ids): pass
        def wake(self): pass

    store = open_store(Path(sys.argv[1]), backend=sys.argv[2])
    broker = Broker(max_queued=10**9, store=DurableBrokerStore(store.broker_table()))
    link = Link()
    session, _ = broker.connect("offline", resume=False, expiry_interval=3600, link=link, now=0)
    broker.subscribe(session, "t/#", SubscriptionOptions(qos=1), 0)
    broker.disconnect(session, link, 0)
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        broker.publish(BrokerMessage("t/" + str(n), str(n).encode(), 1, n % 10 == 0, "p"), 0)
        print(n, flush=True)  # acknowledged: the write returned
""")


@pytest.mark.parametrize("backend", BACKENDS)
def test_queued_and_retained_messages_survive_kill_9(tmp_path: Path, backend: BackendName) -> None:
    folder = tmp_path / "s"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), backend], stdout=subprocess.PIPE,
                              text=True)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    acknowledged = 0
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= 300:
            break
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    writer.stdout.close()
    store = open_store(folder, backend=backend)
    try:
        broker = Broker(max_queued=10**9, store=DurableBrokerStore(store.broker_table()))
        assert broker.restore(0) == 1
        session = broker.session("offline")
        assert session is not None
        assert session.subscriptions == {"t/#": SubscriptionOptions(qos=1)}
        payloads = [int(entry.message.payload) for entry in session.queue.values()]
        assert payloads[:acknowledged] == list(range(1, acknowledged + 1))  # every acknowledged one, in order
        assert broker.retained_count >= acknowledged // 10
    finally:
        store.close()
