"""rhea (a plain AMQP 1.0 client for Node) over WebSocket, subprotocol ``AMQPWSB10`` on the HTTPS port's
``/$iothub/websocket``, with SASL PLAIN and IoT Hub usernames: telemetry in, a routed message out to a
module's input link, and the refusals a bad peer gets (wrong token, unknown address)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from edgehub.message import Identity
from tests.conformance.deployment import HOST, Deployment, DeploymentSpec, module, run_deployment
from tests.hubproc import free_port

NODE_DIR: Final = Path(__file__).parent / "node"
NODE: Final = shutil.which("node")

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(NODE is None, reason="node is not installed (scripts/system-deps.sh installs it)"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "rhea").exists(),
        reason="tests/conformance/node/node_modules is missing: `make test` runs npm ci there",
    ),
]

DEVICE = Identity("rheadev")
SINK = module("rheasink")
HTTPS_PORT = free_port()
SPEC = DeploymentSpec(
    routes={
        "toSink": "FROM /messages/* WHERE $connectionDeviceId = 'rheadev' "
        'INTO BrokeredEndpoint("/modules/rheasink/inputs/fromDevice")'
    },
    identities=[DEVICE, SINK],
    https_port=HTTPS_PORT,
    env={"amqpSettings__enabled": "true", "amqpSettings__port": str(free_port())},
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("amqp-rhea"), SPEC) as running:
        yield running


def plain_user(identity: Identity) -> str:
    if identity.module_id:
        return f"{identity.device_id}/modules/{identity.module_id}@sas.{HOST}"
    return f"{identity.device_id}@sas.{HOST}"


def rhea(
    deployment: Deployment, identity: Identity, *args: str, password: str | None = None
) -> list[dict[str, Any]]:
    assert NODE is not None
    url = f"wss://{HOST}:{HTTPS_PORT}/$iothub/websocket"
    result = subprocess.run(
        [
            NODE,
            "rhea_client.js",
            url,
            str(deployment.ca_file),
            plain_user(identity),
            password or deployment.password(identity),
            *args,
        ],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode in (0, 1), result.stderr
    return events


def test_rhea_over_websocket_sends_telemetry_that_a_module_receives_on_its_input_link(
    deployment: Deployment,
) -> None:
    sent = rhea(deployment, DEVICE, "send", f"/devices/{DEVICE.device_id}/messages/events", "2")
    assert sent[-1] == {"event": "accepted", "count": 2}
    received = rhea(
        deployment,
        SINK,
        "receive",
        f"/devices/{SINK.device_id}/modules/{SINK.module_id}/messages/events",
        "2",
    )
    messages = [event for event in received if event["event"] == "message"]
    assert [
        (
            m["body"],
            m["properties"]["n"],
            m["annotations"]["x-opt-input-name"],
            m["annotations"]["iothub-connection-device-id"],
        )
        for m in messages
    ] == [
        ("rhea 0", "0", "fromDevice", "rheadev"),
        ("rhea 1", "1", "fromDevice", "rheadev"),
    ]


def test_rhea_with_a_token_signed_by_another_key_is_refused_at_sasl(deployment: Deployment) -> None:
    events = rhea(
        deployment,
        DEVICE,
        "attach",
        f"/devices/{DEVICE.device_id}/messages/events",
        password=deployment.password(DEVICE, key=deployment.keys[SINK]),
    )
    assert {"event": "open"} not in events
    assert events
    assert events[-1]["event"] in ("error", "connection_error")


def test_rhea_attaching_an_address_iot_hub_does_not_define_gets_not_found(deployment: Deployment) -> None:
    events = rhea(deployment, DEVICE, "attach", "/devices/rheadev/telemetry")
    assert events[-1] == {"event": "refused", "condition": "amqp:not-found"}
