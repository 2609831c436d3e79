"""The Node Azure IoT device SDK (azure-iot-device + azure-iot-device-amqp) as IoT Edge modules over
``AmqpWs``: telemetry out, an input routed from another module in, getTwin, a reported patch, a direct
method answered. The SDK dials ``wss://{GatewayHostName}:443/$iothub/websocket`` (``AmqpWs``) and
``amqps://{GatewayHostName}:5671`` (``Amqp``) only, so this module's hub binds 443 and 5671 (a taken
port fails, never skips); both transports run the same roles.

The Node packages come from tests/conformance/node/package.json (``make test`` installs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from edgehub.message import Identity
from tests.conformance.deployment import (
    EDGE_DEVICE,
    Deployment,
    DeploymentSpec,
    module,
    require_free_port,
    run_deployment,
)
from tests.conformance.test_http_head import request

NODE_DIR: Final = Path(__file__).parent / "node"
SCRIPT: Final = NODE_DIR / "iot_module.js"
NODE: Final = shutil.which("node")
BOUND: Final = 60.0

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(NODE is None, reason="node is not installed (scripts/system-deps.sh installs it)"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "azure-iot-device-amqp").exists(),
        reason="tests/conformance/node/node_modules is missing: `make test` runs npm ci there",
    ),
]

SENDER = module("amqpfilter")
SERVER = module("amqpsink")
CALLER = module("amqpcaller")
AMQP_PORT: Final = 5671
"""The SDK's ``Amqp`` transport dials 5671 only (``amqps://{GatewayHostName}:5671``)."""
SPEC = DeploymentSpec(
    routes={
        "amqp": "FROM /messages/modules/amqpfilter/outputs/out1 "
        'INTO BrokeredEndpoint("/modules/amqpsink/inputs/in1")'
    },
    identities=[SENDER, SERVER, CALLER],
    https_port=443,
    module_desired={"amqpsink": {"interval": 7}},
    env={"amqpSettings__enabled": "true", "amqpSettings__port": str(AMQP_PORT)},
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_free_port(AMQP_PORT)
    with run_deployment(tmp_path_factory.mktemp("amqp-node"), SPEC) as running:
        yield running


class NodeRole:
    """One ``node iot_module.js`` process whose JSON lines are collected as they come."""

    def __init__(
        self, deployment: Deployment, role: str, identity: Identity, transport: str, *args: str
    ) -> None:
        assert NODE is not None
        self.process = subprocess.Popen(
            [
                NODE,
                str(SCRIPT),
                role,
                deployment.connection_string(identity),
                str(deployment.ca_file),
                transport,
                *args,
            ],
            cwd=NODE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait_for(self, kind: str) -> dict[str, Any]:
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            found = [event for event in self.events if event["event"] == kind]
            if found:
                return found[0]
            if any(event["event"] == "error" for event in self.events) or self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.process.kill()
        raise AssertionError(f"no {kind!r} event; events {self.events}; stderr:\n{self._close()[-3000:]}")

    def finish(self) -> None:
        try:
            code = self.process.wait(timeout=BOUND)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        stderr = self._close()
        assert code == 0, f"exit {code}; events {self.events}; stderr:\n{stderr[-3000:]}"

    def _close(self) -> str:
        """Reap the process and close its pipes; its stderr."""
        self.process.wait(timeout=10)
        self._reader.join(5)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        stderr = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return stderr


def invoke_echo(deployment: Deployment, target: Identity, payload: dict[str, Any]) -> tuple[int, Any]:
    call = {"methodName": "echo", "payload": payload, "responseTimeoutInSeconds": 20}
    headers = {
        "Authorization": deployment.password(CALLER),
        "x-ms-edge-moduleId": CALLER.id,
        "Content-Type": "application/json",
    }
    status, _, body = request(
        deployment,
        "POST",
        f"/twins/{EDGE_DEVICE}/modules/{target.module_id}/methods",
        json.dumps(call).encode(),
        headers,
        port=443,
    )
    return status, json.loads(body)


@pytest.mark.parametrize("transport", ["AmqpWs", "Amqp"])
def test_node_sdk_modules_exchange_telemetry_twin_and_a_method_over_amqp(
    deployment: Deployment,
    transport: str,
) -> None:
    server = NodeRole(deployment, "serve", SERVER, transport, "3")
    twin = server.wait_for("twin")
    assert twin["desired"]["interval"] == 7
    server.wait_for("ready")
    sender = NodeRole(deployment, "send", SENDER, transport, "out1", "3")
    sender.wait_for("sent")
    sender.finish()
    status, answer = invoke_echo(deployment, SERVER, {"ping": 1})
    assert (status, answer) == (200, {"status": 200, "payload": {"echoed": {"ping": 1}}})
    server.wait_for("done")
    server.finish()
    inputs = [event for event in server.events if event["event"] == "input"]
    assert [(e["input"], json.loads(e["body"])["seq"], e["properties"]["seq"]) for e in inputs] == [
        ("in1", 0, "0"),
        ("in1", 1, "1"),
        ("in1", 2, "2"),
    ]
