"""configSource=twin with every part real: a child ``edgehub run`` takes its routes from the desired
properties its parent holds for ``child/$edgeHub`` (as IoT Edge deploys edgeHub's routes to its
module twin), over its own config file's, and keeps running them after a restart with the parent gone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity
from tests.e2e.parts import Device, key, upstream_env, wait_until
from tests.hubproc import HubProcess, free_port, write_config

pytestmark = pytest.mark.slow

SINK = Identity("child", "sink")
TWIN_ROUTES = {"toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/fromtwin")'}


class Sink:
    """The module child/sink on a hub's plaintext port, collecting what reaches its inputs."""

    def __init__(self, port: int) -> None:
        self.topics: list[str] = []
        subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=SINK.id)
        token = make_sas_token(sas_resource("localhost", SINK), key(SINK.id), int(time.time()) + 3600)
        client.username_pw_set(f"localhost/{SINK.id}/?api-version=2021-04-12", token)
        inputs = f"devices/{SINK.device_id}/modules/sink/inputs/#"
        client.on_connect = lambda c, *_: c.subscribe(inputs, qos=1)
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = lambda _c, _u, message: self.topics.append(message.topic)
        client.connect("127.0.0.1", port)
        client.loop_start()
        wait_until(subscribed.is_set, 10, "sink subscribed")
        self.client = client

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def send_and_expect_at_sink(port: int) -> None:
    sink = Sink(port)
    device = Device("sensor", key("sensor"), port)
    try:
        device.publish([1])
        device.wait_acked(10)
        wait_until(lambda: any("/inputs/fromtwin" in t for t in sink.topics), 15,
                   "the twin's route delivered")
    finally:
        device.close()
        sink.close()


def test_a_child_runs_the_routes_of_its_twin_on_the_parent_and_keeps_them_offline(tmp_path: Path) -> None:
    parent_plain = free_port()
    parent_config = write_config(tmp_path / "parent.json", {}, [
        {"deviceId": "child", "moduleId": "$edgeHub", "primaryKey": key("child"),
         "desiredProperties": {"schemaVersion": "1.1", "routes": TWIN_ROUTES,
                               "storeAndForwardConfiguration": {"timeToLiveSecs": 600}}},
    ])
    parent_env = {"EdgeDeviceId": "parent", "IotHubHostName": "localhost", "EdgeHubHostName": "localhost",
                  "mqttSettings__plainPort": str(parent_plain), "mqttSettings__port": str(free_port())}
    # The child's own file sends everything upstream; its registry holds the device and the sink.
    child_config = write_config(tmp_path / "child.json", {"up": "FROM /messages/* INTO $upstream"}, [
        {"deviceId": "sensor", "primaryKey": key("sensor")},
        {"deviceId": "child", "moduleId": "sink", "primaryKey": key(SINK.id)},
    ])
    child_env = upstream_env(parent_plain, key("child"), device_id="child") | {"IotHubHostName": "localhost"}
    child_port = int(child_env["mqttSettings__plainPort"])
    with (HubProcess(tmp_path / "parent", parent_config, parent_env),
          HubProcess(tmp_path / "child", child_config, child_env) as child):
        child.wait_for_line("config from twin of child/$edgeHub: 1 routes", 20)
        send_and_expect_at_sink(child_port)
    # The parent is gone: the restarted child runs the twin's routes from its store.
    with HubProcess(tmp_path / "child", child_config, child_env) as child:
        child.wait_for_line("routes and store settings from the twin of child/$edgeHub", 5)
        send_and_expect_at_sink(child_port)
