"""Twins and direct methods across nested hubs, every part real: a module on a child ``edgehub run``
reads the desired properties its parent holds, its reported properties reach the parent, and a
method invoked on the parent's HTTPS API is answered by the module below the child."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity
from edgehub.tls import ensure_dev_certificates
from tests.e2e.parts import key, upstream_env, wait_until
from tests.hubproc import HubProcess, free_port, write_config

pytestmark = pytest.mark.slow

FILTER = Identity("child", "filter")
CALLER = Identity("parent", "caller")


class TwinModule:
    """A module on a hub's plaintext port: twin requests, desired patches, answering methods."""

    def __init__(self, identity: Identity, port: int, *, methods: bool = True) -> None:
        self.identity = identity
        self.messages: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=identity.id)
        token = make_sas_token(sas_resource("localhost", identity), key(identity.id), int(time.time()) + 3600)
        client.username_pw_set(f"localhost/{identity.id}/?api-version=2021-04-12", token)
        client.on_connect = lambda *_: self._connected.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        wait_until(self._connected.is_set, 10, f"{identity} connected")
        feeds = ["$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"]
        for topic in feeds + (["$iothub/methods/POST/#"] if methods else []):
            client.subscribe(topic, qos=1)
        self.client = client

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic.startswith("$iothub/methods/POST/"):
            rid = message.topic.split("$rid=")[1]
            client.publish(
                f"$iothub/methods/res/201/?$rid={rid}", json.dumps({"got": json.loads(message.payload)})
            )
        with self._lock:
            self.messages.append(message)

    def request(self, topic: str, payload: bytes, rid: str) -> tuple[int, bytes]:
        self.client.publish(topic, payload, qos=1)

        def answer() -> paho.MQTTMessage | None:
            with self._lock:
                return next(
                    (m for m in self.messages if f"$rid={rid}" in m.topic and "/res/" in m.topic), None
                )

        wait_until(lambda: answer() is not None, 15, f"twin answer {rid}")
        found = answer()
        assert found is not None
        return int(found.topic.split("/")[3]), bytes(found.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(params=["Mqtt", "Amqp", "Amqp-perIdentity"])
def hubs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[HubProcess, HubProcess, int]]:
    """A standalone parent (MQTT, AMQP over TLS, HTTPS) and a child whose upstream is the parent,
    over MQTT or AMQP (``UpstreamProtocol``)."""
    parent_config = write_config(
        tmp_path / "parent.json",
        {},
        [
            {"deviceId": "child", "moduleId": "$edgeHub", "primaryKey": key("child")},
            {
                "deviceId": "child",
                "moduleId": "filter",
                "primaryKey": key(FILTER.id),
                "desiredProperties": {"rate": 7, "unit": "s"},
            },
            {"deviceId": "parent", "moduleId": "caller", "primaryKey": key(CALLER.id)},
        ],
    )
    parent_plain, https_port, amqp_port = free_port(), free_port(), free_port()
    certificates = ensure_dev_certificates(tmp_path / "parent" / "data" / "certs", ["localhost"])
    parent_env = {
        "amqpSettings__enabled": "true",
        "amqpSettings__port": str(amqp_port),
        "EdgeDeviceId": "parent",
        "IotHubHostName": "localhost",
        "EdgeHubHostName": "localhost",
        "mqttSettings__plainPort": str(parent_plain),
        "mqttSettings__port": str(free_port()),
        "httpSettings__enabled": "true",
        "httpSettings__port": str(https_port),
    }
    child_config = write_config(
        tmp_path / "child.json",
        {},
        [
            {"deviceId": "child", "moduleId": "filter", "primaryKey": key(FILTER.id)},
        ],
    )
    child_env = upstream_env(parent_plain, key("child"), device_id="child") | {"IotHubHostName": "localhost"}
    if request.param.startswith("Amqp"):
        child_env |= upstream_env(amqp_port, key("child"), device_id="child", tls=True, host="localhost") | {
            "UpstreamProtocol": "Amqp", "UpstreamCaFile": str(certificates.ca_file),
            "mqttSettings__plainPort": child_env["mqttSettings__plainPort"],
            "mqttSettings__port": child_env["mqttSettings__port"]}
    if request.param == "Amqp-perIdentity":  # each identity's links on its own CBS token, as toward IoT Hub
        child_env["UpstreamIdentityMode"] = "perIdentity"
    with (
        HubProcess(tmp_path / "parent", parent_config, parent_env) as parent,
        HubProcess(tmp_path / "child", child_config, child_env) as child,
    ):
        assert ("upstream: amqps://localhost:" in child.output) == request.param.startswith("Amqp")
        yield parent, child, https_port


