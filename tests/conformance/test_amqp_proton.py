"""python-qpid-proton's client against a real hub over AMQPS: a device proves itself with CBS put-token
(SASL ANONYMOUS) and sends telemetry; a module, authenticated with SASL PLAIN, receives it on its input
link after it was stored (it attaches later), reads its twin, and settles what it got."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import proton
import pytest
from proton.utils import BlockingConnection

from edgehub.amqp import messages
from edgehub.message import Identity
from tests.conformance.deployment import HOST, Deployment, DeploymentSpec, module, run_deployment
from tests.heads.amqp.support import app_properties, events_address, flush, put_token, telemetry
from tests.hubproc import free_port

pytestmark = pytest.mark.conformance

DEVICE = Identity("amqpdev")
SINK = module("amqpsink")
AMQP_PORT = free_port()
SPEC = DeploymentSpec(
    routes={
        "toSink": "FROM /messages/* WHERE $connectionDeviceId = 'amqpdev' "
        'INTO BrokeredEndpoint("/modules/amqpsink/inputs/in1")'
    },
    identities=[DEVICE, SINK],
    module_desired={"amqpsink": {"rate": 3}},
    env={"amqpSettings__enabled": "true", "amqpSettings__port": str(AMQP_PORT)},
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("amqp-proton"), SPEC) as running:
        yield running


def connect(deployment: Deployment, **sasl: Any) -> BlockingConnection:
    domain = proton.SSLDomain(proton.SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(str(deployment.ca_file))
    domain.set_peer_authentication(proton.SSLDomain.VERIFY_PEER_NAME)
    return BlockingConnection(
        f"amqps://{HOST}:{AMQP_PORT}",
        ssl_domain=domain,
        timeout=20,
        allowed_mechs=sasl.pop("mechs", "ANONYMOUS"),
        **sasl,
    )


def test_proton_device_telemetry_waits_for_the_module_and_reaches_its_input_link(
    deployment: Deployment,
) -> None:
    device = connect(deployment)
    try:
        assert put_token(device, DEVICE, deployment.password(DEVICE)) == (200, "OK")
        sender = device.create_sender(events_address(DEVICE))
        for n in range(3):
            outgoing = telemetry(json.dumps({"n": n}).encode(), n=str(n))
            outgoing.content_type = "application/json"
            assert sender.send(outgoing).remote_state == proton.Delivery.ACCEPTED
    finally:
        device.close()
    sink = connect(
        deployment,
        mechs="PLAIN",
        user=f"{SINK.device_id}/modules/{SINK.module_id}@sas.{HOST}",
        password=deployment.password(SINK),
    )
    try:
        receiver = sink.create_receiver(
            f"/devices/{SINK.device_id}/modules/{SINK.module_id}/messages/events", credit=10
        )
        got = []
        for _ in range(3):
            message = receiver.receive(timeout=20)
            got.append(
                (
                    json.loads(messages.body_bytes(message)),
                    app_properties(message)["n"],
                    message.content_type,
                    messages.annotation(message, messages.INPUT_NAME),
                    messages.annotation(message, messages.CONNECTION_DEVICE_ID),
                )
            )
            receiver.accept()
        flush(sink)
    finally:
        sink.close()
    assert got == [({"n": n}, str(n), "application/json", "in1", "amqpdev") for n in range(3)]


def test_proton_module_reads_its_twin_with_the_desired_properties_of_the_manifest(
    deployment: Deployment,
) -> None:
    sink = connect(deployment)
    try:
        assert put_token(sink, SINK, deployment.password(SINK)) == (200, "OK")
        address = f"/devices/{SINK.device_id}/modules/{SINK.module_id}/twin"
        requests = sink.create_sender(address)
        answers = sink.create_receiver(address, credit=5)
        request: Any = proton.Message(body=b" ", correlation_id="twin-1", annotations={"operation": "GET"})
        request.inferred = True
        requests.send(request)
        answer = answers.receive(timeout=20)
    finally:
        sink.close()
    assert answer.correlation_id == "twin-1"
    assert messages.annotation(answer, "status") == "200"
    assert json.loads(messages.body_bytes(answer))["desired"]["rate"] == 3
