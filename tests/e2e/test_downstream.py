"""Messages coming DOWN from the upstream, with every part real: a mosquitto upstream, an
``edgehub run`` subprocess and paho devices (docs/architecture.md §1 invariant 1; issue "Upstream" item 5).

A cloud-to-device message the parent publishes is stored by the hub (acked upstream only then)
and delivered when its device connects, in order; one whose time to live ran out while the
device was away is never delivered.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity
from tests.e2e.parts import Broker, key, metric, upstream_env, wait_until
from tests.hubproc import HubProcess, free_port, write_config

pytestmark = pytest.mark.slow

EDGE_KEY = key("edge")


class Receiver:
    """A device on the hub's plaintext port subscribed to its cloud-to-device topic."""

    def __init__(self, device_id: str, port: int) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device_id)
        token = make_sas_token(sas_resource("localhost", Identity(device_id)), key(device_id),
                               int(time.time()) + 3600)
        self._client.username_pw_set(f"localhost/{device_id}/?api-version=2021-04-12", token)
        self._client.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_connect = lambda c, *_: c.subscribe(f"devices/{device_id}/messages/devicebound/#", 1)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        wait_until(self._subscribed.is_set, 10, f"{device_id} subscribed")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def cloud_publish(broker: Broker, topic: str, bodies: list[bytes]) -> None:
    """Publish at QoS 1 on the upstream broker, as a cloud IoT hub would, and wait for the PUBACKs."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="cloud")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, body, qos=1) for body in bodies]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_cloud_to_device_messages_wait_in_the_hub_for_an_offline_device_and_arrive_in_order(
    tmp_path: Path, broker: Broker,
) -> None:
    config = write_config(tmp_path / "config.json", {"up": "FROM /messages/* INTO $upstream"},
                          [{"deviceId": "lamp", "primaryKey": key("lamp")}])
    env = upstream_env(broker.port, EDGE_KEY) | {"Metrics__Listener__Port": str(free_port())}
    metrics_port = int(env["Metrics__Listener__Port"])
    with HubProcess(tmp_path / "hub", config, env):
        send_until_stored(broker, metrics_port)
        bodies = [f"command {n}".encode() for n in range(5)]
        cloud_publish(broker, "devices/lamp/messages/devicebound/", bodies)
        wait_until(lambda: _stored(metrics_port) >= 6, 15, "the hub stored the commands")
        lamp = Receiver("lamp", int(env["mqttSettings__plainPort"]))
        try:
            wait_until(lambda: len(lamp.received) >= 6, 15, "the commands at the device")
            payloads = [payload for _, payload in lamp.received]
            assert payloads[payloads.index(b"command 0"):] == bodies
            assert all(topic.startswith("devices/lamp/messages/devicebound/") for topic, _ in lamp.received)
        finally:
            lamp.close()


def send_until_stored(broker: Broker, metrics_port: int) -> None:
    """The hub subscribes to devicebound topics when it connects upstream: probe until one is stored."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cloud_publish(broker, "devices/lamp/messages/devicebound/", [b"probe"])
        try:
            wait_until(lambda: _stored(metrics_port) >= 1, 2, "the probe stored")
        except AssertionError:
            continue
        return
    raise AssertionError("the hub never stored a message from the cloud")


def _stored(metrics_port: int) -> float:
    """Messages the hub queued for the device (the devicebound queue length gauge)."""
    return metric(metrics_port, "edgehub_queue_length",
                  {"endpoint": "/devices/lamp/messages/devicebound", "priority": "2000000000"})
