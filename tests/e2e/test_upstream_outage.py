"""Store-and-forward across upstream outages, with every part real: an ``edgehub run`` subprocess,
a mosquitto upstream stopped and started on the same port, paho devices and a persistent observer.

docs/architecture.md §1 invariants 1 (no ack before durability; kill -9 loses nothing acked), 4 (order per
sender), 5 (TTL real while offline) and 7 (drain when the upstream is back). Duplicates are allowed
(at-least-once): they are counted and listed in the run's summary, never failed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.e2e.conftest import DeviceFactory, Report
from tests.e2e.parts import (
    Broker,
    Device,
    Observer,
    Tally,
    key,
    metric,
    next_line,
    sent_upstream,
    upstream_env,
    wait_until,
)
from tests.hubproc import HubProcess, free_port, write_config

pytestmark = pytest.mark.slow

SENDERS = ("d1", "d2", "d3")
EDGE_KEY = key("edge")
TO_UPSTREAM = {"upstream": "FROM /messages/* INTO $upstream"}
ACK_TIMEOUT = 30.0
DRAIN_TIMEOUT = 60.0


def identities(*device_ids: str) -> list[dict[str, str]]:
    return [{"deviceId": d, "primaryKey": key(d)} for d in device_ids]


def plain_port(hub: HubProcess) -> int:
    return int(hub.env["mqttSettings__plainPort"])


def expired(metrics_port: int) -> float:
    return metric(metrics_port, "edgehub_messages_dropped_total", {"reason": "ttl_expiry"})


def publish_all(devices: Sequence[Device], seqs: range) -> None:
    for client in devices:
        client.publish(seqs)


def wait_all_acked(devices: Sequence[Device]) -> None:
    for client in devices:
        client.wait_acked(ACK_TIMEOUT)


def check_arrivals(observer: Observer, expected: Mapping[str, Sequence[int]], report: Report) -> Tally:
    """Every expected message arrived (waits, bounded), first arrivals in order per sender, on the
    sender's own telemetry topic; duplicates are counted and reported, not failed."""
    observer.wait_for(((s, n) for s, seqs in expected.items() for n in seqs), DRAIN_TIMEOUT)
    arrivals = observer.snapshot()
    tally = Tally.of(arrivals)
    report("arrived", len(arrivals))
    report("duplicates", tally.duplicates)
    assert tally.missing(expected) == {}
    assert tally.out_of_order() == {}
    assert all(a.topic.startswith(f"devices/{a.sender}/messages/events/") for a in arrivals)
    return tally


def test_messages_acked_while_the_upstream_broker_is_down_all_arrive_in_order_after_it_restarts(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory, report: Report,
) -> None:
    config = write_config(tmp_path / "config.json", TO_UPSTREAM, identities(*SENDERS))
    with HubProcess(tmp_path / "hub", config, upstream_env(broker.port, EDGE_KEY)) as hub:
        devices = [device(d, plain_port(hub)) for d in SENDERS]
        publish_all(devices, range(300))
        wait_until(lambda: len(observer.distinct()) >= 150, 30, "first messages upstream")
        broker.stop()  # mid-stream: the devices are still publishing, the hub still forwarding
        report("delivered_before_outage", len(observer.distinct()))
        publish_all(devices, range(300, 600))
        wait_all_acked(devices)  # the hub acks while its upstream is down: they are in its store
        broker.start()
        publish_all(devices, range(600, 900))  # publishing on while the hub reconnects
        wait_all_acked(devices)
        check_arrivals(observer, {d: range(900) for d in SENDERS}, report)
        hub.wait_for_line(f"upstream connected to mqtt://127.0.0.1:{broker.port} again")


