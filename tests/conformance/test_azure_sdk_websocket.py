"""azure-iot-device with ``websockets=True`` against a real hub: MQTT over WebSocket on the HTTPS
port, which the SDK always dials as 443 (so this module's hub binds 443; a taken 443 fails).

The SDK runs in .venv-azure (tests/conformance/azure_sdk_client.py) with AZURE_SDK_WEBSOCKETS=1.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from edgehub.message import Identity
from tests.conformance.deployment import Deployment, DeploymentSpec, module, run_deployment
from tests.conformance.test_azure_sdk import (
    AZURE_PYTHON,
    ROLE_TIMEOUT,
    SDK_SCRIPT,
    finish,
    received,
    sent_count,
)

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(not AZURE_PYTHON.exists(),
                       reason=".venv-azure is missing: `make test` builds it from requirements-azure.txt"),
]

HTTPS_PORT = 443
"""The SDK's MQTT-over-WebSocket port, fixed in the SDK."""
SENDER = module("wsfilter")
RECEIVER = module("wssink")
SPEC = DeploymentSpec(
    routes={"ws": "FROM /messages/modules/wsfilter/outputs/out "
                  'INTO BrokeredEndpoint("/modules/wssink/inputs/in1")'},
    identities=[SENDER, RECEIVER],
    https_port=HTTPS_PORT,
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("azure-ws"), SPEC) as running:
        yield running


def start(deployment: Deployment, role: str, identity: Identity, *args: str) -> subprocess.Popen[str]:
    command = [
        str(AZURE_PYTHON), str(SDK_SCRIPT), role,
        "--connection-string", deployment.connection_string(identity),
        "--ca-file", str(deployment.ca_file), "--timeout", str(ROLE_TIMEOUT - 5), *args,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"AZURE_SDK_WEBSOCKETS": "1"})


def test_azure_sdk_modules_over_websocket_exchange_messages_through_a_route(deployment: Deployment) -> None:
    receiver = start(deployment, "receive", RECEIVER, "--count", "3")
    sender = start(deployment, "send", SENDER, "--count", "3", "--output", "out",
                   "--message-id-prefix", "ws-", "--label", "over-websocket")
    try:
        assert sent_count(finish(sender)) == 3  # send_message_to_output returns after the PUBACK
        messages = received(finish(receiver))
    finally:
        for process in (sender, receiver):
            if process.returncode is None:
                process.kill()
                process.communicate()
    assert [(m["message_id"], m["input"], m["properties"]["label"]) for m in messages] == [
        (f"ws-{n}", "in1", "over-websocket") for n in range(3)
    ]
    assert json.loads(messages[0]["body"]) == {"n": 0, "source": "azure-sdk"}
