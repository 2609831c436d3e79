"""Generic MQTT messages routed to ``$upstream`` reach a real mosquitto upstream on the topic
``mqttSettings__genericUpstreamTopic`` names (``{topic}`` = the message's own), stored and forwarded
like telemetry; and the setting is refused where it could have no effect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.conformance.generic_broker import connect, run_broker
from tests.e2e.parts import Broker as Mosquitto
from tests.e2e.parts import Observer, key, upstream_env

pytestmark = pytest.mark.conformance


def test_a_generic_message_reaches_the_upstream_broker_on_the_configured_topic(tmp_path: Path) -> None:
    upstream = Mosquitto(tmp_path / "upstream").start()
    observer = Observer(upstream, "site1/#", client_id="site-observer")
    try:
        env = upstream_env(upstream.port, key("edge"))
        env["mqttSettings__genericUpstreamTopic"] = "site1/{topic}"
        env.pop("mqttSettings__plainPort")
        env.pop("mqttSettings__port")
        with run_broker(tmp_path / "hub", routes={"up": "FROM /topics/factory/# INTO $upstream"},
                        acl=[], env=env) as hub:
            plc = connect(hub.port, "plc1", mqtt.MQTTv311)
            plc.publish("factory/line1/temp", b"plc1:1", qos=1)
            plc.publish("office/door", b"plc1:2", qos=1)  # no route takes it upstream
            plc.stop()
            observer.wait_for({("plc1", 1)}, 20)
        topics = {arrival.topic for arrival in observer.snapshot()}
        assert topics == {"site1/factory/line1/temp"}
    finally:
        observer.close()
        upstream.stop()


def test_the_upstream_topic_without_generic_topics_is_refused_at_load() -> None:
    check = subprocess.run([sys.executable, "-m", "edgehub", "check-config"], capture_output=True,
                           text=True, env={"mqttSettings__genericUpstreamTopic": "site1/{topic}", "PATH": ""},
                           timeout=60)
    assert check.returncode == 2
    assert "mqttSettings__genericUpstreamTopic: has no effect without mqttSettings__genericTopics=true" in (
        check.stdout + check.stderr)