def test_everything_acked_before_a_kill_9_arrives_after_the_hub_and_the_upstream_restart(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory, report: Report,
) -> None:
    config = write_config(tmp_path / "config.json", TO_UPSTREAM, identities(*SENDERS))
    env = upstream_env(broker.port, EDGE_KEY)
    hub = HubProcess(tmp_path / "hub", config, env).start()
    try:
        devices = [device(d, plain_port(hub)) for d in SENDERS]
        publish_all(devices, range(300))
        wait_until(lambda: len(observer.distinct()) >= 150, 30, "first messages upstream")
        broker.stop()
        publish_all(devices, range(300, 1500))
        # Kill while the devices still have publishes in flight and queued.
        wait_until(lambda: all(len(c.acked()) >= 600 for c in devices), ACK_TIMEOUT, "600 acks each")
        assert hub.process is not None
        hub.process.kill()
    finally:
        hub.stop()
    acked_before_kill = {c.device_id: c.acked() for c in devices}
    assert any(len(seqs) < 1500 for seqs in acked_before_kill.values()), "the kill came after the last ack"
    report("acked_before_kill", sum(len(seqs) for seqs in acked_before_kill.values()))
    for client in devices:
        client.close()

    with HubProcess(tmp_path / "hub", config, env) as restarted:
        devices = [device(d, plain_port(restarted)) for d in SENDERS]
        publish_all(devices, range(1500, 1600))
        wait_all_acked(devices)
        broker.start()
        expected = {d: [*acked_before_kill[d], *range(1500, 1600)] for d in SENDERS}
        tally = check_arrivals(observer, expected, report)
    # Published but never acked (in flight at the kill): may arrive or not, never out of order.
    unacked = sum(len(set(t) - set(expected[s])) for s, t in tally.first_seen.items())
    report("unacked_that_arrived", unacked)


def test_only_messages_within_their_route_ttl_arrive_after_an_outage(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory,
) -> None:
    routes = {
        "short": {"route": "FROM /messages/* WHERE kind = 'short' INTO $upstream", "timeToLiveSecs": 2},
        "long": {"route": "FROM /messages/* WHERE kind = 'long' INTO $upstream", "timeToLiveSecs": 3600},
    }
    config = write_config(tmp_path / "config.json", routes, identities("d1"))
    env = upstream_env(broker.port, EDGE_KEY) | {"Metrics__Listener__Port": str(free_port())}
    metrics_port = int(env["Metrics__Listener__Port"])
    broker.stop()
    with HubProcess(tmp_path / "hub", config, env) as hub:
        sender = device("d1", plain_port(hub))
        # Interleaved in one queue, ending with a long one: a short one delivered would arrive before it.
        for seq in range(201):
            sender.publish([seq], "kind=long" if seq % 2 == 0 else "kind=short")
        sender.wait_acked(ACK_TIMEOUT)
        short = range(1, 201, 2)
        wait_until(lambda: expired(metrics_port) >= len(short), 15, "short-TTL messages expired")
        broker.start()
        observer.wait_for((("d1", n) for n in range(0, 201, 2)), DRAIN_TIMEOUT)
        assert observer.distinct() == {("d1", n) for n in range(0, 201, 2)}
        assert expired(metrics_port) == len(short)


RETRY_LINE = re.compile(r"upstream: connect attempt \d+ failed; next in (\d+\.\d+) s")


def retry_delay(line: str) -> float:
    """The reconnect delay a debug line of the upstream link announces (0 for any other line)."""
    found = RETRY_LINE.search(line)
    return float(found.group(1)) if found else 0.0


def test_delivery_resumes_within_a_second_of_the_upstream_returning_after_a_long_outage(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory,
) -> None:
    config = write_config(tmp_path / "config.json", TO_UPSTREAM, identities("d1"))
    env = upstream_env(broker.port, EDGE_KEY) | {
        "Metrics__Listener__Port": str(free_port()), "RuntimeLogLevel": "debug",
    }
    metrics_port = int(env["Metrics__Listener__Port"])
    broker.stop()
    with HubProcess(tmp_path / "hub", config, env) as hub:
        sender = device("d1", plain_port(hub))
        sender.publish(range(10))
        sender.wait_acked(ACK_TIMEOUT)
        # The upstream returns right after the hub scheduled a retry 2 s or more away, or after a
        # 10 s outage if it never backs off that far.
        next_line(hub, lambda line: retry_delay(line) >= 2.0, 10)
        broker.start()
        took = wait_until(lambda: sent_upstream(metrics_port) >= 10, 90, "delivery after the outage")
        observer.wait_for((("d1", n) for n in range(10)), DRAIN_TIMEOUT)
    assert took < 1.5, f"delivery resumed {took:.1f} s after the upstream came back"
