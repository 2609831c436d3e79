"""amqtt's client (MQTT 3.1.1) against a real hub over TLS with SAS tokens: telemetry in, inputs out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import quote

import pytest
from amqtt.client import MQTTClient
from amqtt.mqtt.constants import QOS_1

from edgehub.message import Identity
from tests.conformance.deployment import (
    Deployment,
    DeploymentSpec,
    events_topic,
    inputs_topic,
    module,
    property_bag,
    run_deployment,
)

pytestmark = pytest.mark.conformance

BOUND: Final = 10.0
SENSOR = Identity("amqtt-sensor")
MONITOR = module("amqtt-monitor")
FILTER = module("amqtt-filter")
SINK = module("amqtt-sink")

SPEC = DeploymentSpec(
    routes={
        "sensorToMonitor": "FROM /messages/* WHERE $connectionDeviceId = 'amqtt-sensor' "
                           "INTO BrokeredEndpoint(\"/modules/amqtt-monitor/inputs/telemetry\")",
        "filterToSink": "FROM /messages/modules/amqtt-filter/outputs/out "
                        "INTO BrokeredEndpoint(\"/modules/amqtt-sink/inputs/in1\")",
    },
    identities=[SENSOR, MONITOR, FILTER, SINK],
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("amqtt"), SPEC) as running:
        yield running


@asynccontextmanager
async def amqtt_client(deployment: Deployment, identity: Identity) -> AsyncIterator[MQTTClient]:
    """An amqtt client connected over TLS (mqtts:// with the dev CA); credentials in the URI,
    percent-encoded (amqtt unquotes them)."""
    config: dict[str, Any] = {"auto_reconnect": False, "keep_alive": 30}
    client = MQTTClient(client_id=identity.id, config=config)
    user = quote(deployment.username(identity), safe="")
    password = quote(deployment.password(identity), safe="")
    uri = f"mqtts://{user}:{password}@{deployment.host}:{deployment.tls_port}/"
    code = await asyncio.wait_for(client.connect(uri, cafile=str(deployment.ca_file)), BOUND)
    assert code == 0
    connection = stream_writer(client)
    try:
        yield client
    finally:
        await asyncio.wait_for(client.disconnect(), BOUND)
        await closed(connection)


def stream_writer(client: MQTTClient) -> asyncio.StreamWriter:
    """The asyncio StreamWriter of a connected amqtt client (amqtt internals, pinned by the assert)."""
    writer = getattr(getattr(client._handler, "writer", None), "_writer", None)
    assert isinstance(writer, asyncio.StreamWriter), "amqtt internals changed: update stream_writer()"
    return writer


async def closed(writer: asyncio.StreamWriter) -> None:
    """Close the connection and wait (bounded) until its socket is closed. amqtt's disconnect()
    can return with the TLS transport still open: it skips StreamWriter.close() when drain()
    fails because the hub already closed the connection after DISCONNECT [MQTT-3.14.4-1], and
    the socket would then outlive the test's event loop (a ResourceWarning in a later test)."""
    writer.close()
    with contextlib.suppress(OSError):  # ended with a reset or TLS alert: closed all the same
        await asyncio.wait_for(writer.wait_closed(), BOUND)


async def receive(client: MQTTClient, count: int) -> list[tuple[str, bytes]]:
    received = []
    for _ in range(count):
        message = await client.deliver_message(timeout_duration=BOUND)
        assert message is not None
        received.append((message.topic, bytes(message.data)))
    return received


async def test_amqtt_device_telemetry_is_acked_and_an_amqtt_module_receives_it_on_its_input(
    deployment: Deployment,
) -> None:
    async with amqtt_client(deployment, SENSOR) as device:
        for n in range(3):
            # QoS 1: publish returns once the PUBACK came, i.e. after the hub stored the message.
            sent = await device.publish(
                events_topic(SENSOR) + f"$.mid=a-{n}&$.ct=text%2Fplain&seq={n}",
                b"reading %d" % n, qos=QOS_1, ack_timeout=int(BOUND),
            )
            assert sent.puback_packet is not None

    async with amqtt_client(deployment, MONITOR) as monitor:
        assert await monitor.subscribe([(inputs_topic(MONITOR) + "#", QOS_1)]) == [QOS_1]
        received = await receive(monitor, 3)
    prefix = inputs_topic(MONITOR) + "telemetry/"
    assert [(property_bag(topic, prefix), body) for topic, body in received] == [
        ({"$.mid": f"a-{n}", "$.ct": "text/plain", "$.cdid": "amqtt-sensor", "seq": str(n)},
         b"reading %d" % n)
        for n in range(3)
    ]


async def test_amqtt_module_output_is_routed_to_a_subscribed_amqtt_module(deployment: Deployment) -> None:
    async with amqtt_client(deployment, SINK) as sink, amqtt_client(deployment, FILTER) as source:
        assert await sink.subscribe([(inputs_topic(SINK) + "#", QOS_1)]) == [QOS_1]
        sent = await source.publish(
            events_topic(FILTER) + "$.on=out&$.mid=f-1&kind=alert",
            b'{"alert": true}', qos=QOS_1, ack_timeout=int(BOUND),
        )
        assert sent.puback_packet is not None
        [(topic, body)] = await receive(sink, 1)
    assert property_bag(topic, inputs_topic(SINK) + "in1/") == {
        "$.mid": "f-1", "$.cdid": "edge", "$.cmid": "amqtt-filter", "kind": "alert",
    }
    assert body == b'{"alert": true}'