def invoke(parent: HubProcess, https_port: int, target: Identity, body: dict[str, Any]) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(parent.folder / "data" / "certs" / "dev-ca.pem"))
    token = make_sas_token(sas_resource("localhost", CALLER), key(CALLER.id), int(time.time()) + 3600)
    request = urllib.request.Request(
        f"https://localhost:{https_port}/twins/{target.device_id}/modules/{target.module_id}/methods"
        "?api-version=2018-06-30",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": token, "Content-Type": "application/json", "x-ms-edge-moduleId": CALLER.id},
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return response.status, json.loads(response.read())


def test_child_module_twin_and_methods_come_from_and_go_to_the_parent(
    hubs: tuple[HubProcess, HubProcess, int],
) -> None:
    parent, child, https_port = hubs
    module = TwinModule(FILTER, int(child.env["mqttSettings__plainPort"]))
    try:
        # The child reads the parent's twin of child/filter (the parent is the source of truth).
        deadline = time.monotonic() + 20
        desired: dict[str, Any] = {}
        attempt = 0
        while desired.get("rate") != 7 and time.monotonic() < deadline:
            attempt += 1
            status, body = module.request(f"$iothub/twin/GET/?$rid=g{attempt}", b"", f"g{attempt}")
            assert status == 200
            desired = json.loads(body)["desired"]
        assert desired["rate"] == 7
        assert desired["unit"] == "s"

        status, _ = module.request("$iothub/twin/PATCH/properties/reported/?$rid=r1", b'{"state":"ok"}', "r1")
        assert status == 204
        # As the parent sees it (not taking the module's method calls away from the child's link).
        parent_view = TwinModule(FILTER, int(parent.env["mqttSettings__plainPort"]), methods=False)
        try:

            def reported_at_parent() -> bool:
                _, twin = parent_view.request(f"$iothub/twin/GET/?$rid=p{time.monotonic_ns()}", b"", "p")
                return bool(json.loads(twin)["reported"].get("state") == "ok")

            wait_until(reported_at_parent, 20, "reported properties synced to the parent")
        finally:
            parent_view.close()

        # A method invoked on the parent reaches the module through the child (once the child's
        # link follows the module's method feed on the parent).
        def answered() -> tuple[int, Any] | None:
            try:
                return invoke(
                    parent,
                    https_port,
                    FILTER,
                    {
                        "methodName": "ping",
                        "payload": {"n": 3},
                        "responseTimeoutInSeconds": 10,
                        "connectTimeoutInSeconds": 2,
                    },
                )
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # 404: the child's link does not take the module's calls yet
                    raise
                return None

        result: list[tuple[int, Any]] = []

        def try_once() -> bool:
            answer = answered()
            if answer is not None:
                result.append(answer)
            return bool(result)

        try:
            wait_until(try_once, 30, "the method answered through the child")
        except AssertionError:
            raise AssertionError("parent:\n" + parent.output + "\nchild:\n" + child.output) from None
        status, payload = result[0]
        assert status == 200
        assert payload == {"status": 201, "payload": {"got": {"n": 3}}}
    finally:
        module.close()
