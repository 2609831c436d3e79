"""The AMQP upstream end to end, every part real: device → child ``edgehub run`` (``UpstreamProtocol`` Amqp or
AmqpWs) → parent ``edgehub run`` (its AMQP head on TLS, or AMQP over WebSocket on its HTTPS port) → mosquitto.

The child authenticates at the parent as ``child/$edgeHub`` with one CBS token and sends each message on a
link of its original sender (the parent lets a child edge hub act for its children). Covered: outages of
the parent (messages wait in the child's store, all arrive in order once it is back), Debian's tinyproxy
in between for AmqpWs, and kill -9 of the child mid-stream with nothing acknowledged lost.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from edgehub.tls import DevCertificates, ensure_dev_certificates
from tests.e2e import conftest as e2e
from tests.e2e.conftest import DeviceFactory, Report
from tests.e2e.parts import Broker, Device, Observer, Tally, key, sent_upstream, upstream_env, wait_until
from tests.e2e.test_proxy import NO_PROXY_ENV, Tinyproxy
from tests.hubproc import HubProcess, free_port, write_config

pytestmark = pytest.mark.slow
broker, observer, device, report = e2e.broker, e2e.observer, e2e.device, e2e.report  # the e2e fixtures

HUB_NAME = "myhub.example"
SENDERS = ("d1", "d2")
TO_UPSTREAM = {"upstream": "FROM /messages/* INTO $upstream"}
ACK_TIMEOUT = 30.0
DRAIN_TIMEOUT = 60.0


class Parent:
    """A parent hub serving AMQP on TLS (``amqp_port``) and over WebSocket (``https_port``), trusting
    ``child/$edgeHub``, routing everything to ``broker``; ``start``/``stop`` keep its folder and ports."""

    def __init__(self, tmp_path: Path, broker: Broker) -> None:
        self.folder = tmp_path / "parent"
        self.certificates: DevCertificates = ensure_dev_certificates(
            self.folder / "data" / "certs", ["localhost", HUB_NAME])
        self.config = write_config(tmp_path / "parent.json", TO_UPSTREAM, [
            {"deviceId": "child", "moduleId": "$edgeHub", "primaryKey": key("child")},
        ])
        self.amqp_port, self.https_port = free_port(), free_port()
        self.env = upstream_env(broker.port, key("parent"), device_id="parent") | NO_PROXY_ENV | {
            "IotHubHostName": HUB_NAME, "amqpSettings__enabled": "true",
            "amqpSettings__port": str(self.amqp_port), "httpSettings__enabled": "true",
            "httpSettings__port": str(self.https_port),
        }
        self.process: HubProcess | None = None

    def start(self) -> Parent:
        self.process = HubProcess(self.folder, self.config, self.env).start()  # returns once it serves
        assert f"amqp: amqps://0.0.0.0:{self.amqp_port}" in self.process.output
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.stop()


@pytest.fixture
def parent(tmp_path: Path, broker: Broker) -> Iterator[Parent]:
    made = Parent(tmp_path, broker)
    yield made
    made.stop()


def child_env(parent: Parent, protocol: str, proxy_url: str = "") -> dict[str, str]:
    port = parent.amqp_port if protocol == "Amqp" else parent.https_port
    env = upstream_env(port, key("child"), device_id="child", tls=True) | NO_PROXY_ENV | {
        "UpstreamProtocol": protocol, "UpstreamCaFile": str(parent.certificates.ca_file),
        "IotHubHostName": HUB_NAME, "Metrics__Listener__Port": str(free_port()),
    }
    if proxy_url:
        env["https_proxy"] = proxy_url
    return env


def child_config(tmp_path: Path) -> Path:
    identities = [{"deviceId": d, "primaryKey": key(d)} for d in SENDERS]
    return write_config(tmp_path / "child.json", TO_UPSTREAM, identities)


def publish_all(devices: Sequence[Device], seqs: range) -> None:
    for client in devices:
        client.publish(seqs, "via=amqp")


def wait_all_acked(devices: Sequence[Device]) -> None:
    for client in devices:
        client.wait_acked(ACK_TIMEOUT)


def check_arrivals(observer: Observer, expected: Mapping[str, Sequence[int]], report: Report) -> None:
    """Every expected message arrived upstream of the parent, in order per sender, on its own topic."""
    observer.wait_for(((s, n) for s, seqs in expected.items() for n in seqs), DRAIN_TIMEOUT)
    arrivals = observer.snapshot()
    tally = Tally.of(arrivals)
    report("arrived", len(arrivals))
    report("duplicates", tally.duplicates)
    assert tally.missing(expected) == {}
    assert tally.out_of_order() == {}
    assert {a.sender for a in arrivals} == set(expected)
    assert all(a.topic.startswith(f"devices/{a.sender}/messages/events/") for a in arrivals)
    assert all("via=amqp" in a.topic for a in arrivals)


@pytest.mark.parametrize("protocol", ["Amqp", "AmqpWs"])
def test_messages_cross_an_amqp_upstream_and_survive_parent_outages_in_order(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory, report: Report,
    parent: Parent, protocol: str,
) -> None:
    env = child_env(parent, protocol)
    metrics = int(env["Metrics__Listener__Port"])
    with HubProcess(tmp_path / "child", child_config(tmp_path), env) as child:
        devices = [device(d, int(child.env["mqttSettings__plainPort"])) for d in SENDERS]
        publish_all(devices, range(100))
        wait_all_acked(devices)  # stored at the child: the parent is not running yet
        parent.start()
        wait_until(lambda: sent_upstream(metrics) >= 200, 30, "the child delivered to the parent")
        parent.stop()  # an outage: the child keeps acking its devices
        publish_all(devices, range(100, 300))
        wait_all_acked(devices)
        parent.start()
        check_arrivals(observer, {d: range(300) for d in SENDERS}, report)
    url = (f"amqps://127.0.0.1:{parent.amqp_port}" if protocol == "Amqp"
           else f"wss://127.0.0.1:{parent.https_port}/$iothub/websocket")
    # Offline at first, then one outage: both connects are reconnects.
    assert child.output.count(f"upstream connected to {url} again after") == 2


def test_amqp_ws_reaches_the_parent_through_tinyproxy(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory, report: Report, parent: Parent,
) -> None:
    parent.start()
    proxy = Tinyproxy(tmp_path / "tinyproxy", connect_port=parent.https_port,
                      basic_auth=("edge", "pr0xy-pass"))
    try:
        env = child_env(parent, "AmqpWs", f"http://edge:pr0xy-pass@127.0.0.1:{proxy.port}")
        with HubProcess(tmp_path / "child", child_config(tmp_path), env) as child:
            devices = [device(d, int(child.env["mqttSettings__plainPort"])) for d in SENDERS]
            publish_all(devices, range(50))
            wait_all_acked(devices)
            check_arrivals(observer, {d: range(50) for d in SENDERS}, report)
    finally:
        proxy.stop()
    assert f"CONNECT 127.0.0.1:{parent.https_port} HTTP/1.1" in proxy.log()
    assert "through the HTTPS proxy http://edge:***@127.0.0.1" in child.output
    assert "pr0xy-pass" not in child.output


def test_everything_the_child_acked_before_a_kill_9_arrives_over_amqp(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory, report: Report, parent: Parent,
) -> None:
    config, env = child_config(tmp_path), child_env(parent, "Amqp")
    parent.start()
    child = HubProcess(tmp_path / "child", config, env).start()
    try:
        devices = [device(d, int(child.env["mqttSettings__plainPort"])) for d in SENDERS]
        publish_all(devices, range(2000))
        # Kill while messages are still being published, acked and forwarded upstream.
        wait_until(lambda: all(len(c.acked()) >= 500 for c in devices), ACK_TIMEOUT, "500 acks each")
        assert child.process is not None
        child.process.kill()
    finally:
        child.stop()
    acked_before_kill = {c.device_id: c.acked() for c in devices}
    assert any(len(seqs) < 2000 for seqs in acked_before_kill.values()), "the kill came after the last ack"
    report("acked_before_kill", sum(len(seqs) for seqs in acked_before_kill.values()))
    for client in devices:
        client.close()
    with HubProcess(tmp_path / "child", config, env):
        observer.wait_for(((d, n) for d in SENDERS for n in acked_before_kill[d]), DRAIN_TIMEOUT)
    tally = Tally.of(observer.snapshot())
    report("duplicates", tally.duplicates)
    assert tally.missing({d: sorted(acked_before_kill[d]) for d in SENDERS}) == {}
    assert tally.out_of_order() == {}



@pytest.mark.parametrize("protocol", ["Amqp", "AmqpWs"])
def test_a_child_takes_its_routes_from_its_twin_at_the_parent_over_amqp(
    tmp_path: Path, broker: Broker, protocol: str,
) -> None:
    from tests.e2e.test_config_from_twin import TWIN_ROUTES, send_and_expect_at_sink

    made = Parent(tmp_path, broker)
    made.config = write_config(tmp_path / "parent.json", {}, [
        {"deviceId": "child", "moduleId": "$edgeHub", "primaryKey": key("child"),
         "desiredProperties": {"schemaVersion": "1.1", "routes": TWIN_ROUTES,
                               "storeAndForwardConfiguration": {"timeToLiveSecs": 600}}},
    ])
    made.env |= {"IotHubHostName": "localhost", "EdgeHubHostName": "localhost"}
    child_config = write_config(tmp_path / "child.json", {"up": "FROM /messages/* INTO $upstream"}, [
        {"deviceId": "sensor", "primaryKey": key("sensor")},
        {"deviceId": "child", "moduleId": "sink", "primaryKey": key("child/sink")},
    ])
    env = child_env(made, protocol) | {"IotHubHostName": "localhost"}
    made.start()
    try:
        with HubProcess(tmp_path / "child", child_config, env) as child:
            child.wait_for_line("config from twin of child/$edgeHub: 1 routes", 20)
            send_and_expect_at_sink(int(child.env["mqttSettings__plainPort"]))
    finally:
        made.stop()


def test_per_identity_each_sender_goes_up_under_its_own_cbs_token(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory, report: Report, parent: Parent,
) -> None:
    # The parent knows the devices too (as IoT Hub would): each link is authorized by its sender's token.
    parent.config = write_config(tmp_path / "parent.json", TO_UPSTREAM, [
        {"deviceId": "child", "moduleId": "$edgeHub", "primaryKey": key("child")},
        *({"deviceId": d, "primaryKey": key(d)} for d in SENDERS),
    ])
    parent.start()
    env = child_env(parent, "Amqp") | {"UpstreamIdentityMode": "perIdentity", "RuntimeLogLevel": "debug"}
    with HubProcess(tmp_path / "child", child_config(tmp_path), env) as child:
        devices = [device(d, int(child.env["mqttSettings__plainPort"])) for d in SENDERS]
        publish_all(devices, range(50))
        wait_all_acked(devices)
        check_arrivals(observer, {d: range(50) for d in SENDERS}, report)
    for sender in SENDERS:
        audience = f"{HUB_NAME}/devices/{sender}"
        assert f"the parent took the CBS token of {sender} (audience {audience})" in child.output
        assert f"upstream: sending as {sender} on /devices/{sender}/messages/events" in child.output
