"""Backlog drain order (``storeAndForwardConfiguration.drainOrder``) with every part real: an
``edgehub run`` subprocess whose mosquitto upstream is down while a backlog builds, paho devices and
a persistent observer on the upstream.

fifo: the backlog goes first, in ingest order. newestFirst (edgeHub #2486): the newest messages go
first, so live data published just before the upstream returned arrives ahead of the oldest backlog.
Either way every acked message arrives at least once, also across a kill -9 of the hub in the middle
of the drain; duplicates are counted and reported, never failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DeviceFactory, Report
from tests.e2e.parts import Arrival, Broker, Observer, Tally, key, upstream_env, wait_until
from tests.hubproc import HubProcess, write_config

pytestmark = pytest.mark.slow

EDGE_KEY = key("edge")
TO_UPSTREAM = {"upstream": "FROM /messages/* INTO $upstream"}
BACKLOG = 3000
LIVE = 20
ACK_TIMEOUT = 30.0
DRAIN_TIMEOUT = 60.0

ORDERS = {
    "fifo": {},  # the default
    "newestFirst": {"drainOrder": "newestFirst"},
    "newestFirst-upstream-only": {"drainOrderByEndpoint": {"$upstream": "newestFirst"}},
}


def drain_config(path: Path, order: str) -> Path:
    config = write_config(path, TO_UPSTREAM, [{"deviceId": d, "primaryKey": key(d)} for d in ("old", "live")])
    document: dict[str, Any] = json.loads(config.read_text())
    document["storeAndForwardConfiguration"].update(ORDERS[order])
    config.write_text(json.dumps(document, indent=2))
    return config


def position(arrivals: list[Arrival], sender: str, seq: int) -> int:
    return next(i for i, a in enumerate(arrivals) if (a.sender, a.seq) == (sender, seq))


def check_all_arrived(observer: Observer, expected: dict[str, range], report: Report) -> list[Arrival]:
    """Every expected message arrived at least once (bounded wait); duplicates reported."""
    observer.wait_for(((s, n) for s, seqs in expected.items() for n in seqs), DRAIN_TIMEOUT)
    arrivals = observer.snapshot()
    tally = Tally.of(arrivals)
    assert tally.missing(expected) == {}
    report("arrived", len(arrivals))
    report("duplicates", tally.duplicates)
    return arrivals


@pytest.mark.parametrize("order", list(ORDERS))
def test_live_messages_overtake_a_backlog_only_when_draining_newest_first(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory, report: Report, order: str,
) -> None:
    config = drain_config(tmp_path / "config.json", order)
    env = upstream_env(broker.port, EDGE_KEY)
    broker.stop()
    with HubProcess(tmp_path / "hub", config, env) as hub:
        port = int(env["mqttSettings__plainPort"])
        old, live = device("old", port), device("live", port)
        old.publish(range(BACKLOG))  # the backlog of an outage
        old.wait_acked(ACK_TIMEOUT)
        live.publish(range(LIVE))  # live data, the newest when the upstream returns
        live.wait_acked(ACK_TIMEOUT)
        broker.start()
        hub.wait_for_line(f"upstream connected to mqtt://127.0.0.1:{broker.port} again", 30)
        live.publish(range(LIVE, 2 * LIVE))  # and more while the backlog drains
        arrivals = check_all_arrived(observer, {"old": range(BACKLOG), "live": range(2 * LIVE)}, report)
    oldest, newest_live = position(arrivals, "old", 0), position(arrivals, "live", LIVE - 1)
    report("first_live_at", position(arrivals, "live", 0))
    report("oldest_backlog_at", oldest)
    if order == "fifo":
        assert oldest == 0, "oldest first: the backlog's first message goes first"
        assert Tally.of(arrivals).out_of_order() == {}
        assert position(arrivals, "live", 0) > position(arrivals, "old", BACKLOG - 1)
    else:
        assert newest_live < oldest, "newest first: live data arrives before the oldest backlog"
        assert position(arrivals, "live", 0) < 200  # in the first batches (MaxUpstreamBatchSize 100)


@pytest.mark.parametrize("order", ["fifo", "newestFirst"])
def test_a_kill_9_in_the_middle_of_the_drain_loses_nothing_acked(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory, report: Report, order: str,
) -> None:
    config = drain_config(tmp_path / "config.json", order)
    env = upstream_env(broker.port, EDGE_KEY) | {"MaxUpstreamBatchSize": "10", "UpstreamFanOutFactor": "1"}
    broker.stop()
    hub = HubProcess(tmp_path / "hub", config, env).start()
    try:
        port = int(env["mqttSettings__plainPort"])
        old = device("old", port)
        old.publish(range(BACKLOG))
        old.wait_acked(ACK_TIMEOUT)
        broker.start()
        # Kill once part of the backlog went up (batches of 10, one in flight: the drain takes a while).
        wait_until(lambda: len(observer.distinct()) >= 300, 30, "part of the backlog upstream")
        assert hub.process is not None
        hub.process.kill()
    finally:
        hub.stop()
    delivered_before_kill = len(observer.distinct())
    report("delivered_before_kill", delivered_before_kill)
    assert delivered_before_kill < BACKLOG, "the drain ended before the kill"
    old.close()
    with HubProcess(tmp_path / "hub", config, env):
        live = device("live", int(env["mqttSettings__plainPort"]))
        live.publish(range(LIVE))
        live.wait_acked(ACK_TIMEOUT)
        check_all_arrived(observer, {"old": range(BACKLOG), "live": range(LIVE)}, report)
