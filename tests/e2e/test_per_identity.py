"""Per-identity upstream against a broker that checks identities, every part real: mosquitto with
an ACL that lets each client publish only on its own telemetry topic (a refused publish is
silently dropped, as a strict cloud hub's refusal would be lost), so telemetry of several devices
and a module all arrives only when each goes up on its own identity's connection. Cloud-to-device
messages come down on the device's own connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity
from tests.e2e.conftest import DeviceFactory
from tests.e2e.parts import Broker, Observer, key, sent_upstream, upstream_env, wait_until
from tests.hubproc import HubProcess, free_port, write_config

pytestmark = pytest.mark.slow

HUB = "localhost"
DEVICES = ("d1", "d2")
FILTER = Identity("edge", "filter")
COUNT = 50
USERNAME_API = "2018-06-30"  # the api-version the hub's upstream connections send


def acl(folder: Path) -> Path:
    """Anonymous (the observer and the test's cloud side) read telemetry and write cloud-to-device;
    a device writes only its own telemetry (%c, its client id); the module by its user name."""
    path = folder / "acl"
    path.write_text("\n".join([
        "topic read devices/#",
        "topic write devices/+/messages/devicebound/#",
        "pattern write devices/%c/messages/events/#",
        "pattern read devices/%c/messages/devicebound/#",
        f"user {HUB}/{FILTER.id}/?api-version={USERNAME_API}",
        f"topic write devices/{FILTER.device_id}/modules/{FILTER.module_id}/messages/events/#",
        "",
    ]))
    return path


@pytest.fixture
def strict_broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder, extra=[f"acl_file {acl(folder)}"]).start()
    yield broker
    broker.stop()


class ModuleClient:
    """The module ``edge/filter`` publishing ``{id}:{seq}`` on its own telemetry topic."""

    def __init__(self, port: int) -> None:
        self._connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=FILTER.id)
        token = make_sas_token(sas_resource(HUB, FILTER), key(FILTER.id), int(time.time()) + 3600)
        self.client.username_pw_set(f"{HUB}/{FILTER.id}/?api-version=2021-04-12", token)
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self._connected.is_set, 10, "module connected")

    def publish(self, count: int) -> None:
        topic = "devices/edge/modules/filter/messages/events/"
        infos = [self.client.publish(topic, f"{FILTER.id}:{n}", qos=1) for n in range(count)]
        wait_until(lambda: all(i.is_published() for i in infos), 30, "module publishes acked")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def hub_for(tmp_path: Path, broker: Broker, mode: str) -> HubProcess:
    identities: list[dict[str, object]] = [{"deviceId": d, "primaryKey": key(d)} for d in DEVICES]
    identities.append({"deviceId": "edge", "moduleId": "filter", "primaryKey": key(FILTER.id)})
    config = write_config(tmp_path / "hub.json", {"up": "FROM /messages/* INTO $upstream"}, identities)
    env = upstream_env(broker.port, key("edge")) | {
        "IotHubHostName": HUB, "UpstreamIdentityMode": mode, "Metrics__Listener__Port": str(free_port()),
    }
    return HubProcess(tmp_path / "hub", config, env)


def test_each_sender_goes_up_on_its_own_connection_and_every_message_arrives(
    tmp_path: Path, strict_broker: Broker, device: DeviceFactory,
) -> None:
    observer = Observer(strict_broker, "devices/#")
    try:
        with hub_for(tmp_path, strict_broker, "perIdentity") as hub:
            plain = int(hub.env["mqttSettings__plainPort"])
            devices = [device(d, plain) for d in DEVICES]
            for client in devices:
                client.publish(range(COUNT))
            module = ModuleClient(plain)
            try:
                module.publish(COUNT)
                observer.wait_for([(s, n) for s in (*DEVICES, FILTER.id) for n in range(COUNT)], 60)
            finally:
                module.close()
        log = strict_broker.log_file.read_text()
    finally:
        observer.close()
    for client_id in (*DEVICES, FILTER.id):
        assert f" as {client_id} " in log or f" as {client_id}\n" in log, f"no connection as {client_id}"
    topics = {a.sender: a.topic for a in observer.snapshot()}
    assert topics[FILTER.id].startswith("devices/edge/modules/filter/messages/events")
    assert topics["d1"].startswith("devices/d1/messages/events")


def test_multiplexed_senders_are_dropped_by_the_identity_checking_broker(
    tmp_path: Path, strict_broker: Broker, device: DeviceFactory,
) -> None:
    """The control: the same load on the hub's own connection is PUBACKed and dropped by the ACL,
    which is why a cloud hub needs the per-identity model."""
    observer = Observer(strict_broker, "devices/#")
    try:
        with hub_for(tmp_path, strict_broker, "multiplexed") as hub:
            client = device("d1", int(hub.env["mqttSettings__plainPort"]))
            client.publish(range(COUNT))
            metrics = int(hub.env["Metrics__Listener__Port"])
            wait_until(lambda: sent_upstream(metrics) >= COUNT, 30, "the hub sent everything upstream")
        assert observer.distinct() == set()
    finally:
        observer.close()


def test_cloud_to_device_message_comes_down_on_the_devices_own_connection(
    tmp_path: Path, strict_broker: Broker,
) -> None:
    with hub_for(tmp_path, strict_broker, "perIdentity") as hub:
        received: list[bytes] = []
        subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="d1")
        token = make_sas_token(sas_resource(HUB, Identity("d1")), key("d1"), int(time.time()) + 3600)
        client.username_pw_set(f"{HUB}/d1/?api-version=2021-04-12", token)
        client.on_connect = lambda c, *_: c.subscribe("devices/d1/messages/devicebound/#", qos=1)
        client.on_subscribe = lambda *_: subscribed.set()

        def on_message(c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
            received.append(bytes(m.payload))

        client.on_message = on_message
        client.connect("127.0.0.1", int(hub.env["mqttSettings__plainPort"]))
        client.loop_start()
        try:
            wait_until(subscribed.is_set, 10, "d1 subscribed at the hub")
            wait_until(lambda: " as d1 " in strict_broker.log_file.read_text()
                       or " as d1\n" in strict_broker.log_file.read_text(), 20, "the hub's connection as d1")
            cloud = paho.Client(CallbackAPIVersion.VERSION2, client_id="cloud")
            cloud.connect("127.0.0.1", strict_broker.port)
            cloud.loop_start()
            try:
                # The hub subscribes right after connecting; publish until it has the subscription.
                deadline = time.monotonic() + 20
                while not received and time.monotonic() < deadline:
                    cloud.publish("devices/d1/messages/devicebound/%24.mid=c1", b"hello d1", qos=1)
                    wait_until(lambda: bool(received) or time.monotonic() > deadline, 2, "c2d poll")
            finally:
                cloud.disconnect()
                cloud.loop_stop()
        finally:
            client.disconnect()
            client.loop_stop()
    assert received
    assert received[0] == b"hello d1"
