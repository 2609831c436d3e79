"""Debian's mosquitto_pub / mosquitto_sub against a real hub over TLS with SAS tokens, MQTT 3.1.1 and 5."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Final

import pytest

from edgehub.message import Identity
from tests.conformance.deployment import (
    Deployment,
    DeploymentSpec,
    events_topic,
    inputs_topic,
    module,
    property_bag,
    random_key,
    run_deployment,
)

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
                       reason="Debian's mosquitto-clients are not installed (make system-deps)"),
]

PROCESS_TIMEOUT: Final = 20.0
VERSIONS: Final = {"311": "mqttv311", "5": "mqttv5"}


def sensor(v: str) -> Identity:
    return Identity(f"mosq-sensor-{v}")


def sink(v: str) -> Identity:
    return module(f"mosq-sink-{v}")


SPEC = DeploymentSpec(
    routes={
        f"sensorToSink{v}": f"FROM /messages/* WHERE $connectionDeviceId = 'mosq-sensor-{v}' "
                            f"INTO BrokeredEndpoint(\"/modules/mosq-sink-{v}/inputs/telemetry\")"
        for v in VERSIONS
    },
    identities=[identity for v in VERSIONS for identity in (sensor(v), sink(v))],
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("mosquitto"), SPEC) as running:
        yield running


@pytest.fixture(params=sorted(VERSIONS), ids=lambda v: f"mqtt{v}")
def v(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


def mosquitto(tool: str, deployment: Deployment, identity: Identity, v: str, *args: str,
              password: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [
        tool, "-h", deployment.host, "-p", str(deployment.tls_port), "--cafile", str(deployment.ca_file),
        "-V", VERSIONS[v], "-i", identity.id, "-u", deployment.username(identity),
        "-P", password if password is not None else deployment.password(identity), "-q", "1", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT, check=False)


def receive_one(deployment: Deployment, identity: Identity, v: str) -> tuple[str, str, str]:
    """mosquitto_sub on the module's inputs until one message came (bounded by -W): topic,
    MQTT 5 content type, payload."""
    result = mosquitto("mosquitto_sub", deployment, identity, v,
                       "-t", inputs_topic(identity) + "#", "-C", "1", "-W", "10",
                       "-F", "%t|%C|%p")
    assert result.returncode == 0, result.stderr
    topic, content_type, payload = result.stdout.rstrip("\n").split("|", 2)
    return topic, content_type, payload


def test_mosquitto_pub_telemetry_is_acked_and_mosquitto_sub_receives_it_on_the_routed_input(
    deployment: Deployment, v: str,
) -> None:
    device = sensor(v)
    published = mosquitto(
        "mosquitto_pub", deployment, device, v, "-d",
        "-t", events_topic(device) + f"$.mid=mq-{v}&$.ct=application%2Fjson&room=hall%201",
        "-m", '{"lux": 310}',
    )

    assert published.returncode == 0, published.stderr
    assert "received PUBACK (Mid: 1, RC:0)" in published.stdout
    topic, content_type, payload = receive_one(deployment, sink(v), v)
    assert property_bag(topic, inputs_topic(sink(v)) + "telemetry/") == {
        "$.mid": f"mq-{v}", "$.ct": "application/json", "$.cdid": device.device_id, "room": "hall 1",
    }
    assert payload == '{"lux": 310}'
    assert content_type == ("application/json" if v == "5" else "")


def test_mosquitto_pub_mqtt5_content_type_and_user_properties_reach_mosquitto_sub(
    deployment: Deployment,
) -> None:
    v = "5"
    device = sensor(v)
    published = mosquitto(
        "mosquitto_pub", deployment, device, v,
        "-D", "publish", "content-type", "text/csv", "-D", "publish", "user-property", "batch", "7",
        "-t", events_topic(device) + "$.mid=mq-props", "-m", "a,b,c",
    )

    assert published.returncode == 0, published.stderr
    topic, content_type, payload = receive_one(deployment, sink(v), v)
    assert property_bag(topic, inputs_topic(sink(v)) + "telemetry/") == {
        "$.mid": "mq-props", "$.ct": "text/csv", "$.cdid": device.device_id, "batch": "7",
    }
    assert (content_type, payload) == ("text/csv", "a,b,c")


def test_mosquitto_pub_as_another_device_is_refused(deployment: Deployment, v: str) -> None:
    result = mosquitto("mosquitto_pub", deployment, sensor(v), v,
                       "-t", "devices/someone-else/messages/events/", "-m", "forged")

    if v == "5":  # PUBACK 0x87
        assert "Publish 1 failed: Not authorized." in result.stderr
    else:  # 3.1.1: the connection is closed instead of a PUBACK
        assert result.returncode != 0
        assert "The connection was lost." in result.stderr


def test_mosquitto_pub_with_a_bad_sas_token_is_refused_at_connect(deployment: Deployment, v: str) -> None:
    device = sensor(v)
    result = mosquitto("mosquitto_pub", deployment, device, v,
                       "-t", events_topic(device), "-m", "x",
                       password=deployment.password(device, key=random_key()))

    assert result.returncode != 0
    expected = "Bad User Name or Password" if v == "5" else "Connection Refused: not authorised."
    assert expected in result.stderr
